"""Integer inference throughput: oxiquant's integer engine against its own fp32 engine and
against onnxruntime running the same quantized model (QDQ and QOperator exports), side by
side in one run.

    python benches/bench_int8.py [--threads 2] [--seconds 2] [--write]

Models: ResNet-50 (light: the real architecture with seeded random weights, 224x224) and,
when ../shared/data is present, the trained ResNet-20 (CIFAR-10), quantized to 8 bits with
default options on 64 calibration images (real ones for ResNet-20). Each configuration
alternates 0.25 s blocks of every engine (bench_fp32.timed_rounds) and reports images/s; the
ratios are taken within the run. With --write the table replaces the int8 section of
benches/RESULTS.md."""

from __future__ import annotations

import argparse
import os

# numpy's OpenBLAS threads spin after numpy work and take cycles from both engines' threads
# (seen in perf as blas_thread_server); neither engine uses numpy's BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import platform
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_fp32 import cpu_features, cpu_model, run_stamp, timed_rounds, with_dynamic_batch, write_section

import oxiquant

import zoo

BEGIN, END = "<!-- int8:begin -->", "<!-- int8:end -->"


def cifar(n: int) -> np.ndarray:
    d = np.load(zoo.SHARED_DATA / "cifar10_test.npz")
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)
    std = np.array([0.2470, 0.2435, 0.2616], np.float32)
    x = (d["images"][:n].astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def at_opset_13(model: onnx.ModelProto) -> onnx.ModelProto:
    """The exports need opset 13 (per-channel QuantizeLinear). ResNet-50's ops (Conv, Relu,
    MaxPool, Add, GlobalAveragePool, Reshape, Gemm, BatchNormalization without `spatial`) mean
    the same at 9 and 13, so only the import changes (onnx's converter trips on its inputs)."""
    for op in model.graph.node:
        assert not (op.op_type == "BatchNormalization" and any(a.name == "spatial" for a in op.attribute))
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 13)
    return model


def models() -> list[tuple[str, onnx.ModelProto, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = [
        (
            "ResNet-50 (light, 224x224)",
            at_opset_13(with_dynamic_batch(zoo.light_model("resnet50"))),
            rng.standard_normal((64, 3, 224, 224)).astype(np.float32),
        )
    ]
    if zoo.SHARED_DATA.is_dir():
        aka = onnx.load(str(zoo.SHARED_DATA / "akamaster_resnet20_cifar10.onnx"))
        out.append(("ResNet-20 akamaster (CIFAR-10)", aka, cifar(64)))
    return out


def session(proto: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="timing budget per engine and config")
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md")
    args = ap.parse_args()
    th = args.threads
    rows = []
    for title, proto, calib in models():
        m = oxiquant.load(proto)
        q = oxiquant.quantize_network(m, 8, calib, progress=False)
        assert q.engine == "int", q.engine_note
        name = m.input_names[0]
        sessions = {
            "ort_fp32": session(proto, th),
            "ort_qdq": session(q.to_onnx("qdq"), th),
            "ort_qop": session(q.to_onnx("qoperator"), th),
        }
        for b in (1, 32):
            x = calib[:b] if len(calib) >= b else np.resize(calib, (b, *calib.shape[1:]))
            feeds = {name: x}
            ours = next(iter(q.run(feeds, num_threads=th).values()))
            theirs = sessions["ort_qdq"].run(None, feeds)[0]
            agree = (float(np.mean(ours.argmax(1) == theirs.argmax(1))) * 100, float(np.abs(ours - theirs).max()))
            fns = {
                "int8": lambda feeds=feeds, q=q: q.run(feeds, num_threads=th),
                "fp32": lambda feeds=feeds, m=m: m.run(feeds, num_threads=th),
            }
            for k, s in sessions.items():
                fns[k] = lambda s=s, feeds=feeds: s.run(None, feeds)
            t = timed_rounds(fns, args.seconds)
            ips = {k: b / v for k, v in t.items()}
            rows.append((title, b, ips, agree))
            print(
                f"{title:32s} batch {b:2d}: int8 {ips['int8']:8.1f} img/s, fp32 {ips['fp32']:8.1f}, "
                f"ort QDQ {ips['ort_qdq']:8.1f}, ort QOperator {ips['ort_qop']:8.1f}, ort fp32 {ips['ort_fp32']:8.1f}"
                f" | int8/fp32 {ips['int8'] / ips['fp32']:.2f}x, int8/ort QDQ {ips['int8'] / ips['ort_qdq']:.2f}x",
                flush=True,
            )

    cmd = f"python benches/bench_int8.py --threads {th} --seconds {args.seconds:g}"
    table = [
        f"Command: `{cmd}`  ",
        run_stamp(),
        f"Machine: {cpu_model()} ({platform.machine()}; {cpu_features()}), {th} threads for each engine, "
        "oxiquant's integer kernels: "
        f"{oxiquant.integer_kernel()}; onnxruntime "
        f"{ort.__version__}, oxiquant {oxiquant.__version__}; 8-bit, default options; median per call over "
        "alternating 0.25 s blocks of every engine. Images/s.",
        "",
        "| model | batch | oxiquant int8 | oxiquant fp32 | ort int8 (QDQ) | ort int8 (QOperator) | ort fp32 "
        "| **int8 / own fp32** | **int8 / ort int8** | vs ort QDQ: top-1 agreement, max logit diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for title, b, ips, agree in rows:
        table.append(
            f"| {title} | {b} | {ips['int8']:.1f} | {ips['fp32']:.1f} | {ips['ort_qdq']:.1f} | {ips['ort_qop']:.1f} "
            f"| {ips['ort_fp32']:.1f} | **{ips['int8'] / ips['fp32']:.2f}x** "
            f"| **{ips['int8'] / max(ips['ort_qdq'], ips['ort_qop']):.2f}x** | {agree[0]:.0f} %, {agree[1]:.2g} |"
        )
    table.append("")
    table.append(
        "int8 / ort int8 divides by the faster of onnxruntime's two forms. The light ResNet-50 has random "
        "weights: its logits are nearly tied (std 0.02), so one flipped rounding moves its top-1; the max "
        "logit diff says how far apart the two engines are."
    )
    if args.write:
        write_section(BEGIN, END, "Integer inference throughput", table)
    else:
        print("\n".join(table))


if __name__ == "__main__":
    main()
