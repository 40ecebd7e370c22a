"""Random float networks for the PTQ property tests, as a hypothesis strategy.

`networks()` draws small valid ONNX models (opset 13, one input `x` of shape [N, C, H, W] with
a symbolic batch dimension, one output `y`): chains and DAGs of Conv (square kernels 1 or 3
or rectangular ones up to 5, stride 1 to 3, grouped and depthwise, symmetric or asymmetric
pads, with or without bias), Relu / LeakyRelu / Clip(0, 6), MaxPool / AveragePool /
GlobalAveragePool, BatchNormalization right after a Conv (folded by `prepare_network`),
residual Adds (identity shortcut, conv shortcut, or a shortcut from any earlier tensor of
the same shape, the network input included), Concats of branches, float islands (Sigmoid,
Tanh, a Mul by a constant, a Softmax over the channels: ops the PTQ runs on real values
between a dequantization and a requantization), and an optional head: Flatten or Reshape,
then one or two Gemm / MatMul layers (a Relu between them), maybe a Softmax.

Hypothesis draws the structure and one seed; the weights come from numpy with that seed.
Each affine layer draws a weight "kind": normal, an all-zero output channel, small (1e-3),
tiny (1e-8), large (1e3), huge (1e4) or all zero, so that degenerate scales are exercised
too (`degenerate=False` keeps only normal weights, for properties that need a well-behaved
network). `exact_sums=True` scales every bias (and BatchNormalization shift) with the
magnitude of its layer's output, so that in integer units it stays far below 2^22 and
every f32 sum of the quantized model is exact (a 1e-8 weight next to a bias of 0.5 puts the
bias near 2^31 units): the networks on which two engines must agree bit for bit.

`calibration_data` draws inputs of a kind (INPUT_KINDS): N(0, 1), non-negative, or exact
powers of two (with zeros), which put calibration maxima and products on exact binary values.

Graphs stay small (<= ~14 nodes, spatial <= 8x8, <= 8 channels per layer, 12 after a
Concat) so that one example runs in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import zoo

OPSET = 13
MAX_CHANNELS = 8
MAX_CONCAT_CHANNELS = 12
# No new block once the graph has this many nodes (a block adds up to ~10).
MAX_NODES_BEFORE_BLOCK = 8

WEIGHT_KINDS = ("normal", "normal", "normal", "normal", "zero_channel", "small", "tiny", "large", "huge", "zero")
# Magnitude multipliers of the weight kinds that scale the whole tensor.
WEIGHT_SCALES = {"small": 1e-3, "tiny": 1e-8, "large": 1e3, "huge": 1e4}


@dataclass
class Tensor:
    name: str
    c: int
    h: int
    w: int
    # Rough magnitude of the values (the input's is 1), for `exact_sums` biases.
    mag: float = 1.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.c, self.h, self.w)


@dataclass
class Builder:
    """Accumulates nodes and initializers; `rng` makes the weights."""

    rng: np.random.Generator
    degenerate: bool
    exact_sums: bool = False
    head_mag: float = 1.0
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    counter: int = 0

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(op.lower() + "_")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(op + "_n"), **attrs))
        return out

    def bias_scale(self, mag: float) -> float:
        """Biases are drawn in [-0.5, 0.5] times this: 1, or the output's magnitude."""
        return mag if self.exact_sums else 1.0

    def weights(self, shape: tuple[int, ...], fan_in: int, kind: str) -> np.ndarray:
        w = self.rng.uniform(-1.0, 1.0, size=shape) * np.sqrt(3.0 / max(fan_in, 1))
        if kind == "zero_channel":
            w[self.rng.integers(shape[0])] = 0.0
        elif kind in WEIGHT_SCALES:
            w *= WEIGHT_SCALES[kind]
        elif kind == "zero":
            w[...] = 0.0
        return w.astype(np.float32)


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _conv_out2(size: int, k: int, s: int, p_begin: int, p_end: int) -> int:
    return (size + p_begin + p_end - k) // s + 1


@st.composite
def _weight_kind(draw, degenerate: bool) -> str:
    return draw(st.sampled_from(WEIGHT_KINDS)) if degenerate else "normal"


