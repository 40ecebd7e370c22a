"""How closely onnxruntime running oxiquant's exports agrees with oxiquant's integer engine,
on the trained ResNet-20 of ../shared/data (the table in docs/integer-engine.md).

    python benches/export_agreement.py [--images 9000]

8 bits, quantized on CIFAR-10 test images 0-999, compared on the next `--images` (1000 by
default; 9000 is all the others): top-1
disagreements and the largest logit difference, for each export form onnxruntime can run,
with default options and with per_channel + optimize_signs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_int8 import cifar

import oxiquant

import zoo


def session(proto, fused: bool) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not fused:
        # Basic optimizations leave the Q/DQ nodes as written (the ONNX semantics).
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="evaluation images after the 1000 calibration ones")
    args = ap.parse_args()
    if not 1 <= args.images <= 9000:
        sys.exit("--images must be between 1 and 9000 (CIFAR-10 has 10000 test images)")
    path = zoo.SHARED_DATA / "akamaster_resnet20_cifar10.onnx"
    if not path.exists():
        sys.exit(f"needs {path}")
    x = cifar(1000 + args.images)
    calib, test = x[:1000], x[1000:]
    m = oxiquant.load(path)
    forms = [
        ("QDQ, basic optimizations (Q/DQ as written)", "qdq", "uint8", False),
        ("QDQ, all optimizations (fused QLinearConv, QLinearAdd, QGemm)", "qdq", "uint8", True),
        ('QDQ, `weight_type="int8"`, all optimizations', "qdq", "int8", True),
        ("QOperator", "qoperator", "uint8", True),
        ('QOperator, `weight_type="int8"`', "qoperator", "int8", True),
    ]
    cells: dict[str, list[str]] = {f[0]: [] for f in forms}
    for opts in ({}, {"per_channel": True, "optimize_signs": True}):
        q = oxiquant.quantize_network(m, 8, calib, progress=False, **opts)
        name = q.output_names[0]
        ours = q.run(test)[name]
        for title, fmt, wt, fused in forms:
            s = session(q.to_onnx(fmt, weight_type=wt), fused)
            theirs = s.run([name], {s.get_inputs()[0].name: test})[0]
            flips = int((theirs.argmax(1) != ours.argmax(1)).sum())
            cells[title].append(f"{flips} / {float(np.abs(theirs - ours).max()):.3g}")
    print(f"| export, run by onnxruntime {ort.__version__} | default options | per_channel + optimize_signs |")
    print("|---|---:|---:|")
    for title, row in cells.items():
        print(f"| {title} | {' | '.join(row)} |")


if __name__ == "__main__":
    main()
