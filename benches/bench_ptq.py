"""PTQ accuracy and speed: oxiquant vs onnxruntime quantize_static (and Eclipse Aidge), one run.

    python benches/bench_ptq.py [--full | --quick] [--threads 2] [--write] [--json PATH]
                                [--aidge-python PATH | --no-aidge] [--speed-rounds N]

ResNet-20 (akamaster, CIFAR-10) from ../shared/data: the first 1000 test images calibrate,
the other 9000 evaluate (--quick: the first 1000 of those, and fewer configurations). Every
configuration reports top-1, the loss against the fp32 model on the same images and the wall
time of the whole quantization call (calibration included). A separate section times matched
calibration methods of the two tools in alternating rounds and reports the ratio.

Aidge runs in its own interpreter, so that installing it never touches this venv: give it with --aidge-python
(or OXIQUANT_AIDGE_PYTHON), e.g. a venv made with
`python -m venv /tmp/aidge_venv && /tmp/aidge_venv/bin/pip install aidge-core aidge-backend-cpu
aidge-onnx aidge-quantization`; without one (or when it fails) Aidge is skipped with the reason.

A full run takes about an hour on 2 cores, half of it Aidge's (slow) evaluation: --no-aidge
skips it. With --write the tables replace the PTQ section of benches/RESULTS.md (full run only); the
raw results always go to --json (default benches/results_ptq.json)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODEL_FILE = "akamaster_resnet20_cifar10.onnx"
IMAGES_FILE = "cifar10_test.npz"
RESULTS = Path(__file__).with_name("RESULTS.md")
DEFAULT_JSON = Path(__file__).with_name("results_ptq.json")
BEGIN, END = "<!-- ptq:begin -->", "<!-- ptq:end -->"
FP32_END = "<!-- fp32:end -->"

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
N_CALIB = 1000
QUICK_EVAL = 1000
EVAL_BATCH = 250  # oxiquant and onnxruntime evaluation batch
# Calibration batch of both oxiquant and onnxruntime. It must divide N_CALIB: onnxruntime's
# histogram calibrators (Entropy, Percentile) stack the outputs of all batches and fail on a
# shorter last batch ("inhomogeneous shape").
CALIB_BATCH = 50
AIDGE_BATCH = 100  # Aidge calibration and evaluation batch (its graph keeps the calibration batch size)
BITS = (2, 3, 4, 6, 8)


# -- data ----------------------------------------------------------------------------------
def load_data(n_eval: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (calibration images, evaluation images, evaluation labels), preprocessed NCHW float32."""
    d = np.load(DATA / IMAGES_FILE)
    images, labels = d["images"], d["labels"].astype(np.int64)
    stop = len(images) if n_eval is None else N_CALIB + n_eval
    x = (images[:stop].astype(np.float32) / 255.0 - MEAN) / STD
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    return x[:N_CALIB], x[N_CALIB:], labels[N_CALIB:stop]


def top1(logits: np.ndarray, labels: np.ndarray) -> int:
    return int((np.asarray(logits).argmax(axis=1) == labels).sum())


# -- configurations --------------------------------------------------------------------------
def ox_config(a_bits, clipping, per_channel, optimize_signs, *, w_bits=None, weight_clipping="max", group=""):
    w_bits = a_bits if w_bits is None else w_bits
    parts = ["per-channel" if per_channel else "per-tensor", "signs optimized" if optimize_signs else "signed"]
    parts.append(f"act clip {clipping}")
    if weight_clipping != "max":
        parts.append(f"weight clip {weight_clipping}")
    return {
        "engine": "oxiquant",
        "group": group,
        "label": ", ".join(parts),
        "w_bits": w_bits,
        "a_bits": a_bits,
        "options": {
            "nb_bits": a_bits,
            "weight_bits": w_bits,
            "clipping": clipping,
            "per_channel": per_channel,
            "optimize_signs": optimize_signs,
            "weight_clipping": weight_clipping,
        },
    }


