"""Independent references shared by the test folders: onnxruntime runs and the error
measures the tests compare with."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# Relative to the output's magnitude. Two f32 engines summing in different orders, over weights
# from 1e-8 to 1e4 (degenerate kinds) with BatchNorm folded in, differ by a few 1e-5 of it.
RTOL = 3e-4


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_run(model: onnx.ModelProto, x: np.ndarray, extra_outputs: list[str] = ()) -> dict[str, np.ndarray]:
    """Runs `model` on input `x` in onnxruntime; `extra_outputs` become graph outputs too."""
    if extra_outputs:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        have = {o.name for o in model.graph.output}
        for name in extra_outputs:
            if name not in have:
                model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
                have.add(name)
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"x": x})))


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = RTOL) -> None:
    """Equal within `rtol` of the magnitude of `want` (elementwise relative error means
    nothing for outputs near 0 next to large ones)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    scale = float(np.abs(want).max()) if want.size else 0.0
    err = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    assert err <= rtol * scale + 1e-30, f"{what}: max error {err:.3g} for outputs up to {scale:.3g}"


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.mean((got.astype(np.float64) - ref) ** 2))
    signal = float(np.mean(ref.astype(np.float64) ** 2))
    return np.inf if noise == 0 else 10 * np.log10(signal / noise)


# -- what two integer engines may differ by ------------------------------------------------
# The property the comparisons with onnxruntime rest on, and why:
#
# 1. Every sum of a quantized model is exact in f32 while its magnitude stays below 2^24
#    (integer-valued operands: the fake graph, onnxruntime's float Conv of dequantized values
#    up to a relative 2^-24 per term). `integer_sum_bound` bounds `|acc + bias|` per layer.
# 2. Each rounding (a quantizer's Round, a QuantizeLinear, onnxruntime's requantization in
#    its own f32 order) can differ by one step between two engines given the same input: a
#    product within an ulp of a .5 tie rounds either way.
# 3. A difference of d steps in an input of a layer then moves its pre-rounding value by at
#    most d times the layer's gain in output steps (sum |W| * factor for an affine layer, the
#    branch factors for an Add, a Lipschitz constant for a float op: 1/4 for Sigmoid, 1/2 for
#    Softmax on the max norm), and the rounding adds one step.
#
# So the outputs differ by at most `step_bound(model)` steps, propagated through the graph
# (not "one step": a flipped value in front of a Conv of gain 20 moves its output by up to
# 20 steps; fresh hypothesis draws found such cases). For a model whose every rounding
# agrees (the integer engine against the fake graph with exact quantizer products), they are
# equal.

EXACT_F32 = 2.0**24
_PASS_THROUGH = {
    "Relu", "Clip", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Identity", "Transpose",
    "Squeeze", "Unsqueeze", "Pad", "Concat", "AveragePool", "GlobalAveragePool", "ReduceMean",
}  # fmt: skip
# Lipschitz constants on the max norm (Softmax: sum_j |dp_i/dx_j| = 2 p_i (1 - p_i) <= 1/2).
_LIPSCHITZ = {"Sigmoid": 0.25, "Tanh": 1.0, "Softmax": 0.5, "LeakyRelu": 1.0, "Abs": 1.0, "Neg": 1.0}


