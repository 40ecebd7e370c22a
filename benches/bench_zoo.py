"""Model zoo throughput: oxiquant fp32 and int8 against onnxruntime fp32 and onnxruntime's
fastest int8 form of the same model, batch 1 and 32, one command.

    python benches/bench_zoo.py [--quick] [--threads 2] [--seconds 2] [--calib 32]
                                [--models NAME ...] [--write]

Models: ResNet-20 (CIFAR-10) and MobileNetV2 (ImageNet) from ../shared/data when present
(real weights, real calibration images); an EfficientNet-Lite0-style net (3x3 and 5x5
depthwise, strides 1 and 2, ReLU6 as Clip, inverted residuals) generated here with
onnx.helper; ResNet-50, ShuffleNet (v1: grouped 1x1 convolutions, channel shuffle, depthwise
3x3) and SqueezeNet from onnx's own `light` models (the real architectures with seeded
random weights); a YOLOv8n-style detector at 320x320 (Conv-SiLU, C2f, SPPF, the FPN/PAN neck
with nearest Resize, the decoupled head and its DFL / box decode; calibration images resized)
and a BERT-style encoder (4 layers, hidden 256, sequence 128, int64 ids and mask; random
tokens and lengths), both generated here with seeded random weights. Nothing is downloaded.

Columns: oxiquant fp32 (its float engine) and int8 (`quantize_network(model, 8, calib)` on
its integer engine); onnxruntime fp32; onnxruntime's int8 from its own `quantize_static`
(same calibration images, MinMax, per-channel weights), QDQ and QOperator, each U8S8 and
S8S8: the fastest of the four at that batch (a short alternating run picks it); and
oxiquant's QDQ (uint8 weights, the default: exact on every CPU; and int8 weights, which
onnxruntime's AVX2 u8 x s8 kernels run faster but can saturate with 8-bit weights) and
QOperator exports run in onnxruntime. The 7-bit columns: `quantize_network(model, 8, calib,
weight_bits=7)` on the integer engine, and its QDQ export with int8 weights in onnxruntime
(u8 x s8 pair sums cannot leave i16 on 7-bit weights, so both engines' AVX2 byte kernels
are exact without VNNI; onnxruntime's `reduce_range`). A model oxiquant cannot export in a form prints the
error and leaves that column empty. Every configuration alternates
blocks of all its engines in one process (`bench_fp32.timed_rounds`), each engine on
`--threads` threads; the ratios are taken within that run. `--quick`: fewer seconds and
calibration images, batch 32 only for the small models. With --write the table replaces the
zoo section of benches/RESULTS.md."""

from __future__ import annotations

import argparse
import itertools
import os

# numpy's OpenBLAS threads spin after numpy work and take cycles from both engines' threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import platform
import sys
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_fp32 import cpu_features, cpu_model, run_stamp, timed_rounds, with_dynamic_batch, write_section
from bench_int8 import cifar, session

import oxiquant

import zoo

BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"


def shared_data() -> Path:
    """`shared/data` beside the project, or beside a folder holding it (a git worktree)."""
    for p in Path(__file__).resolve().parents[1].parents:
        if (p / "shared" / "data").is_dir():
            return p / "shared" / "data"
    return zoo.SHARED_DATA