def oxiquant_configs(quick: bool) -> list[dict]:
    best, default = "best settings", "Aidge default (per-tensor, signed, max)"
    if quick:
        cfgs = [
            ox_config(8, "max", True, True, group=best),
            ox_config(8, "max", False, False, group=default),
            ox_config(4, "mse", True, True, group=best),
            ox_config(4, "kl", True, True, group=best),
            ox_config(4, "max", False, False, group=default),
            ox_config(4, "mse", True, True, weight_clipping="mse", group="ablation at 4 bits"),
            ox_config(8, "max", True, True, w_bits=4, group="mixed W/A"),
        ]
    else:
        cfgs = []
        for b in reversed(BITS):
            for c in ("max", "mse", "kl", "sigma3"):
                cfgs.append(ox_config(b, c, True, True, group=best))
        for b in reversed(BITS):
            cfgs.append(ox_config(b, "max", False, False, group=default))
        for pc in (True, False):
            for signs in (True, False):
                for wc in ("max", "mse"):
                    cfgs.append(ox_config(4, "mse", pc, signs, weight_clipping=wc, group="ablation at 4 bits"))
        for c in ("sigma4", "sigma5"):
            cfgs.append(ox_config(4, c, True, True, group="ablation at 4 bits"))
        cfgs += [
            ox_config(8, "max", True, True, w_bits=4, group="mixed W/A"),
            ox_config(8, "mse", True, True, w_bits=4, group="mixed W/A"),
            ox_config(4, "mse", True, True, w_bits=8, group="mixed W/A"),
            ox_config(4, "kl", True, True, w_bits=8, group="mixed W/A"),
        ]
    seen, out = set(), []
    for c in cfgs:  # the ablation repeats a "best settings" point: keep the first
        key = tuple(sorted(c["options"].items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


ORT_TYPE_BITS = {"QInt8": 8, "QUInt8": 8, "QInt4": 4, "QUInt4": 4}
ORT_TYPE_SHORT = {"QInt8": "S8", "QUInt8": "U8", "QInt4": "S4", "QUInt4": "U4"}


def ort_config(w_type, a_type, method, per_channel, reduce_range=False, group=""):
    parts = [
        f"QDQ, act {ORT_TYPE_SHORT[a_type]} / weights {ORT_TYPE_SHORT[w_type]}",
        method,
        "per-channel" if per_channel else "per-tensor",
    ]
    if reduce_range:
        parts.append("reduce_range")
    return {
        "engine": "onnxruntime",
        "group": group,
        "label": ", ".join(parts),
        "w_bits": ORT_TYPE_BITS[w_type],
        "a_bits": ORT_TYPE_BITS[a_type],
        "options": {
            "weight_type": w_type,
            "activation_type": a_type,
            "calibrate_method": method,
            "per_channel": per_channel,
            "reduce_range": reduce_range,
        },
    }


def ort_configs(quick: bool, quant_types: set[str]) -> tuple[list[dict], list[str]]:
    """The onnxruntime grid, and the reasons for the parts this version cannot run."""
    methods = ("MinMax", "Entropy", "Percentile")
    if quick:
        cfgs = [
            ort_config("QInt8", "QInt8", "MinMax", True, group="8 bits"),
            ort_config("QInt8", "QUInt8", "MinMax", True, group="8 bits"),
            ort_config("QInt8", "QInt8", "Entropy", True, group="8 bits"),
            ort_config("QInt4", "QUInt8", "MinMax", True, group="4-bit weights"),
            ort_config("QInt4", "QUInt4", "MinMax", True, group="4 bits"),
        ]
    else:
        cfgs = [
            ort_config("QInt8", a, m, pc, group="8 bits")
            for a in ("QInt8", "QUInt8")
            for pc in (True, False)
            for m in methods
        ]
        cfgs.append(ort_config("QInt8", "QUInt8", "MinMax", True, reduce_range=True, group="8 bits"))
        cfgs += [ort_config("QInt4", "QUInt8", m, True, group="4-bit weights") for m in methods]
        cfgs += [ort_config("QInt4", "QUInt4", m, True, group="4 bits") for m in methods]
        cfgs.append(ort_config("QInt4", "QUInt4", "MinMax", False, group="4 bits"))
        cfgs.append(ort_config("QInt4", "QInt4", "MinMax", True, group="4 bits"))
    skipped = sorted(
        {t for c in cfgs for t in (c["options"]["weight_type"], c["options"]["activation_type"])} - quant_types
    )
    reasons = [f"onnxruntime has no QuantType.{t}: its configurations are skipped" for t in skipped]
    cfgs = [c for c in cfgs if {c["options"]["weight_type"], c["options"]["activation_type"]} <= quant_types]
    return cfgs, reasons


def aidge_config(bits, clipping, channel_wise, optimize_signs, group):
    return {
        "engine": "aidge",
        "group": group,
        "label": ", ".join(
            [
                "per-channel" if channel_wise else "per-tensor",
                "signs optimized" if optimize_signs else "signed",
                f"act clip {clipping.lower()}",
                "fake-quantized",
            ]
        ),
        "w_bits": bits,
        "a_bits": bits,
        "options": {"bits": bits, "clipping": clipping, "channel_wise": channel_wise, "optimize_signs": optimize_signs},
    }


def aidge_configs(quick: bool) -> list[dict]:
    default, best = "Aidge default (per-tensor, signed, max)", "best settings"
    if quick:
        return [aidge_config(4, "MAX", False, False, default)]
    # Aidge evaluates at about 30 s per 1000 images on one core: three points keep the full
    # run under half an hour (its 8-bit default, its 4-bit default, its best 4-bit settings).
    cfgs = [aidge_config(b, "MAX", False, False, default) for b in (8, 4)]
    cfgs += [aidge_config(4, "MSE", True, True, best)]
    return cfgs


# Matched calibration methods for the speed section: (oxiquant clipping, onnxruntime method).
SPEED_PAIRS_FULL = [("max", "MinMax"), ("kl", "Entropy"), ("mse", "Percentile"), ("sigma3", "Percentile")]
SPEED_PAIRS_QUICK = [("max", "MinMax"), ("kl", "Entropy")]


# -- oxiquant --------------------------------------------------------------------------------
def oxiquant_eval(qmodel, x: np.ndarray, labels: np.ndarray) -> int:
    correct = 0
    for i in range(0, len(x), EVAL_BATCH):
        out = qmodel.run(x[i : i + EVAL_BATCH])
        correct += top1(next(iter(out.values())), labels[i : i + EVAL_BATCH])
    return correct


def oxiquant_quantize(oxiquant, model, calib: np.ndarray, options: dict, cpu=None):
    """Returns (quantized model, wall seconds); appends the process CPU seconds to `cpu` if given."""
    c, t = time.process_time(), time.perf_counter()
    q = oxiquant.quantize_network(
        model,
        options["nb_bits"],
        calib,
        batch_size=CALIB_BATCH,
        progress=False,
        **{k: v for k, v in options.items() if k != "nb_bits"},
    )
    wall = time.perf_counter() - t
    if cpu is not None:
        cpu.append(time.process_time() - c)
    return q, wall


# -- onnxruntime -----------------------------------------------------------------------------
def make_reader(calib: np.ndarray, input_name: str, batch: int = CALIB_BATCH):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{input_name: calib[i : i + batch]} for i in range(0, len(calib), batch)])

        def get_next(self):
            return next(self._it, None)

    return Reader()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage().strip()
        if msg not in self.messages:
            self.messages.append(msg)


