"""Hostile quantized models from other tools: scales that are zero, negative, NaN or
infinite, and zero points outside the range of the quantized type. ONNX defines none of
them as a computation (a scale divides; a zero point is a value of the quantized type), so
`oxiquant.load` must refuse them with an `InvalidArgumentError` or `ModelFormatError` that
names the node, at load time, instead of running arithmetic on them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import oxiquant

VI = helper.make_tensor_value_info
BAD_SCALES = {"zero": 0.0, "negative": -0.02, "nan": float("nan"), "inf": float("inf")}


def qdq_conv(x_scale=0.02, w_scale=0.01, y_scale=0.05, x_zero=(np.uint8, 128), bias_zero=None) -> onnx.ModelProto:
    """x -> QuantizeLinear ("quantize_x") -> DequantizeLinear ("dequantize_x") -> Conv with a
    DequantizeLinear'd int8 weight ("dequantize_w") -> QuantizeLinear ("quantize_y") ->
    DequantizeLinear: [1, 2, 4, 4] -> [1, 3, 4, 4]."""
    g = np.random.default_rng(0)
    zdtype, zvalue = x_zero
    inits = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "xs"),
        numpy_helper.from_array(np.array(zvalue, zdtype), "xz"),
        numpy_helper.from_array(g.integers(-100, 100, (3, 2, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(w_scale, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        numpy_helper.from_array(np.array(128, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quantize_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dequantize_x"),
        helper.make_node("DequantizeLinear", ["w_q", "ws", "wz"], ["w"], name="dequantize_w"),
    ]
    conv_inputs = ["xd", "w"]
    if bias_zero is not None:
        inits += [
            numpy_helper.from_array(np.array([10, -20, 30], np.int32), "b_q"),
            numpy_helper.from_array(np.array(x_scale * w_scale, np.float32), "bs"),
            numpy_helper.from_array(np.array(bias_zero, np.int32), "bz"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "bs", "bz"], ["b"], name="dequantize_b"))
        conv_inputs.append("b")
    nodes += [
        helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"], name="quantize_y"),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"], name="dequantize_y"),
    ]
    graph = helper.make_graph(
        nodes, "qdq_conv", [VI("x", TensorProto.FLOAT, [1, 2, 4, 4])], [VI("y", TensorProto.FLOAT, [1, 3, 4, 4])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def assert_refused_naming(proto: onnx.ModelProto, node: str) -> None:
    with pytest.raises((oxiquant.InvalidArgumentError, oxiquant.ModelFormatError), match=f"'{node}'"):
        oxiquant.load(proto)


def test_the_valid_model_loads_and_runs_as_onnxruntime():
    """The model the hostile cases below are made from is fine (so they fail for their one
    bad value): it loads on the integer engine and gives onnxruntime's output."""
    import onnxruntime as ort

    proto = qdq_conv(bias_zero=0)
    m = oxiquant.load(proto)
    assert m.engine == "int", m.engine_note
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    # One output step: onnxruntime may round a tie of its f32 requantization the other way.
    assert np.abs(m.run(x)["y"] - sess.run(["y"], {"x": x})[0]).max() <= 0.05 * 1.001


@pytest.mark.parametrize("bad", sorted(BAD_SCALES))
def test_a_bad_activation_scale_is_refused_naming_the_node(bad):
    assert_refused_naming(qdq_conv(x_scale=BAD_SCALES[bad]), "quantize_x")


@pytest.mark.parametrize("bad", sorted(BAD_SCALES))
def test_a_bad_weight_scale_is_refused_naming_the_node(bad):
    assert_refused_naming(qdq_conv(w_scale=BAD_SCALES[bad]), "dequantize_w")


@pytest.mark.parametrize("bad", sorted(BAD_SCALES))
def test_a_bad_output_scale_is_refused_naming_the_node(bad):
    assert_refused_naming(qdq_conv(y_scale=BAD_SCALES[bad]), "quantize_y")


def test_a_zero_point_outside_the_quantized_range_is_refused_naming_the_node():
    """A zero point of 300 (given as int32) for activations the tool meant as uint8: no
    uint8 value is 300, and an int32 QuantizeLinear output is not a type ONNX allows."""
    assert_refused_naming(qdq_conv(x_zero=(np.int32, 300)), "quantize_x")


def test_a_nonzero_int32_bias_zero_point_is_refused_naming_the_node():
    """ONNX requires the zero point of an int32 DequantizeLinear to be 0."""
    assert_refused_naming(qdq_conv(bias_zero=5), "dequantize_b")
