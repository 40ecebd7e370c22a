"""Which settings the "best" preset should hold: every combination of per-channel weights,
optimized signs and activation clipping, at W8A8, W4A8 and W4A4, on real models.

    python benches/bench_defaults.py [--threads 2] [--write]

ResNet-20 (CIFAR-10; calibrated on the first 1000 test images, evaluated on the next 3000) and
MobileNetV2 (ImageNet; the 200 shared images: calibrated on the first 100, evaluated on the other
100), both from ../shared/data. For each setting: top-1, agreement with the float model's
predictions and the output SQNR against the float logits (steadier than top-1 on 100 images).
Below 8 bits only the settings worth comparing run (per-tensor signed runs max clipping only).
Then MSE against max weight clipping with the other settings at their best. With --write the
tables replace the "Default settings" section of benches/RESULTS.md."""

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

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BEGIN, END = "<!-- defaults:begin -->", "<!-- defaults:end -->"
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    oxiquant.set_num_threads(args.threads)
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