def ort_quantize(
    src: str, dst: str, calib: np.ndarray, input_name: str, options: dict, warnings=None, cpu=None
) -> float:
    """Wall time of one quantize_static call (calibration, model read and write included). The
    warnings it logs go to `warnings` (a list) instead of the console; the process CPU seconds
    are appended to `cpu` if given."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = make_reader(calib, input_name)
    root = logging.getLogger()
    saved, collect = root.handlers[:], _Collect()
    root.handlers = [collect]
    try:
        c, t = time.process_time(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(
                src,
                dst,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=options["per_channel"],
                reduce_range=options["reduce_range"],
                activation_type=getattr(QuantType, options["activation_type"]),
                weight_type=getattr(QuantType, options["weight_type"]),
                calibrate_method=getattr(CalibrationMethod, options["calibrate_method"]),
            )
        wall = time.perf_counter() - t
        if cpu is not None:
            cpu.append(time.process_time() - c)
        return wall
    finally:
        root.handlers = saved
        if warnings is not None:
            warnings.extend(collect.messages)


def ort_session(path_or_bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, opts, providers=["CPUExecutionProvider"])


def ort_eval(sess, x: np.ndarray, labels: np.ndarray) -> int:
    name = sess.get_inputs()[0].name
    correct = 0
    for i in range(0, len(x), EVAL_BATCH):
        correct += top1(sess.run(None, {name: x[i : i + EVAL_BATCH]})[0], labels[i : i + EVAL_BATCH])
    return correct


def ort_preprocess(src: Path, dst: Path) -> dict:
    """quant_pre_process once, outside the timings; records whether it changed the graph."""
    import importlib.util

    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    has_sympy = importlib.util.find_spec("sympy") is not None
    t = time.perf_counter()
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=not has_sympy)
    seconds = time.perf_counter() - t

    def ops(p: Path) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in onnx.load(str(p)).graph.node:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return counts

    return {"seconds": seconds, "symbolic_shape": has_sympy, "graph_changed": ops(src) != ops(dst)}


# -- Aidge (runs in its own interpreter) -----------------------------------------------------
def aidge_worker(spec_path: str) -> None:
    """Entry point of the Aidge subprocess: quantizes and evaluates each configuration of the
    spec, rewriting the result file after each one so that partial results survive."""
    spec = json.loads(Path(spec_path).read_text())
    import importlib.metadata

    import aidge_backend_cpu  # noqa: F401  (registers the CPU kernels; must come before the quantization module)
    import aidge_core
    import aidge_onnx
    import aidge_quantization as aq

    aidge_core.Log.set_console_level(aidge_core.Level.Error)
    versions = {
        p: importlib.metadata.version(p)
        for p in ("aidge_core", "aidge_backend_cpu", "aidge_onnx", "aidge_quantization")
    }
    calib, x, labels = load_data(spec["n_eval"])
    out = {"versions": versions, "rows": []}

    def tensor(a: np.ndarray):
        t = aidge_core.Tensor(np.ascontiguousarray(a))
        t.set_backend("cpu")
        return t

    b = AIDGE_BATCH
    for cfg in spec["configs"]:
        o = cfg["options"]
        row = dict(cfg)
        try:
            model = aidge_onnx.load_onnx(spec["model"])
            model.set_backend("cpu")
            calib_set = [tensor(calib[i : i + b]) for i in range(0, len(calib), b)]
            dt = getattr(aidge_core.dtype, f"int{o['bits']}")
            aq.auto_assign_node_precision(model, dt, dt, aidge_core.dtype.int32)
            c, t = time.process_time(), time.perf_counter()
            aq.quantize_network(
                model,
                calib_set,
                clipping_mode=getattr(aq.Clipping, o["clipping"]),
                rescale_inputs=True,  # the input is not in [-1, 1]: without this W8A8 falls to chance
                channel_wise=o["channel_wise"],
                optimize_signs=o["optimize_signs"],
                fake_quantize=True,  # the integer path has no int4 Pad kernel in aidge_backend_cpu
                dequantize=True,
            )
            row["quant_seconds"] = time.perf_counter() - t
            row["quant_cpu_seconds"] = time.process_time() - c
            model.forward_dims([[b, *x.shape[1:]]], True)
            sched = aidge_core.SequentialScheduler(model)
            sched.generate_scheduling()
            out_node = model.get_ordered_outputs()[0][0]
            t = time.perf_counter()
            correct = 0
            for i in range(0, len(x), b):
                xb = x[i : i + b]
                n = len(xb)
                if n < b:  # the graph keeps its batch size: pad the last batch
                    xb = np.concatenate([xb, np.zeros((b - n, *xb.shape[1:]), xb.dtype)])
                sched.forward(True, [tensor(xb)])
                logits = np.array(out_node.get_operator().get_output(0))[:n]
                correct += top1(logits, labels[i : i + n])
            row["eval_seconds"] = time.perf_counter() - t
            row["correct"], row["n_eval"] = correct, len(x)
            print(
                f"{cfg['label']} W{cfg['w_bits']}A{cfg['a_bits']}: top-1 {100 * correct / len(x):.2f} %, "
                f"quantization {row['quant_seconds']:.1f} s",
                flush=True,
            )
        except Exception as e:  # one failing configuration must not lose the others
            row["error"] = f"{type(e).__name__}: {e}".strip()[:500]
            print(f"{cfg['label']} W{cfg['w_bits']}A{cfg['a_bits']}: FAILED {row['error']}", flush=True)
        out["rows"].append(row)
        Path(spec["result"]).write_text(json.dumps(out))


def find_aidge_python(args) -> tuple[str | None, str]:
    if args.no_aidge:
        return None, "disabled with --no-aidge"
    exe = args.aidge_python or os.environ.get("OXIQUANT_AIDGE_PYTHON")
    if exe:
        if not Path(exe).exists():
            return None, f"--aidge-python {exe} does not exist"
        return exe, ""
    import importlib.util

    if importlib.util.find_spec("aidge_quantization") is not None:
        return sys.executable, ""
    return None, (
        f"aidge_quantization is not importable from {sys.executable}; install it in a separate venv "
        "(python -m venv /tmp/aidge_venv && /tmp/aidge_venv/bin/pip install aidge-core aidge-backend-cpu "
        "aidge-onnx aidge-quantization) and pass --aidge-python /tmp/aidge_venv/bin/python"
    )


def run_aidge(exe: str, configs: list[dict], n_eval: int | None, threads: int, tmp: Path) -> tuple[dict, str]:
    spec = {"model": str(DATA / MODEL_FILE), "n_eval": n_eval, "configs": configs, "result": str(tmp / "aidge.json")}
    spec_path = tmp / "aidge_spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    err_path = tmp / "aidge_stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [exe, str(Path(__file__).resolve()), "--aidge-worker", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  [aidge] {line.rstrip()}", flush=True)
        rc = proc.wait()
    result = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).exists() else {"rows": []}
    reason = ""
    if rc != 0:
        tail = [ln for ln in err_path.read_text().splitlines() if ln.strip()][-5:]
        reason = f"the Aidge worker ({exe}) exited with status {rc}: " + " | ".join(tail)
    return result, reason


# -- report ----------------------------------------------------------------------------------
def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt_row(r: dict, ref: float) -> str:
    wa = f"W{r['w_bits']}/A{r['a_bits']}"
    if "error" in r:
        return f"| {r['engine']} | {r['group']} | {r['label']} | {wa} | failed: {r['error'][:120]} | | |"
    acc = 100.0 * r["correct"] / r["n_eval"]
    return (
        f"| {r['engine']} | {r['group']} | {r['label']} | {wa} | {acc:.2f} | {ref - acc:+.2f} | "
        f"{r['quant_seconds']:.1f} |"
    )


def render(
    meta: dict, fp32: dict, rows: list[dict], speed: list[dict], notes: list[str], inference: dict | None = None
) -> list[str]:
    ref = fp32["onnxruntime"]
    n_eval = meta["n_eval"]
    lines = [
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; machine: {meta['machine']}; {meta['versions']}.  ",
        f"Model: ResNet-20 (akamaster, CIFAR-10). Calibration: test images 0-{N_CALIB - 1}; evaluation: the next "
        f"{n_eval} images. fp32 top-1 on them: {ref:.2f} % (onnxruntime), {fp32['oxiquant']:.2f} % (oxiquant "
        "engine). Loss = fp32 (onnxruntime) - quantized, in points.  ",
        f"Threads: oxiquant {meta['threads']} (set_num_threads), onnxruntime evaluation sessions "
        f"{meta['threads']} (intra_op_num_threads); quantize_static's own calibration session uses onnxruntime's "
        f"default thread count (one per physical core, {os.cpu_count()} here); "
        f"Aidge OMP_NUM_THREADS={meta['threads']}.",
        "",
        "| engine | group | configuration | bits W/A | top-1 % | loss (points) | quantization wall time (s) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    lines += [fmt_row(r, ref) for r in rows]
    if speed:
        lines += [
            "",
            f"Quantization speed, 8 bits, per-channel, calibration on {N_CALIB} images included, median of "
            f"{meta['speed_rounds']} alternating round(s): oxiquant `quantize_network` (optimize_signs) vs "
            "onnxruntime `quantize_static` (QDQ, S8/S8).",
            "",
            "| oxiquant clipping | onnxruntime calibrate_method | oxiquant (s) | onnxruntime (s) | "
            "speed-up (ort time / oxiquant time) | busy cores (CPU / wall) oxiquant, ort |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for s in speed:
            lines.append(
                f"| {s['oxiquant_clipping']} | {s['ort_method']} | {s['oxiquant_seconds']:.2f} | "
                f"{s['ort_seconds']:.2f} | **{s['ort_seconds'] / s['oxiquant_seconds']:.2f}x** | "
                f"{s['oxiquant_cores']:.1f}, {s['ort_cores']:.1f} |"
            )
    if inference:
        ox_s, ort_s = inference["oxiquant_seconds"], inference["ort_seconds"]
        lines += [
            "",
            f"For reference, plain fp32 inference over the same {N_CALIB} images in the same batches (same rounds): "
            f"onnxruntime {ort_s:.2f} s, oxiquant {ox_s:.2f} s (oxiquant / onnxruntime speed {ort_s / ox_s:.2f}x).",
        ]
        minmax = next((s for s in speed if s["ort_method"] == "MinMax"), None)
        if minmax:
            target = minmax["ort_seconds"] / 5
            lines[-1] += (
                f" 5x against MinMax would mean {target:.2f} s for the whole quantization: "
                f"{ort_s / target:.2f}x faster than onnxruntime's own inference of these images."
            )
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return lines


def write_results(block_lines: list[str]) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    block = "\n".join([BEGIN, *block_lines, END])
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        section = "## Post-training quantization: accuracy and speed\n\n" + block + "\n"
        # After the fp32 section, i.e. before the next level-2 heading that follows its end marker.
        start = text.index(FP32_END) + len(FP32_END) if FP32_END in text else len(text)
        nxt = text.find("\n## ", start)
        if nxt == -1:
            text = text.rstrip() + "\n\n" + section
        else:
            text = text[: nxt + 1] + section + "\n" + text[nxt + 1 :]
    RESULTS.write_text(text)


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="all configurations, 9000 evaluation images (default)")
    mode.add_argument("--quick", action="store_true", help=f"fewer configurations, {QUICK_EVAL} evaluation images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-rounds", type=int, default=None, help="alternating speed rounds (default 3, quick 1)")
    ap.add_argument("--aidge-python", default=None, help="interpreter that can import aidge_quantization")
    ap.add_argument("--no-aidge", action="store_true")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="raw results (default benches/results_ptq.json)")
    ap.add_argument("--write", action="store_true", help="update the PTQ section of benches/RESULTS.md (full run)")
    ap.add_argument("--aidge-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.aidge_worker:
        aidge_worker(args.aidge_worker)
        return
    if args.write and args.quick:
        ap.error("--write records the full benchmark only: drop --quick")
    missing = [f for f in (MODEL_FILE, IMAGES_FILE) if not (DATA / f).is_file()]
    if missing:
        print(
            f"bench_ptq: {', '.join(missing)} not found in {DATA}: the shared data is not present, "
            "nothing to benchmark."
        )
        return

    import onnx
    import onnxruntime as ort
    from bench_fp32 import cpu_model  # imports onnxruntime: not at the top, the Aidge worker has none
    from onnxruntime.quantization import QuantType

    import oxiquant

    quick = args.quick
    rounds = args.speed_rounds if args.speed_rounds is not None else (1 if quick else 3)
    n_eval = QUICK_EVAL if quick else None
    calib, x, labels = load_data(n_eval)
    oxiquant.set_num_threads(args.threads)
    notes: list[str] = []
    rows: list[dict] = []
    started = time.perf_counter()
    print(
        f"bench_ptq: {'quick' if quick else 'full'} run, {len(calib)} calibration and {len(x)} evaluation images, "
        f"{args.threads} threads",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench_ptq_") as tmpdir:
        tmp = Path(tmpdir)
        src = DATA / MODEL_FILE

        # fp32 references on the evaluation images.
        fp32_sess = ort_session(str(src), args.threads)
        fp32 = {"onnxruntime": 100.0 * ort_eval(fp32_sess, x, labels) / len(x)}
        model = oxiquant.load(str(src))
        fp32["oxiquant"] = 100.0 * oxiquant_eval(model, x, labels) / len(x)
        print(f"fp32 top-1: onnxruntime {fp32['onnxruntime']:.2f} %, oxiquant {fp32['oxiquant']:.2f} %", flush=True)

        def report(r: dict) -> None:
            if "error" in r:
                print(f"  {r['engine']:11s} W{r['w_bits']}A{r['a_bits']} {r['label']}: FAILED {r['error']}", flush=True)
            else:
                acc = 100.0 * r["correct"] / r["n_eval"]
                print(
                    f"  {r['engine']:11s} W{r['w_bits']}A{r['a_bits']} {r['label']}: top-1 {acc:.2f} % "
                    f"({acc - fp32['onnxruntime']:+.2f}), quantization {r['quant_seconds']:.1f} s",
                    flush=True,
                )

        # oxiquant grid.
        for cfg in oxiquant_configs(quick):
            row = dict(cfg)
            try:
                cpu: list[float] = []
                q, row["quant_seconds"] = oxiquant_quantize(oxiquant, model, calib, cfg["options"], cpu)
                row["quant_cpu_seconds"] = cpu[0]
                t = time.perf_counter()
                row["correct"], row["n_eval"] = oxiquant_eval(q, x, labels), len(x)
                row["eval_seconds"] = time.perf_counter() - t
            except Exception as e:  # record and go on: a failing configuration is a result too
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            report(row)

        # onnxruntime grid.
        pre = tmp / "preprocessed.onnx"
        pre_info = ort_preprocess(src, pre)
        symbolic = "on" if pre_info["symbolic_shape"] else "off: no sympy"
        notes.append(
            f"onnxruntime: `quant_pre_process` (symbolic shape inference {symbolic}) "
            f"ran once beforehand in {pre_info['seconds']:.2f} s, not counted in the times; it "
            f"{'changed' if pre_info['graph_changed'] else 'left unchanged'} the graph's op counts."
        )
        input_name = fp32_sess.get_inputs()[0].name
        ort_cfgs, reasons = ort_configs(quick, {t.name for t in QuantType})
        notes += reasons
        for cfg in ort_cfgs:
            row = dict(cfg)
            dst = tmp / "ort_q.onnx"
            try:
                row["warnings"], cpu = [], []
                row["quant_seconds"] = ort_quantize(
                    str(pre), str(dst), calib, input_name, cfg["options"], row["warnings"], cpu
                )
                row["quant_cpu_seconds"] = cpu[0]
                sess = ort_session(str(dst), args.threads)
                t = time.perf_counter()
                row["correct"], row["n_eval"] = ort_eval(sess, x, labels), len(x)
                row["eval_seconds"] = time.perf_counter() - t
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            report(row)

        # Aidge.
        aidge_versions = None
        exe, reason = find_aidge_python(args)
        if exe:
            print(f"aidge: running {len(aidge_configs(quick))} configuration(s) with {exe}", flush=True)
            result, reason = run_aidge(exe, aidge_configs(quick), n_eval, args.threads, tmp)
            aidge_versions = result.get("versions")
            rows += result["rows"]
        if reason:
            what = "stopped early" if any(r["engine"] == "aidge" for r in rows) else "skipped"
            print(f"aidge: {what}: {reason}", flush=True)
            notes.append(f"Aidge {what}: {reason}")
        else:
            arows = [r for r in rows if r["engine"] == "aidge" and "quant_cpu_seconds" in r]
            aidge_cores = ""
            if arows:
                busy = sum(r["quant_cpu_seconds"] for r in arows) / sum(r["quant_seconds"] for r in arows)
                aidge_cores = f" and it kept {busy:.1f} cores busy on average (CPU time / wall time)"
            notes.append(
                "Aidge: `quantize_network` with `rescale_inputs=True` (this model's input is not in [-1, 1]; "
                "without it W8A8 is at chance), `fake_quantize=True` (integer values held in float: the true "
                "integer path stops at 4 bits on a missing int4 Pad kernel in aidge_backend_cpu), precisions set with "
                "`auto_assign_node_precision` (int32 biases), calibration and evaluation in batches of "
                f"{AIDGE_BATCH}; its time excludes loading the model{aidge_cores}."
            )

        # Speed: matched calibration methods, alternating rounds.
        pairs = SPEED_PAIRS_QUICK if quick else SPEED_PAIRS_FULL
        speed = []
        inference = None
        if rounds > 0:
            print(f"speed: {len(pairs)} pair(s), {rounds} round(s)", flush=True)
            for clip, method in pairs:
                ox_opts = ox_config(8, clip, True, True)["options"]
                ort_opts = ort_config("QInt8", "QInt8", method, True)["options"]
                ox_t, ort_t, ox_cpu, ort_cpu = [], [], [], []
                for r in range(rounds):
                    order = ("ox", "ort") if r % 2 == 0 else ("ort", "ox")
                    for who in order:
                        if who == "ox":
                            ox_t.append(oxiquant_quantize(oxiquant, model, calib, ox_opts, ox_cpu)[1])
                        else:
                            ort_t.append(
                                ort_quantize(
                                    str(pre), str(tmp / "ort_speed.onnx"), calib, input_name, ort_opts, cpu=ort_cpu
                                )
                            )
                s = {
                    "oxiquant_clipping": clip,
                    "ort_method": method,
                    "oxiquant_seconds": float(np.median(ox_t)),
                    "ort_seconds": float(np.median(ort_t)),
                    "oxiquant_all": ox_t,
                    "ort_all": ort_t,
                    # Average number of busy cores: process CPU time over wall time.
                    "oxiquant_cores": float(sum(ox_cpu) / sum(ox_t)),
                    "ort_cores": float(sum(ort_cpu) / sum(ort_t)),
                }
                speed.append(s)
                print(
                    f"  {clip:7s} vs {method:10s}: oxiquant {s['oxiquant_seconds']:.2f} s, onnxruntime "
                    f"{s['ort_seconds']:.2f} s, speed-up {s['ort_seconds'] / s['oxiquant_seconds']:.2f}x",
                    flush=True,
                )
            # The floor under any calibration: plain fp32 inference over the same images, in the
            # same batches, by each engine (alternating rounds as above).
            infer_sess = ort_session(str(pre), args.threads)
            ox_inf, ort_inf = [], []
            for r in range(rounds):
                for who in ("ox", "ort") if r % 2 == 0 else ("ort", "ox"):
                    t0 = time.perf_counter()
                    for i in range(0, len(calib), CALIB_BATCH):
                        if who == "ox":
                            model.run(calib[i : i + CALIB_BATCH])
                        else:
                            infer_sess.run(None, {input_name: calib[i : i + CALIB_BATCH]})
                    (ox_inf if who == "ox" else ort_inf).append(time.perf_counter() - t0)
            inference = {"oxiquant_seconds": float(np.median(ox_inf)), "ort_seconds": float(np.median(ort_inf))}
            print(
                f"  fp32 inference over the calibration images: oxiquant {inference['oxiquant_seconds']:.2f} s, "
                f"onnxruntime {inference['ort_seconds']:.2f} s",
                flush=True,
            )

    notes.append(
        "Times: oxiquant `quantize_network` on the already loaded model (copy, passes, calibration); onnxruntime "
        "`quantize_static` from file to file (QDQ, default options otherwise). Both calibrate in batches of "
        f"{CALIB_BATCH}: onnxruntime's Entropy and Percentile calibrators stack every batch's outputs and fail on a "
        "shorter last batch."
    )
    ort_warnings = []
    for r in rows:
        for w in r.get("warnings", []):
            if w not in ort_warnings:
                ort_warnings.append(w)
    notes += [f"onnxruntime warned: {w}" for w in ort_warnings]
    cmd = "python benches/bench_ptq.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    versions = (
        f"python {platform.python_version()}, numpy {np.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {ort.__version__}, oxiquant {oxiquant.__version__} (git {git_revision()})"
    )
    if aidge_versions:
        versions += ", " + ", ".join(f"{k} {v}" for k, v in aidge_versions.items())
    meta = {
        "command": cmd,
        "mode": "quick" if quick else "full",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores",
        "versions": versions,
        "threads": args.threads,
        "n_calib": len(calib),
        "n_eval": len(x),
        "speed_rounds": rounds,
        "total_seconds": time.perf_counter() - started,
    }
    lines = render(meta, fp32, rows, speed, notes, inference)
    print("\n" + "\n".join(lines))
    args.json.write_text(
        json.dumps(
            {"meta": meta, "fp32": fp32, "rows": rows, "speed": speed, "inference": inference, "notes": notes}, indent=1
        )
        + "\n"
    )
    print(f"\nwrote {args.json} ({meta['total_seconds']:.0f} s in all)")
    if args.write:
        write_results(lines)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
