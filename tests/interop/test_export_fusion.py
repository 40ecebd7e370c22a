"""The QDQ export in the form onnxruntime fuses: after its optimizer (ORT_ENABLE_ALL, the
optimized model written to a file and read back here), no float Conv / MatMul / Gemm is left
of a quantized layer; every one runs as an integer kernel (QLinearConv, QLinearMatMul,
QGemm, ...), whatever the signs of the activations around it. The fused model's outputs
agree with oxiquant's integer engine."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import oxiquant

from ptq_graphs import small_cnn

# Float affine ops as onnxruntime's optimizer may leave them (its own fused and NCHWc forms
# included, whatever the domain).
FLOAT_AFFINE = {"Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "ConvTranspose"}


def optimized(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], path) -> tuple[onnx.GraphProto, list[np.ndarray]]:
    """onnxruntime's optimized graph of `proto` (read back from the file it writes) and its
    outputs on `feeds`, with every graph optimization on."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(path)
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)
    return onnx.load(str(path)).graph, out


def float_affine_nodes(graph: onnx.GraphProto) -> list[str]:
    return [f"{n.op_type} {n.name}" for n in graph.node if n.op_type in FLOAT_AFFINE]


def zero_points(graph: onnx.GraphProto) -> dict[str, int]:
    """The element types of the activations' QuantizeLinear outputs, by zero point type."""
    inits = {t.name: t for t in graph.initializer}
    types = {}
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            types[n.output[0]] = inits[n.input[2]].data_type
    return types


