"""Which settings the "best" preset should hold: every combination of per-channel weights,
optimized signs and activation clipping, at W8A8, W4A8 and W4A4, on real models.

    python benches/bench_defaults.py [--threads 2] [--write]
    python benches/bench_defaults.py --passes [--threads 2] [--write]
    python benches/bench_defaults.py --equalize [--threads 2] [--write]
    python benches/bench_defaults.py --act4 [--threads 2] [--write]
    python benches/bench_defaults.py --targets [--threads 2] [--write]

ResNet-20 (CIFAR-10; calibrated on the first 1000 test images, evaluated on the next 3000) and
MobileNetV2 (ImageNet; the 200 shared images: calibrated on the first 100, evaluated on the other
100), both from ../shared/data. For each setting: top-1, agreement with the float model's
predictions and the output SQNR against the float logits (steadier than top-1 on 100 images).
Below 8 bits only the settings worth comparing run (per-tensor signed runs max clipping only).
Then MSE against max weight clipping with the other settings at their best. With --write the
tables replace the "Default settings" section of benches/RESULTS.md.

`--passes` runs the ablation of the weight-rounding passes instead (bias correction, GPTQ
rounding, both; mixed precision with the first and last layers at 8 bits), on top of the best
preset's other settings, with the wall time of `quantize_network`; --write puts it in the
"Weight rounding passes" section. Then the wall time with every pass on: ResNet-20 on 1000
calibration images, MobileNetV2 on the 200 shared ones.

`--equalize` runs cross-layer equalization off and on (`quantize_network(equalize=...)`) with
per-tensor and per-channel weights at W8A8, W4A8 and W4A4 (the best preset's other settings:
GPTQ + bias correction below 8 weight bits), then automatic bit allocation (`weight_bits_budget=5`);
--write puts it in the "Cross-layer equalization" section.

`--act4` runs input-aware rounding (`quantize_network(input_aware=...)`) off and on, with its
ablation (without bias correction, without GPTQ), at W4A4 and W4A8, the default preset at
W8A8, and the wall time of the default W4A4 call (ResNet-20 on 1000 calibration images,
MobileNetV2 on the 200 shared ones); --write puts it in the "4-bit activations" section.

`--targets` measures the one-liner's defaults against issue 24's targets on the split its
figures use: ResNet-20 calibrated on the first 1000 test images and evaluated on the other
9000 (as `bench_ptq.py`), MobileNetV2 as above; --write puts it in the "Accuracy targets"
section."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

import oxiquant

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fp32 import cpu_features, cpu_model, run_stamp, write_section

# ../shared/data from the project's root, or where OXIQUANT_DATA points (a git worktree elsewhere).
DATA = Path(os.environ.get("OXIQUANT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BEGIN, END = "<!-- defaults:begin -->", "<!-- defaults:end -->"
PASSES_BEGIN, PASSES_END = "<!-- rounding:begin -->", "<!-- rounding:end -->"
EQ_BEGIN, EQ_END = "<!-- equalize:begin -->", "<!-- equalize:end -->"
WALL_BEGIN, WALL_END = "<!-- walltime:begin -->", "<!-- walltime:end -->"
TARGETS_BEGIN, TARGETS_END = "<!-- targets:begin -->", "<!-- targets:end -->"
SEVEN_BEGIN, SEVEN_END = "<!-- sevenbit:begin -->", "<!-- sevenbit:end -->"
# (model, weights, activations, quantize_network options, target top-1 %) of --targets.
# onnxruntime's row for the same widths (per-channel unless the options say per-tensor) is
# the best top-1 of its MinMax, Percentile and Entropy calibrations.
TARGETS = (
    ("ResNet-20", 8, 8, {}, 91.7),
    ("ResNet-20", 4, 8, {}, 91.3),
    ("ResNet-20", 4, 4, {}, 87.0),
    ("MobileNetV2", 8, 8, {}, 83.0),
    ("MobileNetV2", 8, 8, {"per_channel": False}, 82.5),
    ("MobileNetV2", 4, 8, {}, 75.0),
    ("MobileNetV2", 4, 4, {}, 50.0),
    ("MobileNetV2", 4, 4, {"activation_bits_budget": 4.5, "first_last_bits": 8}, None),
    ("MobileNetV2", 4, 8, {"weight_bits_budget": 5.0}, 82.0),
)
ACT4_BEGIN, ACT4_END = "<!-- act4:begin -->", "<!-- act4:end -->"
# (weights, activations, label, quantize_network options) of the --act4 table.
ACT4 = (
    (4, 4, "GPTQ + bias correction (input-aware off)", {"input_aware": False}),
    (4, 4, "input-aware, GPTQ + bias correction (default)", {}),
    (4, 4, "input-aware, GPTQ, no bias correction", {"bias_correction": False}),
    (4, 4, "input-aware, nearest + bias correction", {"gptq": False}),
    (4, 4, "default, first and last layers at 8 bits (weights and the activations they read)", {"first_last_bits": 8}),
    (4, 4, "default, activations allocated by sensitivity to 4.5 bits on average, first and last layers at 8 bits",
     {"activation_bits_budget": 4.5, "first_last_bits": 8}),
    (4, 4, "default, activations allocated by sensitivity to 5 bits on average",
     {"activation_bits_budget": 5}),
    (4, 5, "default", {}),
    (4, 6, "default", {}),
    (4, 8, "GPTQ + bias correction (default)", {}),
    (4, 8, "input-aware, GPTQ + bias correction", {"input_aware": True}),
    (8, 8, "default", {}),
)  # fmt: skip
# (label, quantize_network options) of the ablation; the preset fills in the rest.
ABLATION = (
    ("rounding to nearest", {"gptq": False, "bias_correction": False}),
    ("bias correction", {"gptq": False, "bias_correction": True}),
    ("GPTQ", {"gptq": True, "bias_correction": False}),
    ("GPTQ + bias correction", {"gptq": True, "bias_correction": True}),
)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CLIPPINGS = ("max", "mse", "kl", "percentile", "sigma4")


def prep(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((images.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2))


def nets():
    c = np.load(DATA / "cifar10_test.npz")
    cx, cy = prep(c["images"][:4000]), c["labels"][:4000]
    i = np.load(DATA / "imagenet_cal200.npz")
    ix, iy = prep(i["images"]), i["labels"]
    return {
        "ResNet-20": (oxiquant.load(DATA / "akamaster_resnet20_cifar10.onnx"), cx[:1000], cx[1000:], cy[1000:]),
        "MobileNetV2": (oxiquant.load(DATA / "mobilenet_v2_imagenet.onnx"), ix[:100], ix[100:], iy[100:]),
    }


def logits(m: oxiquant.Model, x: np.ndarray, batch: int = 50) -> np.ndarray:
    return np.concatenate([m.run(x[k : k + batch])[m.output_names[0]] for k in range(0, len(x), batch)])


def row(name, label, q, ev, ey, fo) -> str:
    o = logits(q, ev)
    sqnr = 10 * np.log10(float((fo.astype(np.float64) ** 2).sum()) / float(((o - fo).astype(np.float64) ** 2).sum()))
    top1, agree = (o.argmax(1) == ey).mean() * 100, (o.argmax(1) == fo.argmax(1)).mean() * 100
    line = f"| {name} | {label} | {top1:.2f} | {agree:.2f} | {sqnr:.2f} |"
    print(line, flush=True)
    return line


def activation_widths(q: oxiquant.Model) -> str:
    """"4" for uniform 4-bit activations; "4-8, 4.50 on average" (over the activation
    elements) for mixed widths."""
    acts = [a for a in q.quant_info["activations"] if a["bits"]]
    widths = sorted({a["bits"] for a in acts})
    if len(widths) == 1:
        return str(widths[0])
    mean = sum(a["bits"] * a["stats"]["count"] for a in acts) / sum(a["stats"]["count"] for a in acts)
    return f"{widths[0]}-{widths[-1]}, {mean:.2f} on average"


def weight_bits_average(q: oxiquant.Model) -> float:
    """Mean weight width over the affine layers."""
    return float(np.mean([w["weight_bits"] for w in q.quant_info["weights"]]))


def passes(args: argparse.Namespace) -> list[str]:
    import time

    head = "| model | weights, activations | passes | top-1 % | agreement with float % | output SQNR dB | time s |"
    out = [
        f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}.  ",
        f"Command: `python benches/bench_defaults.py --passes --threads {args.threads}`. Best preset otherwise "
        "(per-channel, unsigned where provable, MSE activation clipping); layer statistics on the first 256 "
        "calibration samples. Time: the whole `quantize_network` call (other jobs shared the machine).",
        "",
        head,
        "|---|---|---|---:|---:|---:|---:|",
    ]

    def add(name, label, passes_label, q, dt, ev, ey, fo):
        line = row(name, f"{label} | {passes_label}", q, ev, ey, fo)
        out.append(f"{line} {dt:.1f} |")

    for name, (fm, cal, ev, ey) in nets().items():
        fo = logits(fm, ev)
        out.append(f"| {name} | float | | {(fo.argmax(1) == ey).mean() * 100:.2f} | 100.00 | | |")
        for wb, ab in ((4, 8), (4, 4)):
            for label, kw in ABLATION:
                t = time.perf_counter()
                q = oxiquant.quantize_network(fm, ab, cal, weight_bits=wb, progress=False, **kw)
                add(name, f"W{wb}A{ab}", label, q, time.perf_counter() - t, ev, ey, fo)
        t = time.perf_counter()
        q = oxiquant.quantize_network(fm, 8, cal, weight_bits=4, first_last_bits=8, progress=False)
        dt = time.perf_counter() - t
        add(name, "W4A8, first and last W8", "GPTQ + bias correction", q, dt, ev, ey, fo)
        out[-1] = out[-1].replace("first and last W8", f"first and last W8 (layer mean {weight_bits_average(q):.2f})")
    out += ["", "Wall time of `quantize_network` with every pass on (W4A4, GPTQ + bias correction):", ""]
    c = np.load(DATA / "cifar10_test.npz")
    i = np.load(DATA / "imagenet_cal200.npz")
    for name, path, cal in (
        ("ResNet-20, 1000 images", "akamaster_resnet20_cifar10.onnx", prep(c["images"][:1000])),
        ("MobileNetV2, 200 images", "mobilenet_v2_imagenet.onnx", prep(i["images"])),
    ):
        fm = oxiquant.load(DATA / path)
        t = time.perf_counter()
        oxiquant.quantize_network(fm, 4, cal, gptq=True, bias_correction=True, progress=False)
        out.append(f"- {name}: {time.perf_counter() - t:.1f} s (load average {os.getloadavg()[0]:.1f})")
        print(out[-1], flush=True)
    return out


def equalization(args: argparse.Namespace) -> list[str]:
    import time

    out = [
        f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}.  ",
        f"Command: `python benches/bench_defaults.py --equalize --threads {args.threads}`. Best preset otherwise "
        "(unsigned where provable, MSE activation clipping, GPTQ + bias correction below 8 weight bits). "
        "Time: the whole `quantize_network` call (other jobs shared the machine).",
        "",
        "| model | weights, activations | equalization | top-1 % | agreement with float % | output SQNR dB | time s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, (fm, cal, ev, ey) in nets().items():
        fo = logits(fm, ev)
        out.append(f"| {name} | float | | {(fo.argmax(1) == ey).mean() * 100:.2f} | 100.00 | | |")
        for wb, ab, pc in ((8, 8, False), (4, 8, False), (4, 8, True), (4, 4, False), (4, 4, True)):
            for eq in (False, True):
                t = time.perf_counter()
                q = oxiquant.quantize_network(fm, ab, cal, weight_bits=wb, per_channel=pc, equalize=eq, progress=False)
                dt = time.perf_counter() - t
                label = f"W{wb}A{ab}, {'per-channel' if pc else 'per-tensor'} | {'on' if eq else 'off'}"
                out.append(f"{row(name, label, q, ev, ey, fo)} {dt:.1f} |")
        # Automatic bit allocation: 4 to 8 bits per layer, 5 bits on average over the weights.
        t = time.perf_counter()
        q = oxiquant.quantize_network(fm, 8, cal, weight_bits_budget=5.0, progress=False)
        dt = time.perf_counter() - t
        alloc = q.quant_info["bit_allocation"]
        mean = sum(v["weights"] * v["bits"] for v in alloc.values()) / sum(v["weights"] for v in alloc.values())
        label = f"W4-8A8 by sensitivity, budget 5.0 (weight mean {mean:.2f}), per-channel | off"
        out.append(f"{row(name, label, q, ev, ey, fo)} {dt:.1f} |")
    return out


def wall_time(args: argparse.Namespace) -> list[str]:
    """The whole `quantize_network` call, one run each, with the passes the issue's targets name
    (ResNet-20 on 1000 images, MobileNetV2 on the 200 shared ones)."""
    import time

    out = [
        f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}.  ",
        f"Command: `python benches/bench_defaults.py --wall-time --threads {args.threads}` (run alone on the "
        "machine). Seconds for the whole `quantize_network` call, default preset otherwise.",
        "",
        "| model, calibration | W8A8 | W4A4, GPTQ + bias correction | W4A4, GPTQ + bias correction + CLE "
        "| W4-8A8, 5.0-bit budget |",
        "|---|---:|---:|---:|---:|",
    ]
    c = np.load(DATA / "cifar10_test.npz")
    i = np.load(DATA / "imagenet_cal200.npz")
    settings = (
        (8, {}),
        (4, {"gptq": True, "bias_correction": True}),
        (4, {"gptq": True, "bias_correction": True, "equalize": True}),
        (8, {"weight_bits_budget": 5.0}),
    )
    for name, path, cal in (
        ("ResNet-20, 1000 images", "akamaster_resnet20_cifar10.onnx", prep(c["images"][:1000])),
        ("MobileNetV2, 200 images", "mobilenet_v2_imagenet.onnx", prep(i["images"])),
    ):
        fm = oxiquant.load(DATA / path)
        cells = []
        for bits, kw in settings:
            t = time.perf_counter()
            oxiquant.quantize_network(fm, bits, cal, progress=False, **kw)
            cells.append(f"{time.perf_counter() - t:.1f}")
            print(name, bits, kw, cells[-1], flush=True)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def act4(args: argparse.Namespace) -> list[str]:
    """Input-aware rounding off and on, and the default W4A4 call's wall time."""
    import time

    out = [
        f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}.  ",
        f"Command: `python benches/bench_defaults.py --act4 --threads {args.threads}`. Best preset otherwise "
        "(per-channel, unsigned where provable, MSE activation clipping; input-aware rounding is on by default "
        "below 8 activation and weight bits); layer statistics on the first 256 calibration samples (input-aware: "
        "about 128 rows per weight of each layer). Time: the whole `quantize_network` call (other jobs shared the "
        "machine: times are upper bounds; the 1-minute load average is given with the wall times).",
        "",
        "| model | weights, activations | rounding | top-1 % | agreement with float % | output SQNR dB | time s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, (fm, cal, ev, ey) in nets().items():
        fo = logits(fm, ev)
        out.append(f"| {name} | float | | {(fo.argmax(1) == ey).mean() * 100:.2f} | 100.00 | | |")
        for wb, ab, label, kw in ACT4:
            t = time.perf_counter()
            q = oxiquant.quantize_network(fm, ab, cal, weight_bits=wb, progress=False, **kw)
            dt = time.perf_counter() - t
            out.append(f"{row(name, f'W{wb}A{activation_widths(q)} | {label}', q, ev, ey, fo)} {dt:.1f} |")
    out += ["", "Wall time of the default W4A4 `quantize_network` call (GPTQ, bias correction, input-aware):", ""]
    c = np.load(DATA / "cifar10_test.npz")
    i = np.load(DATA / "imagenet_cal200.npz")
    for name, path, cal in (
        ("ResNet-20, 1000 images", "akamaster_resnet20_cifar10.onnx", prep(c["images"][:1000])),
        ("MobileNetV2, 200 images", "mobilenet_v2_imagenet.onnx", prep(i["images"])),
    ):
        fm = oxiquant.load(DATA / path)
        t = time.perf_counter()
        oxiquant.quantize_network(fm, 4, cal, progress=False)
        out.append(f"- {name}: {time.perf_counter() - t:.1f} s (load average {os.getloadavg()[0]:.1f})")
        print(out[-1], flush=True)
    return out