def _consts(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers, and DequantizeLinear / Constant outputs computed from them."""
    vals = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            vals[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "DequantizeLinear" and all(i in vals for i in n.input if i):
            x = vals[n.input[0]].astype(np.float64)
            s = vals[n.input[1]].astype(np.float64)
            z = vals[n.input[2]].astype(np.float64) if len(n.input) > 2 and n.input[2] else 0.0
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if np.ndim(s) == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                s, z = s.reshape(shape), np.reshape(z, shape) if np.ndim(z) else z
            vals[n.output[0]] = (x - z) * s
    return vals


def _rows(n: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """An affine node's weight as one row per output channel."""
    if n.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    trans_b = n.op_type in ("Gemm", "QGemm") and any(a.name == "transB" and a.i for a in n.attribute)
    return w if trans_b else w.T


def integer_sum_bound(fake: onnx.ModelProto) -> float:
    """The largest `sum |W| * max |x| + |bias|` (per output channel) of the affine layers of
    a "fake" export, in integer units: below 2^24 every partial sum of those layers is exact
    in f32. `max |x|` is read from the Clip that quantizes the layer's input."""
    vals = _consts(fake)
    producer = {o: n for n in fake.graph.node for o in n.output}

    def amax(t: str) -> float:
        n = producer.get(t)
        if n is None:
            return np.inf
        if n.op_type == "Clip" and len(n.input) == 3 and n.input[1] in vals and n.input[2] in vals:
            return float(max(abs(vals[n.input[1]]), abs(vals[n.input[2]])))
        if n.op_type in _PASS_THROUGH or n.op_type == "Round":
            return max(amax(i) for i in (n.input if n.op_type == "Concat" else n.input[:1]))
        return np.inf

    worst = 0.0
    for n in fake.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in vals:
            rows = np.abs(_rows(n, vals[n.input[1]]).astype(np.float64))
            bias = np.abs(vals[n.input[2]]).astype(np.float64) if len(n.input) > 2 and n.input[2] in vals else 0.0
            total = rows.sum(axis=1)
            a = amax(n.input[0])
            sums = (total * a if np.isfinite(a) else np.where(total > 0, np.inf, 0.0)) + bias
            worst = max(worst, float(sums.max()))
    return worst


def _f(vals: dict[str, np.ndarray], name: str) -> np.ndarray:
    return np.abs(vals[name].astype(np.float64))


def _qaffine(n: onnx.NodeProto, d: float, x_scale: str, w: str, w_scale: str, w_zero: str, y_scale: str, vals) -> float:
    """An integer affine node's gain: d input steps move its output by at most
    d * x_scale * max_c sum |w_c - w_zero_c| * w_scale_c / y_scale steps."""
    w_int = vals[w].astype(np.float64)
    wz = vals[w_zero].astype(np.float64) if w_zero in vals else np.zeros(())
    rows = w_int.reshape(w_int.shape[0], -1) if n.op_type == "QLinearConv" else _rows(n, w_int)
    rows = np.abs(rows - (wz.reshape(-1, 1) if wz.ndim else wz))
    gain = rows.sum(axis=1) * np.broadcast_to(_f(vals, w_scale).ravel(), rows.shape[:1])
    return d * float(_f(vals, x_scale).max()) * float(gain.max()) / float(_f(vals, y_scale).min())


# onnxruntime's QOperator nodes: (node, input differences, constants) -> the difference of
# the output before its rounding, in output steps.
_QLINEAR = {
    "QLinearConv": lambda n, d, v: _qaffine(n, d[0], n.input[1], n.input[3], n.input[4], n.input[5], n.input[6], v),
    "QLinearMatMul": lambda n, d, v: _qaffine(n, d[0], n.input[1], n.input[3], n.input[4], n.input[5], n.input[6], v),
    "QGemm": lambda n, d, v: _qaffine(n, d[0], n.input[1], n.input[3], n.input[4], n.input[5], n.input[7], v),
    "QLinearAdd": lambda n, d, v: (d[0] * _f(v, n.input[1]).max() + d[3] * _f(v, n.input[4]).max())
    / _f(v, n.input[6]).min(),
    "QLinearConcat": lambda n, d, v: max(
        d[i] * _f(v, n.input[i + 1]).max() / _f(v, n.input[0]).min() for i in range(2, len(n.input), 3)
    ),
    "QLinearAveragePool": lambda n, d, v: d[0] * _f(v, n.input[1]).max() / _f(v, n.input[3]).min(),
    "QLinearGlobalAveragePool": lambda n, d, v: d[0] * _f(v, n.input[1]).max() / _f(v, n.input[3]).min(),
    "QLinearLeakyRelu": lambda n, d, v: d[0] * _f(v, n.input[1]).max() / _f(v, n.input[3]).min(),
    "QLinearSigmoid": lambda n, d, v: 0.25 * d[0] * _f(v, n.input[1]).max() / _f(v, n.input[3]).min(),
}


def step_bound(proto: onnx.ModelProto, output: str = "y") -> float:
    """How far two engines that each round within one step may put `output` apart (in its
    units: integer steps for a quantized output, real units after a DequantizeLinear or a
    float op): items 2 and 3 above, propagated through a "fake" or QDQ graph. The graph
    inputs are taken as equal; every Round / QuantizeLinear adds one step."""
    vals = _consts(proto)
    d: dict[str, float] = {i.name: 0.0 for i in proto.graph.input}

    def rounded(x: float) -> float:
        # |round(a) - round(b)| <= floor(|a - b| + 1); the 1e-6 covers f32 sums' last bits.
        return float(np.floor(x * (1 + 1e-6) + 1e-6 + 1))

    for n in proto.graph.node:
        if n.output[0] in vals:
            continue
        with np.errstate(invalid="ignore"):
            _step(n, vals, d, rounded)
    return d[output]


def _step(n: onnx.NodeProto, vals: dict, d: dict, rounded) -> None:
    """One node of `step_bound`: its outputs' difference from its inputs'."""
    ins = [d.get(i, 0.0 if i in vals or not i else np.inf) for i in n.input]
    op = n.op_type
    if op in _PASS_THROUGH:
        out = max(ins[:1] if op != "Concat" else ins)
    elif op in _LIPSCHITZ:
        out = ins[0] * _LIPSCHITZ[op]
    elif op == "Round":
        out = rounded(ins[0])
    elif op in ("Mul", "Div") and n.input[1] in vals:
        c = np.abs(vals[n.input[1]].astype(np.float64))
        out = ins[0] * float(c.max() if op == "Mul" else 1.0 / c.min())
    elif op in ("Add", "Sub", "Sum"):
        out = sum(v for i, v in zip(n.input, ins) if i not in vals)
    elif op in ("Conv", "Gemm", "MatMul") and n.input[1] in vals:
        rows = np.abs(_rows(n, vals[n.input[1]]).astype(np.float64))
        out = ins[0] * float(rows.sum(axis=1).max())
    elif op == "QuantizeLinear":
        out = rounded(ins[0] / float(np.abs(vals[n.input[1]]).min()))
    elif op == "DequantizeLinear":
        out = ins[0] * float(np.abs(vals[n.input[1]]).max())
    elif op == "BatchNormalization" and all(i in vals for i in n.input[1:]):
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        gain = np.abs(vals[n.input[1]].astype(np.float64)) / np.sqrt(vals[n.input[4]].astype(np.float64) + eps)
        out = ins[0] * float(gain.max())
    elif op in _QLINEAR:
        out = rounded(_QLINEAR[op](n, ins, vals))
    else:
        out = np.inf
    for o in n.output:
        d[o] = np.inf if np.isnan(out) else out


def examples(n: int) -> int:
    """`n` hypothesis examples under the "ci" profile (25 by default), scaled with the
    profile loaded (x12 under "long"), for tests that set their own count."""
    from hypothesis import settings

    return max(1, n * settings.default.max_examples // 25)