def concat_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu, then MaxPool and a 3x3 Conv of it concatenated (a C2f / fire-module-like
    merge read by a convolution), a residual Add without Relu, a Conv without Relu (signed
    output), GlobalAveragePool, Gemm: [N, 3, 12, 12] -> [N, 6]."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        a = np.sqrt(3.0 / np.prod(shape[1:]))
        return numpy_helper.from_array(rng.uniform(-a, a, shape).astype(np.float32), name)

    def b(name: str, n: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.uniform(-0.2, 0.2, n).astype(np.float32), name)

    inits = [w("w1", 8, 3, 3, 3), b("b1", 8), w("w2", 8, 8, 3, 3), b("b2", 8), w("w3", 8, 16, 1, 1), b("b3", 8)]
    inits += [w("w4", 8, 8, 3, 3), b("b4", 8), w("wg", 6, 8), b("bg", 6)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Concat", ["p", "r2"], ["cat"], axis=1, name="concat"),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Conv", ["c3", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1], name="conv4"),
        helper.make_node("Add", ["c3", "c4"], ["res"], name="add"),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "concat_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def token_mlp(seed: int = 0) -> onnx.ModelProto:
    """Transformer-FFN-like: [N, T, 16] -> MatMul 16x32 -> Relu -> MatMul 32x16 -> Add of
    the input (residual) -> MatMul 16x4."""
    rng = np.random.default_rng(seed)

    def w(name: str, i: int, o: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["d"], name="down"),
        helper.make_node("Add", ["x", "d"], ["res"], name="residual"),
        helper.make_node("MatMul", ["res", "w3"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "token_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 4])],
        [w("w1", 16, 32), w("w2", 32, 16), w("w3", 16, 4)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def c2f_block(seed: int = 0) -> onnx.ModelProto:
    """YOLOv8's pieces: Conv-SiLU (x * Sigmoid(x)), Split in halves, a Conv of one half,
    Concat of the halves and that Conv read by a Conv, a nearest Resize x2 concatenated with
    a MaxPool of the same size, a 1x1 Conv: [N, 3, 8, 8] -> [N, 4, 16, 16]."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        a = np.sqrt(3.0 / np.prod(shape[1:]))
        return numpy_helper.from_array(rng.uniform(-a, a, shape).astype(np.float32), name)

    inits = [w("w1", 8, 3, 3, 3), w("w2", 4, 4, 3, 3), w("w3", 8, 12, 1, 1), w("w4", 4, 16, 1, 1)]
    inits += [
        numpy_helper.from_array(np.array([4, 4], np.int64), "halves"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Mul", ["c1", "s1"], ["silu"], name="silu1"),
        helper.make_node("Split", ["silu", "halves"], ["a", "b"], axis=1, name="split"),
        helper.make_node("Conv", ["b", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Concat", ["a", "b", "c2"], ["cat"], axis=1, name="concat"),
        helper.make_node("Conv", ["cat", "w3"], ["c3"], name="conv3"),
        helper.make_node("Resize", ["c3", "", "scales"], ["up"], mode="nearest", name="up"),
        helper.make_node("Resize", ["x", "", "scales"], ["xup"], mode="nearest", name="xup"),
        helper.make_node("Conv", ["xup", "w1"], ["c5"], pads=[1, 1, 1, 1], name="conv5"),
        helper.make_node("MaxPool", ["c5"], ["p5"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool5"),
        helper.make_node("Concat", ["up", "p5"], ["cat2"], axis=1, name="concat2"),
        helper.make_node("Conv", ["cat2", "w4"], ["y"], name="conv4"),
    ]
    graph = helper.make_graph(
        nodes,
        "c2f_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


MODELS = {
    "small_cnn": (small_cnn, (3, 8, 8), {"QLinearConv", "QLinearAdd", "QGemm"}),
    "concat_cnn": (concat_cnn, (3, 12, 12), {"QLinearConv", "QLinearAdd", "QGemm"}),
    "token_mlp": (token_mlp, (6, 16), {"QLinearMatMul"}),
    "c2f_block": (c2f_block, (3, 8, 8), {"QLinearConv"}),
}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize(
    "opts",
    [
        {},  # per-tensor, signed activations (zero point 128) next to unsigned ones
        {"per_channel": True, "optimize_signs": True},
        {"per_channel": True, "optimize_signs": True, "clipping": "mse"},
    ],
)
@pytest.mark.parametrize("weight_type", ["uint8", "int8"])
def test_onnxruntime_fuses_every_quantized_layer(tmp_path, model, opts, weight_type):
    make, shape, kernels = MODELS[model]
    x = np.random.default_rng(1).standard_normal((16, *shape)).astype(np.float32)
    # 7-bit weights: onnxruntime's AVX2 u8 x s8 kernels cannot saturate on them (int8 weights).
    bits = {"weight_bits": 7} if weight_type == "int8" else {}
    q = oxiquant.quantize_network(oxiquant.load(make()), 8, x, dequantize_outputs=False, progress=False, **opts, **bits)
    proto = q.to_onnx("qdq", weight_type=weight_type)
    # One activation type, uint8: onnxruntime fuses DQ -> op -> Q only between equal types.
    assert set(zero_points(proto.graph).values()) == {TensorProto.UINT8}
    graph, (got,) = optimized(proto, {"x": x}, tmp_path / "optimized.onnx")
    assert not float_affine_nodes(graph), float_affine_nodes(graph)
    ops = {n.op_type for n in graph.node}
    assert kernels <= ops, sorted(ops)
    # onnxruntime's fused kernels round float(accumulator) * scale once: one step of slack
    # against the engine, whose requantization is the same product rounded once too.
    want = q.run(x)["y"]
    assert np.abs(got - want).max() <= 1.0


def test_relu_after_a_signed_quantizer_and_concat_of_relus_still_fuse(tmp_path):
    """Without optimize_signs, Relus stay after signed quantizers: the convolutions reading
    them (through the Relu, a MaxPool, a Concat) get their input requantized, unsigned."""
    x = np.random.default_rng(2).standard_normal((8, 3, 12, 12)).astype(np.float32)
    q = oxiquant.quantize_network(
        oxiquant.load(concat_cnn()), 8, x, optimize_signs=False, dequantize_outputs=False, progress=False
    )
    graph, (got,) = optimized(q.to_onnx("qdq"), {"x": x}, tmp_path / "optimized.onnx")
    assert not float_affine_nodes(graph), float_affine_nodes(graph)
    assert np.abs(got - q.run(x)["y"]).max() <= 1.0