def seven_bit(args: argparse.Namespace) -> list[str]:
    """8-bit against 7-bit weights (onnxruntime's `reduce_range`): top-1 and the integer
    engine's images/s at batch 32, the configurations alternating in one process."""
    from bench_fp32 import timed_rounds

    out = [
        f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}; "
        f"oxiquant's integer kernels: {oxiquant.integer_kernel()}.  ",
        f"Command: `python benches/bench_defaults.py --seven-bit --threads {args.threads}`. Defaults otherwise "
        "(GPTQ and bias correction are on below 8 weight bits); images/s of the integer engine at batch 32, "
        f"{args.threads} threads, median over alternating blocks of the rows of one model.",
        "",
        "| model | weights | top-1 % | agreement with float % | output SQNR dB | int8 images/s, batch 32 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    configs = (
        ("8 bits", {}),
        ("8 bits, GPTQ and bias correction", {"gptq": True, "bias_correction": True}),
        ("7 bits", {"weight_bits": 7}),
    )
    for name, (fm, cal, ev, ey) in nets().items():
        fo = logits(fm, ev)
        out.append(f"| {name} | float | {(fo.argmax(1) == ey).mean() * 100:.2f} | 100.00 | | |")
        qs = {label: oxiquant.quantize_network(fm, 8, cal, progress=False, **kw) for label, kw in configs}
        x = ev[:32]
        speed = timed_rounds({k: (lambda q=q, x=x: q.run(x)) for k, q in qs.items()}, 2.0)
        for label, q in qs.items():
            out.append(f"{row(name, label, q, ev, ey, fo)} {32 / speed[label]:.1f} |")
    return out