zoo.SHARED_DATA = shared_data()  # bench_int8.cifar reads it too
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def imagenet(n: int) -> np.ndarray:
    d = np.load(zoo.SHARED_DATA / "imagenet_cal200.npz")
    x = (d["images"][:n].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def efficientnet_lite(seed: int = 0) -> onnx.ModelProto:
    """EfficientNet-Lite0's layout (no squeeze-excite, ReLU6, BatchNorm folded into the
    convolutions' biases) with seeded random weights, input [N, 3, 224, 224]."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "relu6_lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "relu6_hi"),
    ]
    ids = itertools.count()

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        i = next(ids)
        fan_in = cin // group * k * k
        a = np.sqrt((6.0 if relu6 else 3.0) / fan_in)
        w = rng.uniform(-a, a, (cout, cin // group, k, k)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, cout).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")])
        y = f"conv{i}"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"w{i}", f"b{i}"],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=group,
            )
        )
        if relu6:
            nodes.append(helper.make_node("Clip", [y, "relu6_lo", "relu6_hi"], [f"relu{i}"]))
            y = f"relu{i}"
        return y

    # (expansion, channels, repeats, stride, kernel) per stage, as EfficientNet-Lite0.
    stages = [
        (1, 16, 1, 1, 3),
        (6, 24, 2, 2, 3),
        (6, 40, 2, 2, 5),
        (6, 80, 3, 2, 3),
        (6, 112, 3, 1, 5),
        (6, 192, 4, 2, 5),
        (6, 320, 1, 1, 3),
    ]
    x, c = conv("input", 3, 32, 3, 2), 32
    for expand, cout, repeats, stride, k in stages:
        for r in range(repeats):
            s = stride if r == 0 else 1
            h = conv(x, c, c * expand, 1) if expand != 1 else x
            h = conv(h, c * expand, c * expand, k, s, group=c * expand)
            h = conv(h, c * expand, cout, 1, relu6=False)
            if s == 1 and c == cout:
                i = next(ids)
                nodes.append(helper.make_node("Add", [h, x], [f"add{i}"]))
                h = f"add{i}"
            x, c = h, cout
    x = conv(x, c, 1280, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    a = np.sqrt(3.0 / 1280)
    inits += [
        numpy_helper.from_array(rng.uniform(-a, a, (1000, 1280)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"),
    ]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0_style",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Builder:
    """Nodes and seeded random initializers for the generated nets."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.ids = itertools.count()

    def const(self, value: np.ndarray, base: str = "c") -> str:
        name = f"{base}{next(self.ids)}"
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        i = next(self.ids)
        outs = [f"{op.lower()}{i}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{i}", **attrs))
        return outs

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        return self.node(op, inputs, **attrs)[0]


