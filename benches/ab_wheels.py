"""Two builds of oxiquant side by side: fp32 and int8 throughput and quantization time, for
checking that a change leaves speed where it was (or measuring what it gains).

    python benches/ab_wheels.py --base OLD/bin/python --new NEW/bin/python [--rounds 5]
                                [--seconds 1.5] [--threads 2] [--write]

Each interpreter must import its own oxiquant (e.g. a venv with the previous wheel and one with
the new). Rounds alternate the two builds, each round a fresh process per build (load,
quantize, time), so machine noise hits both alike; the table gives each build's median
images/s over the rounds and the median of the per-round ratios new / base. Models: the bundled
digits CNN always; ResNet-20 (CIFAR-10) and MobileNetV2 (ImageNet) from ../shared/data when
present. int8 is `quantize_network(model, 8, calib, clipping="max", per_channel=True, optimize_signs=True)`
run on the integer engine. With --write the table replaces the A/B section of
benches/RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BEGIN, END = "<!-- ab:begin -->", "<!-- ab:end -->"


def worker(seconds: float, threads: int) -> dict:
    """Runs in the interpreter under test: every configuration's images/s and quantize time."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np

    import oxiquant
    from oxiquant import examples

    oxiquant.set_num_threads(threads)
    nets = []
    x = examples.digits_data()["calib_images"]
    nets.append(("digits CNN", oxiquant.load(examples.DIGITS_MODEL), x))
    if DATA.is_dir():
        c = np.load(DATA / "cifar10_test.npz")
        mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
        imgs = ((c["images"][:256].astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
        nets.append(("ResNet-20", oxiquant.load(DATA / "akamaster_resnet20_cifar10.onnx"), np.ascontiguousarray(imgs)))
        i = np.load(DATA / "imagenet_cal200.npz")
        mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
        imgs = ((i["images"][:64].astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
        nets.append(("MobileNetV2", oxiquant.load(DATA / "mobilenet_v2_imagenet.onnx"), np.ascontiguousarray(imgs)))
    out: dict[str, float] = {}
    for name, model, data in nets:
        t = time.perf_counter()
        q = oxiquant.quantize_network(
            model, 8, data[:64], clipping="max", per_channel=True, optimize_signs=True, progress=False, batch_size=32
        )
        out[f"{name}: quantize_network (64 images), s"] = time.perf_counter() - t
        for label, m in (("fp32", model), ("int8", q)):
            for batch in (1, 32):
                xb = np.ascontiguousarray(np.resize(data, (batch, *data.shape[1:])))
                m.run(xb)  # warm-up: plans built, buffers allocated
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds or n < 3:
                    m.run(xb)
                    n += 1
                out[f"{name} {label}, batch {batch}: images/s"] = n * batch / (time.perf_counter() - start)
    return out


def cpu_line() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fp32 import cpu_features, cpu_model, run_stamp

    return f"{run_stamp()}Machine: {cpu_model()}, {os.cpu_count()} cores; CPU features: {cpu_features()}."


def run_side(python: str, seconds: float, threads: int) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--worker", "--seconds", str(seconds), "--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{python} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def version_of(python: str) -> str:
    code = "import oxiquant, pathlib; print(oxiquant.__version__, pathlib.Path(oxiquant.__file__).parent)"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return r.stdout.strip() or r.stderr.strip()[-200:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="interpreter with the reference build")
    ap.add_argument("--new", help="interpreter with the build under test")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.5, help="timing budget per configuration and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.seconds, args.threads)))
        return
    if not (args.base and args.new):
        ap.error("--base and --new are required")
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    for r in range(args.rounds):
        order = ("base", "new") if r % 2 == 0 else ("new", "base")
        for side in order:
            runs[side].append(run_side(getattr(args, side), args.seconds, args.threads))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    header = [
        cpu_line(),
        f"Command: `python benches/ab_wheels.py --base BASE --new NEW --rounds {args.rounds} "
        f"--seconds {args.seconds} --threads {args.threads}`.  ",
        f"Base: {version_of(args.base)}; new: {version_of(args.new)}.",
        "",
        "| configuration | base (median) | new (median) | new / base (median of rounds) | range of the rounds |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = []
    for key in runs["base"][0]:
        b = [x[key] for x in runs["base"]]
        n = [x[key] for x in runs["new"]]
        ratios = [nn / bb for nn, bb in zip(n, b)]
        if key.endswith(", s"):  # a time: the ratio that reads as a speed-up is base / new
            ratios = [bb / nn for nn, bb in zip(n, b)]
        rows.append(
            f"| {key} | {statistics.median(b):.4g} | {statistics.median(n):.4g} | "
            f"{statistics.median(ratios):.3f}x | {min(ratios):.2f}-{max(ratios):.2f}x |"
        )
    table = [*header, *rows, "", "Ratios above 1 favour the new build (for times: base time / new time)."]
    print("\n".join(table))
    if args.write:
        from bench_fp32 import write_section

        write_section(BEGIN, END, "Build against build (A/B)", table)


if __name__ == "__main__":
    main()