def ort_best(path: Path, cal: np.ndarray, ev: np.ndarray, ey: np.ndarray, wb: int, ab: int, per_channel: bool, cache):
    """onnxruntime's `quantize_static` (QDQ, signed weights; activations unsigned, and at 8
    bits signed too: its u8 x s8 kernels can saturate on CPUs without VNNI) with MinMax,
    Percentile and Entropy: the best top-1 and its configuration."""
    import tempfile

    import bench_ptq as bp

    key = (str(path), wb, ab, per_channel)
    if key in cache:
        return cache[key]
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        bp.ort_preprocess(path, pre)
        input_name = oxiquant.load(pre).input_names[0]
        acts = ("QUInt8", "QInt8") if ab == 8 else ("QUInt4",)
        for method, act in itertools.product(("MinMax", "Percentile", "Entropy"), acts):
            dst = Path(tmp) / f"{method}_{act}.onnx"
            options = {
                "per_channel": per_channel,
                "reduce_range": False,
                "weight_type": "QInt8" if wb == 8 else "QInt4",
                "activation_type": act,
                "calibrate_method": method,
            }
            bp.ort_quantize(str(pre), str(dst), cal, input_name, options, warnings=[])
            sess = bp.ort_session(str(dst), 2)
            o = np.concatenate([sess.run(None, {input_name: ev[i : i + 50]})[0] for i in range(0, len(ev), 50)])
            top1 = (o.argmax(1) == ey).mean() * 100
            if best is None or top1 > best[0]:
                best = (top1, f"{method}, {'U' if act.startswith('QU') else 'S'}{ab} activations")
    cache[key] = best
    return best