def yolov8_style(size: int = 320, seed: int = 0) -> onnx.ModelProto:
    """YOLOv8n's layout with seeded random weights, input [N, 3, size, size], output
    [N, 84, anchors] (boxes as cx, cy, w, h in pixels, then 80 class scores): Conv-BN-SiLU
    blocks (BatchNorm folded into the biases, SiLU as x * Sigmoid(x), as exported), C2f
    (Split, bottlenecks, Concat), SPPF (three 5x5 MaxPools), the FPN/PAN neck (Resize nearest
    x2 and Concat), and the decoupled head with its decode: per level Concat of box and class
    maps, Reshape and Concat over levels, Split, DFL (Reshape, Transpose, Softmax, a 1x1 Conv
    with weights 0..15), distances to boxes with the anchor points and strides, Sigmoid."""
    b = _Builder(seed)

    def conv(x: str, cin: int, cout: int, k: int = 1, s: int = 1, act: bool = True) -> str:
        a = np.sqrt(3.0 / (cin * k * k))
        w = b.const(b.rng.uniform(-a, a, (cout, cin, k, k)).astype(np.float32), "w")
        bias = b.const(b.rng.uniform(-0.2, 0.2, cout).astype(np.float32), "b")
        y = b.op("Conv", [x, w, bias], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        return b.op("Mul", [y, b.op("Sigmoid", [y])]) if act else y

    def c2f(x: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
        c = cout // 2
        y = conv(x, cin, 2 * c)
        parts = b.node("Split", [y, b.const(np.array([c, c], np.int64), "split")], n_out=2, axis=1)
        for _ in range(n):
            h = conv(conv(parts[-1], c, c, 3), c, c, 3)
            parts.append(b.op("Add", [parts[-1], h]) if shortcut else h)
        return conv(b.op("Concat", parts, axis=1), (2 + n) * c, cout)

    def sppf(x: str, cin: int, cout: int) -> str:
        ys = [conv(x, cin, cin // 2)]
        for _ in range(3):
            ys.append(b.op("MaxPool", [ys[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
        return conv(b.op("Concat", ys, axis=1), 2 * cin, cout)

    scales = b.const(np.array([1, 1, 2, 2], np.float32), "scales")

    def up(x: str) -> str:
        return b.op("Resize", [x, "", scales], mode="nearest")

    x = conv("images", 3, 16, 3, 2)
    x = conv(x, 16, 32, 3, 2)
    x = c2f(x, 32, 32, 1, True)
    x = conv(x, 32, 64, 3, 2)
    p3 = c2f(x, 64, 64, 2, True)
    x = conv(p3, 64, 128, 3, 2)
    p4 = c2f(x, 128, 128, 2, True)
    x = conv(p4, 128, 256, 3, 2)
    x = c2f(x, 256, 256, 1, True)
    p5 = sppf(x, 256, 256)
    h4 = c2f(b.op("Concat", [up(p5), p4], axis=1), 384, 128, 1, False)
    n3 = c2f(b.op("Concat", [up(h4), p3], axis=1), 192, 64, 1, False)
    n4 = c2f(b.op("Concat", [conv(n3, 64, 64, 3, 2), h4], axis=1), 192, 128, 1, False)
    n5 = c2f(b.op("Concat", [conv(n4, 128, 128, 3, 2), p5], axis=1), 384, 256, 1, False)
    nc, reg = 80, 16
    flat = []
    anchors, strides = [], []
    for feat, c, stride in ((n3, 64, 8), (n4, 128, 16), (n5, 256, 32)):
        box = conv(conv(conv(feat, c, 64, 3), 64, 64, 3), 64, 4 * reg, 1, act=False)
        cls = conv(conv(conv(feat, c, 80, 3), 80, 80, 3), 80, nc, 1, act=False)
        level = b.op("Concat", [box, cls], axis=1)
        flat.append(b.op("Reshape", [level, b.const(np.array([0, 4 * reg + nc, -1], np.int64), "shape")]))
        g = size // stride
        yy, xx = np.meshgrid(np.arange(g) + 0.5, np.arange(g) + 0.5, indexing="ij")
        anchors.append(np.stack([xx.ravel(), yy.ravel()]))
        strides.append(np.full(g * g, stride))
    allp = b.op("Concat", flat, axis=2)
    box, cls = b.node("Split", [allp, b.const(np.array([4 * reg, nc], np.int64), "split")], n_out=2, axis=1)
    # DFL: the expected distance under a softmax over 16 bins, as a 1x1 Conv.
    d = b.op("Reshape", [box, b.const(np.array([0, 4, reg, -1], np.int64), "shape")])
    d = b.op("Softmax", [b.op("Transpose", [d], perm=[0, 2, 1, 3])], axis=1)
    bins = b.const(np.arange(reg, dtype=np.float32).reshape(1, reg, 1, 1), "dfl")
    d = b.op("Reshape", [b.op("Conv", [d, bins]), b.const(np.array([0, 4, -1], np.int64), "shape")])
    lt, rb = b.node("Split", [d, b.const(np.array([2, 2], np.int64), "split")], n_out=2, axis=1)
    anchor = b.const(np.concatenate(anchors, 1)[None].astype(np.float32), "anchors")
    x1y1 = b.op("Sub", [anchor, lt])
    x2y2 = b.op("Add", [anchor, rb])
    cxy = b.op("Div", [b.op("Add", [x1y1, x2y2]), b.const(np.array(2.0, np.float32), "two")])
    wh = b.op("Sub", [x2y2, x1y1])
    stride_t = b.const(np.concatenate(strides)[None, None].astype(np.float32), "strides")
    boxes = b.op("Mul", [b.op("Concat", [cxy, wh], axis=1), stride_t])
    b.nodes.append(helper.make_node("Concat", [boxes, b.op("Sigmoid", [cls])], ["output0"], axis=1))
    n_anchors = sum(len(s) for s in strides)
    graph = helper.make_graph(
        b.nodes,
        "yolov8n_style",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 4 + nc, n_anchors])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def bert_style(seq: int = 128, hidden: int = 256, layers: int = 4, heads: int = 4, vocab: int = 8192, seed: int = 0):
    """A BERT encoder's layout with seeded random weights: inputs input_ids and attention_mask
    (int64 [N, seq]), word + position + token-type embeddings (Gather), LayerNormalization,
    `layers` layers of multi-head attention (MatMul, Reshape/Transpose to heads, scaled
    scores plus the additive mask, Softmax) and a Gelu FFN (x * (1 + Erf(x / sqrt 2)) / 2,
    4x hidden), each with residual Add and LayerNormalization; output last_hidden_state
    [N, seq, hidden]. Opset 17 (LayerNormalization)."""
    b = _Builder(seed)
    head = hidden // heads

    def weight(shape: tuple[int, ...], scale: float = 0.05) -> str:
        return b.const((b.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def linear(x: str, cin: int, cout: int) -> str:
        y = b.op("MatMul", [x, weight((cin, cout), 1.0 / np.sqrt(cin))])
        return b.op("Add", [y, b.const(b.rng.uniform(-0.05, 0.05, cout).astype(np.float32), "b")])

    def layer_norm(x: str) -> str:
        g = b.const((1 + 0.1 * b.rng.standard_normal(hidden)).astype(np.float32), "gamma")
        beta = b.const((0.05 * b.rng.standard_normal(hidden)).astype(np.float32), "beta")
        return b.op("LayerNormalization", [x, g, beta], axis=-1, epsilon=1e-12)

    words = b.op("Gather", [weight((vocab, hidden)), "input_ids"])
    x = b.op("Add", [words, weight((1, seq, hidden))])  # positions 0..seq-1 + token type 0
    x = layer_norm(x)
    mask = b.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = b.op("Mul", [b.op("Sub", [b.const(np.array(1.0, np.float32), "one"), mask]),
                        b.const(np.array(-10000.0, np.float32), "big")])  # fmt: skip
    mask = b.op("Unsqueeze", [mask, b.const(np.array([1, 2], np.int64), "axes")])
    to_heads = b.const(np.array([0, 0, heads, head], np.int64), "shape")
    to_hidden = b.const(np.array([0, 0, hidden], np.int64), "shape")
    for _ in range(layers):
        q = b.op("Transpose", [b.op("Reshape", [linear(x, hidden, hidden), to_heads])], perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [linear(x, hidden, hidden), to_heads])], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [linear(x, hidden, hidden), to_heads])], perm=[0, 2, 1, 3])
        scores = b.op("Div", [b.op("MatMul", [q, k]), b.const(np.array(np.sqrt(head), np.float32), "sqrt_d")])
        probs = b.op("Softmax", [b.op("Add", [scores, mask])], axis=-1)
        ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = linear(b.op("Reshape", [ctx, to_hidden]), hidden, hidden)
        x = layer_norm(b.op("Add", [ctx, x]))
        h = linear(x, hidden, 4 * hidden)
        erf = b.op("Erf", [b.op("Div", [h, b.const(np.array(np.sqrt(2.0), np.float32), "sqrt2")])])
        half = b.const(np.array(0.5, np.float32), "half")
        gelu = b.op("Mul", [b.op("Mul", [h, b.op("Add", [erf, b.const(np.array(1.0, np.float32), "one")])]), half])
        x = layer_norm(b.op("Add", [linear(gelu, 4 * hidden, hidden), x]))
    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        b.nodes,
        "bert_style_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", seq]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", seq]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["N", seq, hidden])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def light_at_opset_13(name: str) -> onnx.ModelProto:
    """A `light` model (opset 9) with a dynamic batch at opset 13, which the int8 exports and
    onnxruntime's quantizer need: its Conv, Relu, pools, BatchNormalization (no `spatial`),
    Sum, Concat, Transpose, Gemm, and Reshape/Softmax on [N, C] mean the same at both; Dropout
    (identity at inference, its `ratio` attribute gone at 13) is removed."""
    m = with_dynamic_batch(zoo.light_model(name))
    g = m.graph
    rename = {}
    keep = []
    for n in g.node:
        assert not (n.op_type == "BatchNormalization" and any(a.name == "spatial" for a in n.attribute))
        if n.op_type == "Dropout":
            rename[n.output[0]] = n.input[0]
        else:
            keep.append(n)
    for n in keep:
        n.input[:] = [rename.get(i, i) for i in n.input]
    for o in g.output:
        assert o.name not in rename
    del g.node[:]
    g.node.extend(keep)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 13
    return m


Calib = Union[np.ndarray, dict[str, np.ndarray]]


def models(calib: int, only: list[str] | None) -> list[tuple[str, onnx.ModelProto, Calib]]:
    rng = np.random.default_rng(0)
    out: list[tuple[str, onnx.ModelProto, Calib]] = []

    def noise(n: int, size: int = 224) -> np.ndarray:
        return rng.standard_normal((n, 3, size, size)).astype(np.float32)

    shared = zoo.SHARED_DATA.is_dir()
    real_images = imagenet(calib) if shared else noise(calib)

    def upsized(size: int) -> np.ndarray:
        """The calibration images, nearest-resized to size x size."""
        idx = np.arange(size) * real_images.shape[2] // size
        return np.ascontiguousarray(real_images[:, :, idx][:, :, :, idx])

    def tokens(n: int, seq: int = 128, vocab: int = 8192) -> dict[str, np.ndarray]:
        """Random token ids; each sequence has a random length, the rest padding (id 0, mask 0)."""
        lengths = rng.integers(seq // 4, seq + 1, n)
        mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
        return {"input_ids": rng.integers(1, vocab, (n, seq)) * mask, "attention_mask": mask}

    specs = [
        (
            "resnet20",
            "ResNet-20 (CIFAR-10, trained)",
            shared,
            lambda: (onnx.load(str(zoo.SHARED_DATA / "akamaster_resnet20_cifar10.onnx")), cifar(calib)),
        ),
        (
            "mobilenetv2",
            "MobileNetV2 (ImageNet, trained)",
            shared,
            lambda: (onnx.load(str(zoo.SHARED_DATA / "mobilenet_v2_imagenet.onnx")), real_images),
        ),
        ("efficientnet", "EfficientNet-Lite0-style (random weights)", True, lambda: (efficientnet_lite(), real_images)),
        ("resnet50", "ResNet-50 (light)", True, lambda: (light_at_opset_13("resnet50"), noise(calib))),
        ("shufflenet", "ShuffleNet v1 (light)", True, lambda: (light_at_opset_13("shufflenet"), noise(calib))),
        ("squeezenet", "SqueezeNet (light)", True, lambda: (light_at_opset_13("squeezenet"), noise(calib))),
        ("yolov8", "YOLOv8n-style detector, 320x320 (random weights)", True, lambda: (yolov8_style(), upsized(320))),
        ("bert", "BERT-style encoder, 4 x 256, seq 128 (random weights)", True, lambda: (bert_style(), tokens(calib))),
    ]
    for key, title, present, make in specs:
        if present and (not only or key in only):
            proto, x = make()
            out.append((title, proto, x))
    return out


class Reader:
    """onnxruntime's calibration reader over one image at a time."""

    def __init__(self, x: dict[str, np.ndarray]) -> None:
        n = len(next(iter(x.values())))
        self.items = iter([{k: v[i : i + 1] for k, v in x.items()} for i in range(n)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def as_feeds(proto: onnx.ModelProto, x: Calib) -> dict[str, np.ndarray]:
    return x if isinstance(x, dict) else {proto.graph.input[0].name: x}


def ort_int8_forms(proto: onnx.ModelProto, calib: dict[str, np.ndarray], tmp: Path) -> dict[str, onnx.ModelProto]:
    """onnxruntime's own static quantization of `proto`: QDQ and QOperator x U8S8 and S8S8,
    per-channel weights, MinMax on `calib`. A form the quantizer rejects is left out."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = tmp / "model.onnx"
    onnx.save(proto, str(src))
    forms = {}
    for fmt, act in itertools.product(("QDQ", "QOperator"), ("U8S8", "S8S8")):
        dst = tmp / f"{fmt}_{act}.onnx"
        try:
            quantize_static(
                str(src),
                str(dst),
                Reader(calib),
                quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                activation_type=QuantType.QUInt8 if act == "U8S8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            forms[f"{fmt} {act}"] = onnx.load(str(dst))
        except Exception as e:
            print(f"  onnxruntime quantize_static {fmt} {act} failed: {type(e).__name__}: {e}", flush=True)
    return forms


def batch_of(feeds: dict[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    return {k: x[:b] if len(x) >= b else np.resize(x, (b, *x.shape[1:])) for k, x in feeds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0.5 s per engine, 8 calibration images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=None, help="timing budget per engine and config (default 2)")
    ap.add_argument("--calib", type=int, default=None, help="calibration images (default 32)")
    ap.add_argument(
        "--models", nargs="*", help="resnet20 mobilenetv2 efficientnet resnet50 shufflenet squeezenet yolov8 bert"
    )
    ap.add_argument("--write", action="store_true", help="update benches/RESULTS.md")
    args = ap.parse_args()
    seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 2.0)
    ncal = args.calib if args.calib is not None else (8 if args.quick else 32)
    th = args.threads
    rows = []
    for title, proto, calib in models(ncal, args.models):
        print(f"{title}: quantizing", flush=True)
        calib = as_feeds(proto, calib)
        m = oxiquant.load(proto)
        q = oxiquant.quantize_network(m, 8, calib, progress=False)
        if q.engine != "int":
            print(f"  oxiquant int8 runs on its {q.engine} engine: {q.engine_note}", flush=True)
        # 7-bit weights (onnxruntime's `reduce_range`): u8 x s8 pair sums cannot leave i16, so
        # the byte kernels run exactly on AVX2 without VNNI, in oxiquant and in onnxruntime.
        q7 = oxiquant.quantize_network(m, 8, calib, weight_bits=7, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            forms = ort_int8_forms(proto, calib, Path(tmp))
        ort_int8 = {k: session(v, th) for k, v in forms.items()}
        sessions = {"ort_fp32": session(proto, th)}
        exports = (
            ("ort_ox_qdq", "qdq", "uint8"),
            ("ort_ox_qdq_s8", "qdq", "int8"),
            ("ort_ox_qop", "qoperator", "uint8"),
            ("ort_ox7_qdq_s8", "qdq", "int8"),
        )
        for key, fmt, wt in exports:
            try:
                sessions[key] = session((q7 if key.startswith("ort_ox7") else q).to_onnx(fmt, weight_type=wt), th)
            except Exception as e:  # the exact error goes in the log; the column says n/a
                print(f"  oxiquant {fmt} export or onnxruntime session failed: {type(e).__name__}: {e}", flush=True)
        for b in (1, 32):
            feeds = batch_of(calib, b)
            # onnxruntime's fastest int8 form at this batch, from a short alternating run.
            forms_fns = {k: (lambda s=s, feeds=feeds: s.run(None, feeds)) for k, s in ort_int8.items()}
            pick = timed_rounds(forms_fns, seconds / 4) if forms_fns else {}
            best = min(pick, key=pick.get) if pick else None
            fns = {
                "ox_fp32": lambda m=m, feeds=feeds: m.run(feeds, num_threads=th),
                "ox_int8": lambda q=q, feeds=feeds: q.run(feeds, num_threads=th),
                "ox_int8_w7": lambda q=q7, feeds=feeds: q.run(feeds, num_threads=th),
            }
            chosen = dict(sessions)
            if best is not None:
                chosen["ort_int8"] = ort_int8[best]
            for k, s in chosen.items():
                fns[k] = lambda s=s, feeds=feeds: s.run(None, feeds)
            t = timed_rounds(fns, seconds)
            ips = {k: b / v for k, v in t.items()}
            rows.append((title, b, ips, best))
            nan = float("nan")
            print(
                f"{title:42s} batch {b:2d}: ox fp32 {ips['ox_fp32']:8.1f} img/s, ox int8 {ips['ox_int8']:8.1f}, "
                f"ort fp32 {ips['ort_fp32']:8.1f}, ort int8 ({best}) {ips.get('ort_int8', nan):8.1f} | "
                f"fp32 {ips['ox_fp32'] / ips['ort_fp32']:.2f}x, "
                f"int8 {ips['ox_int8'] / ips.get('ort_int8', nan):.2f}x | "
                f"ort on ox QDQ {ips.get('ort_ox_qdq', nan):8.1f}, int8 weights {ips.get('ort_ox_qdq_s8', nan):8.1f}, "
                f"QOperator {ips.get('ort_ox_qop', nan):8.1f} | 7-bit weights: ox int8 {ips['ox_int8_w7']:8.1f}, "
                f"ort on its QDQ {ips.get('ort_ox7_qdq_s8', nan):8.1f}",
                flush=True,
            )

    flags = (" --quick" if args.quick else "") + (f" --models {' '.join(args.models)}" if args.models else "")
    cmd = f"python benches/bench_zoo.py{flags} --threads {th} --seconds {seconds:g} --calib {ncal}"
    table = [
        f"Command: `{cmd}`  ",
        run_stamp(),
        f"Machine: {cpu_model()} ({platform.machine()}; CPU flags: {cpu_features()}), {th} threads for each "
        f"engine; oxiquant's integer kernels: {oxiquant.integer_kernel()}; onnxruntime {ort.__version__}, "
        f"oxiquant {oxiquant.__version__}. Images/s, median per call over alternating blocks of every engine "
        "of a row in one process.",
        "",
        "| model | batch | oxiquant fp32 | oxiquant int8 | ort fp32 | ort int8 (fastest form) "
        "| ort on oxiquant's QDQ | ort on oxiquant's QDQ, int8 weights | ort on oxiquant's QOperator "
        "| **fp32 / ort fp32** | **int8 / ort int8** | **oxiquant's QDQ / ort int8** "
        "| oxiquant int8, 7-bit weights | ort on its QDQ "
        "| **7-bit: int8 / ort int8** | **7-bit: its QDQ / ort int8** |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nan = float("nan")
    for title, b, ips, best in rows:
        table.append(
            f"| {title} | {b} | {ips['ox_fp32']:.1f} | {ips['ox_int8']:.1f} | {ips['ort_fp32']:.1f} "
            f"| {ips.get('ort_int8', nan):.1f} ({best}) | {ips.get('ort_ox_qdq', nan):.1f} "
            f"| {ips.get('ort_ox_qdq_s8', nan):.1f} | {ips.get('ort_ox_qop', nan):.1f} "
            f"| **{ips['ox_fp32'] / ips['ort_fp32']:.2f}x** | **{ips['ox_int8'] / ips.get('ort_int8', nan):.2f}x** "
            f"| **{ips.get('ort_ox_qdq', nan) / ips.get('ort_int8', nan):.2f}x** "
            f"| {ips['ox_int8_w7']:.1f} | {ips.get('ort_ox7_qdq_s8', nan):.1f} "
            f"| **{ips['ox_int8_w7'] / ips.get('ort_int8', nan):.2f}x** "
            f"| **{ips.get('ort_ox7_qdq_s8', nan) / ips.get('ort_int8', nan):.2f}x** |"
        )
    table.append("")
    table.append(
        "ort int8 is onnxruntime's own `quantize_static` (MinMax, per-channel weights, the same calibration "
        "images), the fastest at that batch of QDQ and QOperator x U8S8 and S8S8 (named in brackets). "
        "The 7-bit columns quantize with `weight_bits=7` (GPTQ rounding and bias correction on, as below 8 "
        "weight bits by default): on CPUs without VNNI the u8 x s8 byte kernels are exact on such weights, "
        "in oxiquant and in onnxruntime (its `reduce_range`); its QDQ export has int8 weights. "
        "The light models and the generated nets (EfficientNet-Lite0-style, YOLOv8n-style, BERT-style) have "
        "random weights: speed only."
    )
    if args.write:
        write_section(BEGIN, END, "Model zoo throughput (`benches/bench_zoo.py`)", table)
    else:
        print("\n".join(table))


if __name__ == "__main__":
    main()