def _conv(draw, b: Builder, x: Tensor, *, co=None, k=None, s=None, p=None, groups=None, bn=None) -> Tensor:
    """A Conv (optionally followed by a BatchNormalization) reading `x`. `k`, `s` and `p`
    given: a square kernel, equal strides and symmetric pads (shape-preserving blocks need
    them); otherwise drawn, rectangular and asymmetric included."""
    if k is None:
        kh, kw = (draw(st.sampled_from([1, 3])),) * 2 if draw(st.booleans()) else (None, None)
        if kh is None:
            kh, kw = draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 2, 3, 5]))
        # Pads (top, left, bottom, right), each below its kernel side.
        pads = [draw(st.integers(0, min(kk - 1, 2))) for kk in (kh, kw, kh, kw)] if p is None else [p] * 4
    else:
        kh = kw = k
        pads = [draw(st.sampled_from([0, 1])) if k == 3 else 0] * 4 if p is None else [p] * 4
    if kh > x.h + pads[0] + pads[2] or kw > x.w + pads[1] + pads[3]:
        kh = kw = 1
        pads = [0, 0, 0, 0]
    if s is None:
        s = draw(st.sampled_from([1, 1, 2, 3]))
    if groups is None:
        style = draw(st.sampled_from(["dense", "dense", "depthwise", "grouped"]))
        divisors = [g for g in range(1, x.c + 1) if x.c % g == 0 and (co is None or co % g == 0)]
        if style == "depthwise" and x.c > 1 and x.c in divisors:
            groups = x.c
        elif style == "grouped":
            groups = draw(st.sampled_from(divisors))
        else:
            groups = 1
    if co is None:
        if groups == 1:
            co = draw(st.integers(1, MAX_CHANNELS))
        else:
            choices = [m * groups for m in range(1, MAX_CHANNELS // groups + 1)]
            co = draw(st.sampled_from(choices))
    assert co % groups == 0 and x.c % groups == 0
    kind = draw(_weight_kind(b.degenerate))
    fan_in = (x.c // groups) * kh * kw
    w = b.const("W", b.weights((co, x.c // groups, kh, kw), fan_in, kind))
    inputs = [x.name, w]
    mag = 0.0 if kind == "zero" else x.mag * WEIGHT_SCALES.get(kind, 1.0)
    if draw(st.booleans()):
        bias = b.rng.uniform(-0.5, 0.5, size=co) * b.bias_scale(mag)
        if kind == "zero":
            bias = np.zeros(co)
        inputs.append(b.const("B", bias))
    y = b.node("Conv", inputs, kernel_shape=[kh, kw], strides=[s, s], pads=pads, group=groups)
    out = Tensor(y, co, _conv_out2(x.h, kh, s, pads[0], pads[2]), _conv_out2(x.w, kw, s, pads[1], pads[3]), mag)
    if bn is None:
        bn = draw(st.integers(0, 3)) == 0
    if bn:
        scale = b.rng.uniform(0.5, 1.5, size=co)
        shift = b.rng.uniform(-0.5, 0.5, size=co) * b.bias_scale(mag)
        mean = b.rng.uniform(-0.5, 0.5, size=co) * b.bias_scale(mag)
        var = b.rng.uniform(0.5, 1.5, size=co)
        params = [b.const(n, v) for n, v in zip(("bn_scale", "bn_b", "bn_mean", "bn_var"), (scale, shift, mean, var))]
        out = Tensor(b.node("BatchNormalization", [out.name, *params], epsilon=1e-5), co, out.h, out.w, mag)
    return out


def _activation(draw, b: Builder, x: Tensor) -> Tensor:
    kind = draw(st.sampled_from(["Relu", "LeakyRelu", "Clip"]))
    if kind == "Relu":
        y = b.node("Relu", [x.name])
    elif kind == "LeakyRelu":
        y = b.node("LeakyRelu", [x.name], alpha=draw(st.sampled_from([0.01, 0.1, 0.25])))
    else:
        y = b.node("Clip", [x.name, b.const("clip_lo", np.array(0.0)), b.const("clip_hi", np.array(6.0))])
    return Tensor(y, x.c, x.h, x.w, x.mag)


def _pool(draw, b: Builder, x: Tensor) -> Tensor:
    kinds = ["GlobalAveragePool"]
    if min(x.h, x.w) >= 2:
        kinds += ["MaxPool", "AveragePool"]
    kind = draw(st.sampled_from(kinds))
    if kind == "GlobalAveragePool":
        return Tensor(b.node(kind, [x.name]), x.c, 1, 1, x.mag)
    k = draw(st.sampled_from([2, 3])) if min(x.h, x.w) >= 3 else 2
    s = draw(st.sampled_from([1, 2]))
    p = draw(st.sampled_from([0, 1])) if k == 3 else 0
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
    if kind == "AveragePool":
        attrs["count_include_pad"] = draw(st.sampled_from([0, 1]))
    y = b.node(kind, [x.name], **attrs)
    return Tensor(y, x.c, _conv_out(x.h, k, s, p), _conv_out(x.w, k, s, p), x.mag)


def _residual(draw, b: Builder, x: Tensor, history: list[Tensor]) -> Tensor:
    style = draw(st.sampled_from(["identity", "conv", "earlier"]))
    if style == "identity" or (style == "earlier" and not any(t.shape == x.shape for t in history)):
        # x -> conv3x3 [-> act -> conv3x3] -> Add(x, .)
        main = _conv(draw, b, x, co=x.c, k=3, s=1, p=1)
        if draw(st.booleans()):
            main = _activation(draw, b, main)
            main = _conv(draw, b, main, co=x.c, k=3, s=1, p=1, groups=1)
        operands = [x.name, main.name] if draw(st.booleans()) else [main.name, x.name]
        return Tensor(b.node("Add", operands), x.c, x.h, x.w, max(x.mag, main.mag))
    if style == "conv":
        s = draw(st.sampled_from([1, 2]))
        co = draw(st.integers(1, MAX_CHANNELS))
        main = _conv(draw, b, x, co=co, k=3, s=s, p=1, groups=1)
        short = _conv(draw, b, x, co=co, k=1, s=s, p=0, groups=1)
        assert main.shape == short.shape, (main, short)
        return Tensor(b.node("Add", [main.name, short.name]), co, main.h, main.w, max(main.mag, short.mag))
    # The current tensor plus an earlier one of the same shape (a long shortcut, maybe from
    # the network input).
    other = draw(st.sampled_from([t for t in history if t.shape == x.shape]))
    return Tensor(b.node("Add", [other.name, x.name]), x.c, x.h, x.w, max(other.mag, x.mag))


def _concat(draw, b: Builder, x: Tensor) -> Tensor:
    n = draw(st.integers(2, 3))
    parts: list[Tensor] = []
    for _ in range(n):
        room = MAX_CONCAT_CHANNELS - sum(t.c for t in parts)
        kinds = ["pool"] if room < 1 else ["conv", "conv", "identity", "pool"]
        kinds = [k for k in kinds if k == "conv" or x.c <= room] or ["conv"]
        kind = draw(st.sampled_from(kinds))
        if kind == "identity":
            parts.append(x)
        elif kind == "pool" and x.c <= room:
            attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
            parts.append(Tensor(b.node("MaxPool", [x.name], **attrs), x.c, x.h, x.w, x.mag))
        else:
            co = draw(st.integers(1, max(1, min(MAX_CHANNELS, room))))
            k = draw(st.sampled_from([1, 3]))
            part = _conv(draw, b, x, co=co, k=k, s=1, p=1 if k == 3 else 0)
            if draw(st.booleans()):
                part = _activation(draw, b, part)
            parts.append(part)
        if sum(t.c for t in parts) >= MAX_CONCAT_CHANNELS:
            break
    if len(parts) == 1:
        return parts[0]
    mag = max(t.mag for t in parts)
    return Tensor(b.node("Concat", [t.name for t in parts], axis=1), sum(t.c for t in parts), x.h, x.w, mag)


def _island(draw, b: Builder, x: Tensor) -> Tensor:
    """An op the PTQ keeps in float (not scale-invariant): Sigmoid, Tanh, a Mul by a constant
    (scalar or per channel) or a Softmax over the channels."""
    kind = draw(st.sampled_from(["Sigmoid", "Tanh", "Mul", "Softmax"]))
    if kind == "Mul":
        per_channel = draw(st.booleans())
        c = b.rng.choice([-1.5, 0.25, 0.5, 2.0, 3.0], size=(x.c, 1, 1) if per_channel else ())
        return Tensor(b.node("Mul", [x.name, b.const("k", c)]), x.c, x.h, x.w, x.mag * float(np.abs(c).max()))
    attrs = {"axis": 1} if kind == "Softmax" else {}
    return Tensor(b.node(kind, [x.name], **attrs), x.c, x.h, x.w, 1.0 if kind in ("Sigmoid", "Softmax") else x.mag)


def _dense(draw, b: Builder, x: str, features: int, k: int) -> str:
    """Gemm (transB 0 or 1, with or without bias) or MatMul with a constant [features, k]."""
    kind = draw(_weight_kind(b.degenerate))
    mag = 0.0 if kind == "zero" else b.head_mag * WEIGHT_SCALES.get(kind, 1.0)
    b.head_mag = mag
    w = b.weights((k, features), features, kind)
    if draw(st.sampled_from(["gemm", "gemm", "matmul"])) == "matmul":
        return b.node("MatMul", [x, b.const("Wm", w.T)])
    trans_b = draw(st.sampled_from([0, 1]))
    inputs = [x, b.const("Wg", w if trans_b else w.T)]
    if draw(st.booleans()):
        inputs.append(b.const("Bg", b.rng.uniform(-0.5, 0.5, size=k) * b.bias_scale(mag)))
    return b.node("Gemm", inputs, transB=trans_b)


@st.composite
def networks(
    draw,
    max_blocks: int = 4,
    degenerate: bool = True,
    head: bool | None = None,
    exact_sums: bool = False,
    islands: bool = True,
) -> onnx.ModelProto:
    """A random valid float network as an onnx.ModelProto (input `x`, output `y`)."""
    seed = draw(st.integers(0, 2**32 - 1))
    b = Builder(np.random.default_rng(seed), degenerate, exact_sums)
    c = draw(st.integers(1, 4))
    hw = draw(st.integers(3, 8))
    x = Tensor("x", c, hw, hw)
    history = [x]
    n_blocks = draw(st.integers(1, max_blocks))
    for _ in range(n_blocks):
        if len(b.nodes) >= MAX_NODES_BEFORE_BLOCK:
            break
        kinds = ["conv", "conv", "act", "pool", "residual", "concat"] + (["island"] if islands else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "conv":
            x = _conv(draw, b, x)
            if draw(st.booleans()):
                x = _activation(draw, b, x)
        elif kind == "act":
            x = _activation(draw, b, x)
        elif kind == "pool":
            x = _pool(draw, b, x)
        elif kind == "residual":
            x = _residual(draw, b, x, history)
        elif kind == "island":
            x = _island(draw, b, x)
        else:
            x = _concat(draw, b, x)
        if x.c > MAX_CHANNELS:
            # Keep the channels down after a wide Concat.
            x = _conv(draw, b, x, co=draw(st.integers(1, MAX_CHANNELS)), k=1, s=1, p=0, groups=1)
        history.append(x)
    if head if head is not None else draw(st.booleans()):
        features = x.c * x.h * x.w
        if draw(st.booleans()):
            flat = b.node("Flatten", [x.name], axis=1)
        else:
            shape = b.fresh("shape")
            b.inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), shape))
            flat = b.node("Reshape", [x.name, shape])
        b.head_mag = x.mag
        for layer in range(draw(st.integers(1, 2))):
            if layer:
                flat = b.node("Relu", [flat])
            k = draw(st.integers(1, 6))
            flat = _dense(draw, b, flat, features, k)
            features = k
        if islands and draw(st.integers(0, 3)) == 0:
            flat = b.node("Softmax", [flat], axis=1)
        x = Tensor(flat, features, 1, 1)
        out_shape = ["N", features]
    else:
        out_shape = ["N", x.c, x.h, x.w]
    # The graph output is always called "y", written by the last node.
    last = b.nodes[-1]
    assert last.output[0] == x.name, "the last node writes the current tensor"
    last.output[0] = "y"
    graph = helper.make_graph(
        b.nodes,
        "ptq_random",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=b.inits,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="oxiquant-tests")
    model.ir_version = 8
    return model


def input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """[C, H, W] of the model's input."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(int(d.dim_value) for d in dims[1:])


INPUT_KINDS = ("normal", "nonnegative", "powers_of_two")


def calibration_data(model: onnx.ModelProto, rng: np.random.Generator, n: int = 16, kind: str = "normal") -> np.ndarray:
    """`n` inputs of `kind`: N(0, 1); |N(0, 1)| (a non-negative input, which the PTQ may
    quantize unsigned); or +-2^k for k in -4..2 and zeros (exact binary values: calibration
    maxima that are powers of two, products on exact grid points)."""
    shape = (n, *input_shape(model))
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "nonnegative":
        x = np.abs(rng.standard_normal(shape))
    elif kind == "powers_of_two":
        x = rng.choice([-1.0, 0.0, 1.0], size=shape) * 2.0 ** rng.integers(-4, 3, size=shape)
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


# -- fixed example models (used by the API and export tests) -----------------------------
VI = helper.make_tensor_value_info


def init(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def small_cnn(seed: int = 0, middle: str | None = None) -> onnx.ModelProto:
    """Conv+BN+Relu, a residual block, GlobalAveragePool, Flatten, Gemm: [N,3,8,8] -> [N,5].
    `middle` (e.g. "Sigmoid") inserts that op after the first Relu."""
    g = np.random.default_rng(seed)

    def w(*shape):
        return g.uniform(-1, 1, shape) * np.sqrt(3.0 / np.prod(shape[1:]))

    inits = [
        init("w1", w(4, 3, 3, 3)),
        init("b1", g.uniform(-0.2, 0.2, 4)),
        init("bn_s", g.uniform(0.5, 1.5, 4)),
        init("bn_b", g.uniform(-0.5, 0.5, 4)),
        init("bn_m", g.uniform(-0.5, 0.5, 4)),
        init("bn_v", g.uniform(0.5, 1.5, 4)),
        init("w2", w(4, 4, 3, 3)),
        init("b2", g.uniform(-0.2, 0.2, 4)),
        init("wg", w(5, 4)),
        init("bg", g.uniform(-0.2, 0.2, 5)),
    ]
    r1 = "r1"
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
    ]
    if middle:
        nodes.append(helper.make_node(middle, ["r1"], ["mid"], name="middle"))
        r1 = "mid"
    nodes += [
        helper.make_node("Conv", [r1, "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", [r1, "c2"], ["res"], name="add"),
        helper.make_node("Relu", ["res"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["y"], transB=1, name="fc"),
    ]
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 3, 8, 8])], [VI("y", TensorProto.FLOAT, ["N", 5])], inits
    )


def dead_conv_cnn() -> onnx.ModelProto:
    """small_cnn with conv1's weights and bias all zero and no BatchNormalization: conv1's
    output, its Relu and the residual branch are constantly 0 on any input (a zero weight
    maximum to normalize by, a calibration range of 0)."""
    proto = small_cnn()
    for t in proto.graph.initializer:
        if t.name in ("w1", "b1"):
            t.CopyFrom(init(t.name, np.zeros(numpy_helper.to_array(t).shape)))
    # Drop the BatchNormalization (and its parameters) so that conv1's output stays 0.
    nodes = [n for n in proto.graph.node if n.op_type != "BatchNormalization"]
    nodes[1].input[0] = "c1"  # relu1 reads the conv directly
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    kept = [t for t in proto.graph.initializer if not t.name.startswith("bn_")]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto


def pool_concat_model() -> onnx.ModelProto:
    """Concat(MaxPool(x), x): the export requantizes each branch with DequantizeLinear ->
    QuantizeLinear, and MSE clipping makes the branch factors ratios such as 197/198."""
    h = helper
    nodes = [
        h.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool"),
        h.make_node("Concat", ["p", "x"], ["y"], axis=1, name="concat"),
    ]
    x = h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 7, 7])
    y = h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 7, 7])
    return h.make_model(h.make_graph(nodes, "pool_concat", [x], [y]), opset_imports=[h.make_opsetid("", 13)])


def on_input_grid(q, x: np.ndarray) -> np.ndarray:
    """`x` moved onto the input quantizer's grid of `q`, so that the quantizer's own rounding
    (onnxruntime divides by the scale in f32, oxiquant multiplies exactly) has no tie to split."""
    step = next(a["step"] for a in q.quant_info["activations"] if a["role"] == "input")
    return (np.round(x / step) * step).astype(np.float32)


def two_input_model(seed: int = 0) -> onnx.ModelProto:
    """conv(a) + conv(b) -> Relu: inputs 'a' and 'b' of [N,2,6,6]."""
    g = np.random.default_rng(seed)
    inits = [init("wa", g.uniform(-1, 1, (3, 2, 3, 3))), init("wb", g.uniform(-1, 1, (3, 2, 1, 1)))]
    nodes = [
        helper.make_node("Conv", ["a", "wa"], ["ca"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Conv", ["b", "wb"], ["cb"], name="conv_b"),
        helper.make_node("Add", ["ca", "cb"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    ins = [VI("a", TensorProto.FLOAT, ["N", 2, 6, 6]), VI("b", TensorProto.FLOAT, ["N", 2, 6, 6])]
    return zoo.make_model(nodes, ins, [VI("y", TensorProto.FLOAT, ["N", 3, 6, 6])], inits)


def tiny_weights_large_bias() -> onnx.ModelProto:
    """Conv with 1e-8 weights and a bias of 0.5 -> Relu: in integer units the bias is about
    1e8 times the weights' unit, past int32. The quantizer clamped it to `i32::MAX as f32`,
    which is 2^31 (f32 rounds up) and does not fit an int32: the QDQ export failed. [N,2,6,6]
    -> [N,3,6,6]."""
    g = np.random.default_rng(6)
    inits = [init("w", 1e-8 * g.uniform(-1, 1, (3, 2, 3, 3))), init("b", [0.5, -0.5, 0.25])]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return zoo.make_model(
        nodes, [VI("x", TensorProto.FLOAT, ["N", 2, 6, 6])], [VI("y", TensorProto.FLOAT, ["N", 3, 6, 6])], inits
    )


def max_integer_bias(q) -> float:
    """Largest |bias| of a quantized model's affine nodes, in integer units. A sum computed in
    f32 (the fake-quantized graph, onnxruntime) is exact while it stays below 2^24 (the
    `EXACT_F32_BOUND` of rust/oxiquant-core/src/kernels/requant.rs): a bias below 2^22
    leaves 3 * 2^22 for the products of the generated layers. `reference.integer_sum_bound`
    is the exact condition (sum |W| * max |x| + |bias| below 2^24); the tests use that."""
    proto = q.to_onnx("fake")
    inits = {i.name: i for i in proto.graph.initializer}
    biases = [
        np.abs(onnx.numpy_helper.to_array(inits[n.input[2]])).max()
        for n in proto.graph.node
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits
    ]
    return float(max(biases, default=0.0))


EXACT_F32_SUMS = 2.0**22


def with_exact_quantizer_products(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a "fake" export whose quantizers (Mul by a constant factor, then Round)
    multiply in double: the product of two f32 values is exact in f64, so onnxruntime then
    rounds the exact product, as the integer engine's requantization does, where the export
    as written rounds the f32 product first (docs/integer-engine.md)."""
    out = onnx.ModelProto.FromString(proto.SerializeToString())
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    rewritten: dict[str, list[onnx.NodeProto]] = {}
    for rnd in g.node:
        mul = producer.get(rnd.input[0]) if rnd.op_type == "Round" else None
        if mul is None or mul.op_type != "Mul" or mul.input[1] not in inits:
            continue
        factor = numpy_helper.to_array(inits[mul.input[1]]).astype(np.float64)
        f64 = f"{mul.name}_factor_f64"
        g.initializer.append(numpy_helper.from_array(factor, f64))
        x64, p64, r64 = (f"{mul.output[0]}_x_f64", f"{mul.output[0]}_f64", f"{rnd.output[0]}_f64")
        rewritten[mul.output[0]] = [
            helper.make_node("Cast", [mul.input[0]], [x64], to=TensorProto.DOUBLE, name=f"{mul.name}_to_f64"),
            helper.make_node("Mul", [x64, f64], [p64], name=mul.name),
        ]
        rewritten[rnd.output[0]] = [
            helper.make_node("Round", [p64], [r64], name=rnd.name),
            helper.make_node("Cast", [r64], [rnd.output[0]], to=TensorProto.FLOAT, name=f"{rnd.name}_to_f32"),
        ]
    nodes = [m for n in g.node for m in rewritten.get(n.output[0], [n])]
    del g.node[:]
    g.node.extend(nodes)
    return out


def ends_in_float_island(q, proto: onnx.ModelProto, output: str = "y") -> bool:
    """Whether `output` of quantized `q` is written by an op kept in float (a trailing
    Softmax): real values that no quantizer rounds, computed in f32 by each engine from the
    same integers (a few ulps apart: each dequantizes in its own f32 order)."""
    last = next(n.name for n in proto.graph.node if output in n.output)
    return last in {name for name, _, _ in q.quant_info["float_nodes"]}