def targets(args: argparse.Namespace) -> list[str]:
    """The default preset against issue 24's targets, with the time of each call, beside
    onnxruntime's best calibration at the same widths."""
    import time

    c = np.load(DATA / "cifar10_test.npz")
    cx, cy = prep(c["images"]), c["labels"]
    models = {
        "ResNet-20": (oxiquant.load(DATA / "akamaster_resnet20_cifar10.onnx"), cx[:1000], cx[1000:], cy[1000:]),
        "MobileNetV2": nets()["MobileNetV2"],
    }
    paths = {"ResNet-20": DATA / "akamaster_resnet20_cifar10.onnx", "MobileNetV2": DATA / "mobilenet_v2_imagenet.onnx"}
    cache: dict = {}
    out = [
        f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}.  ",
        f"Command: `python benches/bench_defaults.py --targets --threads {args.threads}`. ResNet-20: calibrated "
        "on CIFAR-10 test images 0-999, evaluated on the other 9000; MobileNetV2: the 200 shared images, "
        "calibrated on the first 100, evaluated on the other 100. `quantize_network(model, bits, calib, "
        "weight_bits=..., **options)`, the default preset otherwise. Time: the whole call. onnxruntime: "
        "`quantize_static` (QDQ, signed weights, per-channel unless the row is per-tensor, after "
        "`quant_pre_process`) on the same images, the best top-1 of MinMax, Percentile and Entropy with "
        "unsigned activations, and at 8 bits signed ones too (configuration in brackets).",
        "",
        "| model | weights, activations | options | top-1 % | target | met | agreement with float % "
        "| output SQNR dB | time s | onnxruntime's best top-1 % |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    fos = {}
    for name, wb, ab, kw, want in TARGETS:
        fm, cal, ev, ey = models[name]
        if name not in fos:
            fos[name] = logits(fm, ev)
            out.append(f"| {name} | float | | {(fos[name].argmax(1) == ey).mean() * 100:.2f} | | | 100.00 | | | |")
        t = time.perf_counter()
        q = oxiquant.quantize_network(fm, ab, cal, weight_bits=wb, batch_size=50, progress=False, **kw)
        dt = time.perf_counter() - t
        o = logits(q, ev)
        top1 = (o.argmax(1) == ey).mean() * 100
        agree = (o.argmax(1) == fos[name].argmax(1)).mean() * 100
        fo = fos[name].astype(np.float64)
        sqnr = 10 * np.log10(float((fo**2).sum()) / float(((o - fo) ** 2).sum()))
        options = ", ".join(f"{k}={v}" for k, v in kw.items()) or "defaults"
        alloc = q.quant_info["bit_allocation"]
        weights = str(wb)
        if alloc:
            count = sum(v["weights"] for v in alloc.values())
            mean = sum(v["weights"] * v["bits"] for v in alloc.values()) / count
            widths = sorted({v["bits"] for v in alloc.values()})
            weights = f"{widths[0]}-{widths[-1]}, {mean:.2f} on average,"
        # A mixed-precision row has no target of its own: it reads against the row above.
        target, met = ("-", "-") if want is None else (f"{want:g}", "yes" if top1 >= want else "no")
        peer = "-"
        if not set(kw) - {"per_channel"}:
            ort_top1, method = ort_best(paths[name], cal, ev, ey, wb, ab, kw.get("per_channel", True), cache)
            peer = f"{ort_top1:.2f} ({method})"
        out.append(
            f"| {name} | W{weights} A{activation_widths(q)} | {options} | {top1:.2f} | {target} | {met} | "
            f"{agree:.2f} | {sqnr:.2f} | {dt:.1f} | {peer} |"
        )
        print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md")
    ap.add_argument("--passes", action="store_true", help="the weight-rounding passes' ablation instead")
    ap.add_argument("--equalize", action="store_true", help="cross-layer equalization off and on instead")
    ap.add_argument("--wall-time", action="store_true", help="quantization wall time with every pass instead")
    ap.add_argument("--act4", action="store_true", help="input-aware rounding off and on instead")
    ap.add_argument("--targets", action="store_true", help="the defaults against issue 24's targets instead")
    ap.add_argument("--seven-bit", action="store_true", help="8-bit against 7-bit weights, accuracy and speed")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    oxiquant.set_num_threads(args.threads)
    if args.seven_bit:
        table = seven_bit(args)
        if args.write:
            write_section(SEVEN_BEGIN, SEVEN_END, "7-bit weights (`benches/bench_defaults.py --seven-bit`)", table)
        else:
            print("\n".join(table))
        return
    if args.targets:
        table = targets(args)
        if args.write:
            write_section(TARGETS_BEGIN, TARGETS_END, "Accuracy targets (`benches/bench_defaults.py --targets`)", table)
        return
    if args.act4:
        table = act4(args)
        if args.write:
            write_section(ACT4_BEGIN, ACT4_END, "4-bit activations (`benches/bench_defaults.py --act4`)", table)
        return
    if args.wall_time:
        table = wall_time(args)
        if args.write:
            heading = "Quantization wall time (`benches/bench_defaults.py --wall-time`)"
            write_section(WALL_BEGIN, WALL_END, heading, table)
        return
    if args.equalize:
        table = equalization(args)
        if args.write:
            write_section(EQ_BEGIN, EQ_END, "Cross-layer equalization (`benches/bench_defaults.py --equalize`)", table)
        return
    if args.passes:
        table = passes(args)
        if args.write:
            heading = "Weight rounding passes (`benches/bench_defaults.py --passes`)"
            write_section(PASSES_BEGIN, PASSES_END, heading, table)
        return
    head = "| model | setting | top-1 % | agreement with float % | output SQNR dB |"
    table = [
        f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}.  ",
        f"Command: `python benches/bench_defaults.py --threads {args.threads}`.",
        "",
        head,
        "|---|---|---:|---:|---:|",
    ]
    wclip = ["", head, "|---|---|---:|---:|---:|"]
    for name, (fm, cal, ev, ey) in nets().items():
        fo = logits(fm, ev)
        table.append(f"| {name} | float | {(fo.argmax(1) == ey).mean() * 100:.2f} | 100.00 | |")
        for wb, ab in ((8, 8), (4, 8), (4, 4)):
            for pc, signs, clip in itertools.product((False, True), (False, True), CLIPPINGS):
                if (wb, ab) != (8, 8) and not pc and not signs and clip != "max":
                    continue
                q = oxiquant.quantize_network(
                    fm, ab, cal, weight_bits=wb, clipping=clip, per_channel=pc, optimize_signs=signs, progress=False
                )
                weights, sign = ("per-channel" if pc else "per-tensor"), ("unsigned" if signs else "signed")
                label = f"W{wb}A{ab}, {weights}, {sign}, {clip}"
                table.append(row(name, label, q, ev, ey, fo))
            for wc in ("max", "mse"):
                q = oxiquant.quantize_network(
                    fm, ab, cal, weight_bits=wb, clipping="mse", weight_clipping=wc, progress=False
                )
                wclip.append(row(name, f"W{wb}A{ab}, best preset, weight clipping {wc}", q, ev, ey, fo))
    out = [*table, *wclip]
    if args.write:
        write_section(BEGIN, END, "Default settings", out)


if __name__ == "__main__":
    main()
