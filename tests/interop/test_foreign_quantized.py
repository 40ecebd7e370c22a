"""Models quantized by another tool (onnxruntime's `quantize_static`, QDQ and QOperator):
`oxiquant.load` reads them and runs them on the integer engine. The references are
onnxruntime running the same file (its fused integer kernels, and the QDQ graph as
written) and `onnx.reference.ReferenceEvaluator`."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import oxiquant

import reference
from ptq_graphs import calibration_data, networks

VI = helper.make_tensor_value_info


def _w(g: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (g.standard_normal(shape) * scale).astype(np.float32)


def cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv + Relu, a residual Add + Relu, MaxPool, a 1x1 conv concatenated with its input,
    AveragePool, GlobalAveragePool, Flatten, Gemm, Relu, MatMul: [N, 3, 8, 8] -> [N, 5]."""
    g = np.random.default_rng(seed)
    inits = {
        "w1": _w(g, 6, 3, 3, 3),
        "b1": _w(g, 6, scale=0.1),
        "w2": _w(g, 6, 6, 3, 3, scale=0.2),
        "b2": _w(g, 6, scale=0.1),
        "w3": _w(g, 4, 6, 1, 1),
        "b3": _w(g, 4, scale=0.1),
        "wf": _w(g, 8, 10),
        "bf": _w(g, 8, scale=0.1),
        "wm": _w(g, 8, 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w3", "b3"], ["c3"]),
        helper.make_node("Concat", ["p", "c3"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["ap"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["fc"], transB=1),
        helper.make_node("Relu", ["fc"], ["fr"]),
        helper.make_node("MatMul", ["fr", "wm"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [VI("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [VI("y", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


class Reader(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray) -> None:
        self.it = iter([{name: data[i : i + 2]} for i in range(0, len(data), 2)])

    def get_next(self):  # type: ignore[override]
        return next(self.it, None)


def ort_quantize(
    model: onnx.ModelProto,
    calib: np.ndarray,
    tmp_path,
    fmt: str = "qdq",
    per_channel: bool = False,
    activations: str = "u8",
    weights: str = "u8",
) -> onnx.ModelProto:
    """onnxruntime's quantize_static. int8 weights use reduce_range (7-bit weights): without
    VNNI, onnxruntime's AVX2 u8 x s8 kernels sum product pairs in a saturating int16 that
    full-range int8 weights can overflow, and it would not be a reference any more. (Its
    QOperator format writes per-channel weights as int8 whatever `weight_type` says.)"""
    src, dst = tmp_path / "float.onnx", tmp_path / f"quantized_{fmt}.onnx"
    onnx.save(model, str(src))
    quantize_static(
        str(src),
        str(dst),
        Reader(model.graph.input[0].name, calib),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
        weight_type=QuantType.QUInt8 if weights == "u8" else QuantType.QInt8,
        reduce_range=weights == "s8" or (fmt == "qoperator" and per_channel),
    )
    return onnx.load(str(dst))


def run_ort(proto: onnx.ModelProto, x: np.ndarray, fused: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    if not fused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {proto.graph.input[0].name: x})[0]


def reference_evaluator(proto: onnx.ModelProto) -> ReferenceEvaluator:
    """ONNX's reference evaluator (it implements QuantizeLinear / DequantizeLinear from
    opset 19 on, whose definitions are the same for these tensors)."""
    return ReferenceEvaluator(onnx.version_converter.convert_version(proto, 21))


def output_step(proto: onnx.ModelProto) -> float:
    """The scale of the quantized tensor that the output DequantizeLinear reads."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    out = proto.graph.output[0].name
    node = next(n for n in proto.graph.node if out in n.output)
    assert node.op_type == "DequantizeLinear", f"the output comes from a {node.op_type}"
    return float(inits[node.input[1]])


CONFIGS = [
    # (format, per_channel, activations, weights)
    ("qdq", False, "u8", "u8"),
    ("qdq", True, "u8", "u8"),
    ("qdq", False, "u8", "s8"),
    ("qdq", True, "u8", "s8"),
    ("qdq", True, "s8", "s8"),
    ("qoperator", False, "u8", "u8"),
    ("qoperator", True, "u8", "s8"),
    ("qoperator", False, "s8", "s8"),
]


@pytest.mark.parametrize(("fmt", "per_channel", "acts", "weights"), CONFIGS)
def test_integer_engine_gives_onnxruntimes_integers(tmp_path, rng, fmt, per_channel, acts, weights):
    model = cnn()
    proto = ort_quantize(
        model, rng.standard_normal((16, 3, 8, 8)).astype(np.float32), tmp_path, fmt, per_channel, acts, weights
    )
    ops = {n.op_type for n in proto.graph.node}
    assert ("QLinearConv" in ops) == (fmt == "qoperator")
    m = oxiquant.load(proto)
    assert m.engine == "int"
    assert m.engine_note is None, m.engine_note
    assert m.op_counts().get("QuantizeLinear", 0) >= 1
    int_ops = m._native.int_op_counts()
    assert int_ops["QConv"] == 3 and int_ops["QGemm"] == 2, int_ops
    x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    got = m.run(x)["y"]
    ref = run_ort(proto, x, fused=True)
    if acts == "u8":
        # onnxruntime's fused integer kernels: the same integers (its kernels are exact with
        # these weights; oxiquant rounds its products and sums as they do).
        np.testing.assert_array_equal(got, ref)
    else:
        # onnxruntime rewrites int8 activations to uint8 and leaves some ops (Concat) in
        # float between them: within one step of the output's quantization.
        assert np.abs(got - ref).max() <= output_step(proto) * 1.001


@pytest.mark.parametrize("per_channel", [False, True])
def test_reference_path_follows_the_onnx_definitions(tmp_path, rng, per_channel):
    """`mode="fake"` runs the loaded graph as ONNX defines its ops: compared with ONNX's own
    reference evaluator, and with the integer engine."""
    proto = ort_quantize(
        cnn(1), rng.standard_normal((16, 3, 8, 8)).astype(np.float32), tmp_path, per_channel=per_channel
    )
    m = oxiquant.load(proto)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    fake = m.run(x, mode="fake")["y"]
    ref = reference_evaluator(proto).run(None, {"x": x})[0]
    step = output_step(proto)
    assert np.abs(fake - ref).max() <= step * 1.001
    assert np.abs(fake - m.run(x)["y"]).max() <= step * 1.001


def test_qoperator_reference_path_matches_onnxruntime(tmp_path, rng):
    proto = ort_quantize(cnn(2), rng.standard_normal((16, 3, 8, 8)).astype(np.float32), tmp_path, "qoperator")
    assert any(n.domain == "com.microsoft" for n in proto.graph.node)
    m = oxiquant.load(proto)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    step = output_step(proto)
    assert np.abs(m.run(x, mode="fake")["y"] - run_ort(proto, x)).max() <= step * 1.001


def test_save_and_load_keep_the_quantized_model(tmp_path, rng):
    proto = ort_quantize(cnn(3), rng.standard_normal((16, 3, 8, 8)).astype(np.float32), tmp_path, "qoperator")
    m = oxiquant.load(proto)
    saved = m.to_onnx()
    onnx.checker.check_model(saved)
    again = oxiquant.load(saved)
    assert again.engine == "int"
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(again.run(x)["y"], m.run(x)["y"])
    np.testing.assert_array_equal(run_ort(saved, x), m.run(x)["y"])


@settings(max_examples=reference.examples(15))
@given(
    net=networks(max_blocks=4, degenerate=False),
    per_channel=st.booleans(),
    fmt=st.sampled_from(["qdq", "qoperator"]),
    seed=st.integers(0, 2**16),
)
def test_random_networks_round_trip(tmp_path_factory, net, per_channel, fmt, seed):
    """Generated networks (convolutions, activations, pools, residual Adds, Concats, dense
    heads, BatchNormalization left in float) quantized by onnxruntime. Each rounding of
    oxiquant and of onnxruntime (an unfused AveragePool, a float island's QuantizeLinear, a
    requantization in another f32 order) can differ by one step on a tie, and a layer after
    it multiplies that step by its gain: the outputs differ by at most the bound propagated
    through the file's own graph (`reference.step_bound`; most draws: not at all)."""
    g = np.random.default_rng(seed)
    tmp = tmp_path_factory.mktemp("net")
    proto = ort_quantize(net, calibration_data(net, g, 16), tmp, fmt, per_channel)
    # A network without a layer onnxruntime quantizes (a lone activation) stays float.
    assume(any(n.op_type == "QuantizeLinear" for n in proto.graph.node))
    unsupported = sorted({n.op_type for n in proto.graph.node} & {"QLinearSoftmax", "QLinearMul"})
    if unsupported:
        # onnxruntime made a Softmax or a Mul by a constant one of its com.microsoft integer
        # ops, which oxiquant does not run: refused at load, naming it.
        with pytest.raises(oxiquant.UnsupportedOpError, match=unsupported[0]):
            oxiquant.load(proto)
        return
    m = oxiquant.load(proto)
    assert m.engine == "int"
    x = calibration_data(net, g, 4)
    got = m.run(x)["y"]
    ref = run_ort(proto, x)
    # In the output's units (real ones: the file ends with a DequantizeLinear or a float op);
    # the last term is the f32 rounding of two float ops computing the same value.
    bound = reference.step_bound(proto)
    assert np.isfinite(bound), sorted({n.op_type for n in proto.graph.node})
    assert np.abs(got - ref).max() <= bound * (1 + 1e-6) + 1e-6 * np.abs(ref).max()


def _qdq_chain(middle: onnx.NodeProto, extra_inits=()) -> onnx.ModelProto:
    """x -> Q -> DQ -> middle (reads 'd', writes 'm') -> Q -> DQ -> y, uint8 activations."""
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.array(1 / 256, np.float32), "s2"),
        numpy_helper.from_array(np.array(0, np.uint8), "z2"),
        *extra_inits,
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quantize_x"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dequantize_x"),
        middle,
        helper.make_node("QuantizeLinear", ["m", "s2", "z2"], ["q2"], name="quantize_m"),
        helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["y"], name="dequantize_m"),
    ]
    graph = helper.make_graph(
        nodes, "chain", [VI("x", TensorProto.FLOAT, [2, 3, 4])], [VI("y", TensorProto.FLOAT, [2, 3, 4])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_element_wise_op_between_dq_and_q_is_a_table(rng):
    """DQ -> Sigmoid -> Q runs as a lookup table: the ONNX definition for each of the 256
    input values, so exactly what ONNX's reference evaluator computes."""
    proto = _qdq_chain(helper.make_node("Sigmoid", ["d"], ["m"], name="sig"))
    m = oxiquant.load(proto)
    assert m.engine == "int" and m.engine_note is None
    assert m._native.int_op_counts().get("QLookupTable") == 1
    x = rng.standard_normal((2, 3, 4)).astype(np.float32) * 2
    np.testing.assert_array_equal(m.run(x)["y"], reference_evaluator(proto).run(None, {"x": x})[0])


def test_an_op_without_integer_form_is_a_float_island_said_in_the_note(rng):
    proto = _qdq_chain(helper.make_node("Softmax", ["d"], ["m"], name="the_softmax", axis=-1))
    m = oxiquant.load(proto)
    assert m.engine == "int"
    assert m.engine_note is not None and "'the_softmax' (Softmax)" in m.engine_note
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    ref = reference_evaluator(proto).run(None, {"x": x})[0]
    assert np.abs(m.run(x)["y"] - ref).max() <= (1 / 256) * 1.001


def test_unsupported_quantized_op_is_named_with_its_node():
    proto = _qdq_chain(
        helper.make_node(
            "QLinearMul", ["q", "s", "z", "q", "s", "z", "s2", "z2"], ["m"], name="the_mul", domain="com.microsoft"
        )
    )
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(oxiquant.UnsupportedOpError) as e:
        oxiquant.load(proto)
    assert "QLinearMul" in str(e.value) and "the_mul" in str(e.value)


def test_integer_matmul_runs_exactly():
    """MatMulInteger (models quantized dynamically) runs, its int32 products exact (numpy)."""
    b = np.arange(8, dtype=np.uint8).reshape(4, 2) * 30
    inits = [numpy_helper.from_array(b, "b")]
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="mmi")
    graph = helper.make_graph(
        [node], "g", [VI("a", TensorProto.UINT8, [3, 4])], [VI("y", TensorProto.INT32, [3, 2])], inits
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    a = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    got = oxiquant.load(proto).run({"a": a})["y"]
    np.testing.assert_array_equal(got, a.astype(np.int32) @ b.astype(np.int32))


def test_blocked_quantization_is_refused_with_the_reason():
    inits = [
        numpy_helper.from_array(np.ones((2, 4), np.float32), "s"),
        numpy_helper.from_array(np.zeros((2, 4), np.uint8), "z"),
    ]
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="blocked", axis=1, block_size=2)
    graph = helper.make_graph(
        [node], "g", [VI("x", TensorProto.FLOAT, [2, 8])], [VI("y", TensorProto.UINT8, [2, 8])], inits
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    with pytest.raises(oxiquant.UnsupportedOpError, match="block_size"):
        oxiquant.load(proto)


def test_int4_weights_are_refused_naming_the_tensor():
    w = helper.make_tensor("w4", TensorProto.INT4, [2, 2], [1, -2, 3, -4])
    inits = [w, numpy_helper.from_array(np.array(0.1, np.float32), "s")]
    nodes = [
        helper.make_node("DequantizeLinear", ["w4", "s"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [VI("x", TensorProto.FLOAT, [1, 2])], [VI("y", TensorProto.FLOAT, [1, 2])], inits
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    with pytest.raises(oxiquant.ModelFormatError, match="w4"):
        oxiquant.load(proto)


def test_quantizing_a_quantized_model_is_refused(tmp_path, rng):
    proto = ort_quantize(cnn(4), rng.standard_normal((8, 3, 8, 8)).astype(np.float32), tmp_path)
    m = oxiquant.load(proto)
    with pytest.raises(oxiquant.InvalidArgumentError, match="already quantized"):
        oxiquant.quantize_network(m, 8, rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
