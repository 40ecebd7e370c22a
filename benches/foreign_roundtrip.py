"""Round trip of a model quantized by onnxruntime's `quantize_static` through oxiquant's
integer engine (docs/integer-engine.md, "Loading quantized models from other tools").

Quantizes the ResNet-20 of ../shared/data (QDQ or QOperator, U8 activations, S8 weights,
per-channel, MinMax on the first 1000 CIFAR-10 test images), loads the result with
`oxiquant.load` and compares its integer engine with onnxruntime on the next 1000 images:
top-1 disagreements and the largest logit difference in output quantization steps.

    python benches/foreign_roundtrip.py [--format qdq|qoperator] [--n 1000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import oxiquant

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def images(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(DATA / "cifar10_test.npz")
    x = d["images"][start : start + n].astype(np.float32) / 255.0
    x = (x.transpose(0, 3, 1, 2) - MEAN) / STD
    return np.ascontiguousarray(x, np.float32), d["labels"][start : start + n]


class Reader(CalibrationDataReader):
    def __init__(self, x: np.ndarray, name: str) -> None:
        self.it = iter([{name: x[i : i + 1]} for i in range(len(x))])

    def get_next(self):  # type: ignore[override]
        return next(self.it, None)


def output_step(model: onnx.ModelProto) -> float:
    """Scale of the quantized tensor the output DequantizeLinear reads."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    out = model.graph.output[0].name
    for n in model.graph.node:
        if n.output[0] == out and n.op_type == "DequantizeLinear":
            return float(inits[n.input[1]])
    raise SystemExit("the output is not a DequantizeLinear")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", choices=["qdq", "qoperator"], default="qdq")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--weights", choices=["s8", "u8"], default="s8")
    ap.add_argument("--reduce-range", action="store_true")
    args = ap.parse_args()
    src = DATA / "akamaster_resnet20_cifar10.onnx"
    name = onnx.load(str(src)).graph.input[0].name
    calib, _ = images(0, 1000)
    x, labels = images(1000, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        qpath = str(Path(tmp) / "resnet20_q.onnx")
        quantize_static(
            str(src),
            qpath,
            Reader(calib, name),
            quant_format=QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8 if args.weights == "s8" else QuantType.QUInt8,
            per_channel=True,
            reduce_range=args.reduce_range,
        )
        qproto = onnx.load(qpath)
        step = output_step(qproto)
        model = oxiquant.load(qpath)
        print(f"oxiquant engine: {model.engine}; note: {model.engine_note}")
        print("integer ops:", model._native.int_op_counts())
        got = np.concatenate([model.run(x[i : i + 100])[model.output_names[0]] for i in range(0, len(x), 100)])
        for level, opt in [
            ("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
            ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        ]:
            so = ort.SessionOptions()
            so.graph_optimization_level = opt
            sess = ort.InferenceSession(qpath, so, providers=["CPUExecutionProvider"])
            ref = np.concatenate([sess.run(None, {name: x[i : i + 100]})[0] for i in range(0, len(x), 100)])
            diff = np.abs(got - ref) / step
            agree = int((got.argmax(1) != ref.argmax(1)).sum())
            acc_ox, acc_ort = ((got.argmax(1) == labels).mean() * 100, (ref.argmax(1) == labels).mean() * 100)
            print(
                f"{args.format}, onnxruntime {ort.__version__} ({level} optimizations): "
                f"top-1 disagreements {agree} / {len(x)}, max logit diff {diff.max():.0f} steps, "
                f"logits differing {(diff > 0).mean() * 100:.2f} %, top-1 oxiquant {acc_ox:.2f} %, "
                f"onnxruntime {acc_ort:.2f} %"
            )


if __name__ == "__main__":
    main()
