"""fp32 inference throughput: oxiquant vs onnxruntime, side by side in one run.

    python benches/bench_fp32.py [--threads 2] [--seconds 3] [--write]

Each configuration alternates short timed rounds of the two engines (so machine noise hits
both alike) and reports images/s and the ratio oxiquant / onnxruntime. With --write the table
replaces the fp32 section of benches/RESULTS.md."""

from __future__ import annotations

import argparse
import os

# numpy's OpenBLAS threads spin after numpy work and take cycles from both engines' threads
# (seen in perf as blas_thread_server); neither engine uses numpy's BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import oxiquant

import zoo

RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN, END = "<!-- fp32:begin -->", "<!-- fp32:end -->"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    # A Reshape to a fixed [1, C] (classifier flatten) must follow the batch too.
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = onnx.numpy_helper.to_array(inits[n.input[1]]).copy()
            if shape.ndim == 1 and shape.size and shape[0] == 1:
                shape[0] = -1
                inits[n.input[1]].CopyFrom(onnx.numpy_helper.from_array(shape, n.input[1]))
    return m


def models() -> list[tuple[str, onnx.ModelProto, list[int]]]:
    out = [("ResNet-50 (light, 224x224)", with_dynamic_batch(zoo.light_model("resnet50")), [1, 32])]
    if zoo.SHARED_DATA.is_dir():
        aka = onnx.load(str(zoo.SHARED_DATA / "akamaster_resnet20_cifar10.onnx"))
        out.append(("ResNet-20 akamaster (CIFAR)", aka, [1, 32]))
        onnc = onnx.load(str(zoo.SHARED_DATA / "onnc_resnet20_cifar10.onnx"))
        out.append(("ResNet-20 onnc (CIFAR, batch fixed at 1)", onnc, [1]))
    return out


def cpu_features() -> str:
    """The SIMD extensions the kernels choose from, as /proc/cpuinfo lists them."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in wanted if f in have) or "no AVX2"
    except OSError:
        pass
    return "features unknown"


def run_stamp() -> str:
    """The `Date: ...; commit: ...` line of a results header: when, and which code."""
    import datetime
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        rev += " + uncommitted changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"Date: {date}; commit: {rev}.  "


def write_section(begin: str, end: str, heading: str, table: list[str]) -> None:
    """Replaces the block between the `begin` / `end` markers of benches/RESULTS.md with
    `table` (appended under `## heading` the first time)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    block = "\n".join([begin, *table, end])
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


def timed_rounds(fns: dict[str, callable], seconds: float) -> dict[str, float]:
    """Alternates blocks of calls of each function; returns the median seconds per call.

    Blocks (about 0.25 s each), not single calls: after a call, each engine's worker threads
    spin for a while before sleeping (onnxruntime's by default), and alternating call by
    call made that spin steal a core from the other engine's next call (benches/RESULTS.md,
    "fp32 inference throughput"). The first call of each block is not counted."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up
        f()
        f()
    block = 0.25
    deadline = time.perf_counter() + seconds * len(fns)
    while time.perf_counter() < deadline or min(len(v) for v in samples.values()) < 5:
        for k, f in fns.items():
            f()  # settles the other engine's spinning threads; not counted
            start = time.perf_counter()
            while True:
                t = time.perf_counter()
                f()
                samples[k].append(time.perf_counter() - t)
                if time.perf_counter() - start >= block:
                    break
    return {k: float(np.median(v)) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per engine and config")
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md")
    args = ap.parse_args()

    rows = []
    for title, proto, batches in models():
        qm = oxiquant.load(proto)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
        for b in batches:
            x = np.random.default_rng(0).standard_normal([b, *shape[1:]]).astype(np.float32)
            ref = sess.run(None, {name: x})[0]
            got = next(iter(qm.run({name: x}, num_threads=args.threads).values()))
            err = float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-12))
            t = timed_rounds(
                {
                    "oxiquant": lambda qm=qm, name=name, x=x: qm.run({name: x}, num_threads=args.threads),
                    "onnxruntime": lambda sess=sess, name=name, x=x: sess.run(None, {name: x}),
                },
                args.seconds,
            )
            ox, rt = b / t["oxiquant"], b / t["onnxruntime"]
            rows.append((title, b, ox, rt, ox / rt, err))
            print(
                f"{title:42s} batch {b:3d}: oxiquant {ox:9.1f} img/s, onnxruntime {rt:9.1f} img/s, "
                f"ratio {ox / rt:.2f} (max rel diff {err:.1e})",
                flush=True,
            )

    cmd = f"python benches/bench_fp32.py --threads {args.threads} --seconds {args.seconds:g}"
    table = [
        f"Command: `{cmd}`  ",
        run_stamp(),
        f"Machine: {cpu_model()} ({platform.machine()}; {cpu_features()}), {args.threads} threads for each engine; "
        f"onnxruntime {ort.__version__}, "
        f"oxiquant {oxiquant.__version__}; median per call over alternating 0.25 s blocks of each engine.",
        "",
        "| model | batch | oxiquant img/s | onnxruntime img/s | ratio (oxiquant / ort) | max rel. output diff |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    table += [f"| {t} | {b} | {o:.1f} | {r:.1f} | **{q:.2f}x** | {e:.1e} |" for t, b, o, r, q, e in rows]
    if args.write:
        write_section(BEGIN, END, "fp32 inference throughput", table)
    else:
        print("\n".join(table))


if __name__ == "__main__":
    main()
