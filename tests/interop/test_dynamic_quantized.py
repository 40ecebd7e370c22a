"""Models quantized dynamically by onnxruntime (`quantize_dynamic`): each Conv and MatMul becomes
DynamicQuantizeLinear -> ConvInteger/MatMulInteger -> Cast -> Mul. `oxiquant.load` runs them
exactly as onnxruntime does (the reference: onnxruntime running the same file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

import oxiquant

from op_models import run_onnxruntime

VI = helper.make_tensor_value_info


def conv_matmul(seed: int = 0) -> onnx.ModelProto:
    """Conv + Relu, Flatten, MatMul + Add: [N, 3, 6, 6] -> [N, 5]."""
    g = np.random.default_rng(seed)
    inits = {
        "w": (g.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32),
        "b": (g.standard_normal(4) * 0.1).astype(np.float32),
        "wm": (g.standard_normal((64, 5)) * 0.2).astype(np.float32),
        "bm": (g.standard_normal(5) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "wm"], ["m"]),
        helper.make_node("Add", ["m", "bm"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_matmul",
        [VI("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [VI("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def dynamic(tmp_path: Path, weight_type: QuantType, per_channel: bool = False) -> onnx.ModelProto:
    src, dst = tmp_path / "float.onnx", tmp_path / "dynamic.onnx"
    onnx.save(conv_matmul(), str(src))
    quantize_dynamic(str(src), str(dst), weight_type=weight_type, per_channel=per_channel)
    return onnx.load(str(dst))


@pytest.mark.parametrize(
    "weight_type, per_channel",
    [(QuantType.QUInt8, False), (QuantType.QInt8, False), (QuantType.QUInt8, True)],
    ids=["uint8", "int8", "uint8_per_channel"],
)
def test_dynamic_model_matches_onnxruntime(tmp_path, weight_type, per_channel):
    proto = dynamic(tmp_path, weight_type, per_channel)
    ops = {n.op_type for n in proto.graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops, sorted(ops)
    g = np.random.default_rng(1)
    m = oxiquant.load(proto)
    for batch in (1, 3):
        x = g.standard_normal((batch, 3, 6, 6)).astype(np.float32)
        want = run_onnxruntime(proto, {"x": x})["y"]
        got = m.run({"x": x})["y"]
        assert got.dtype == want.dtype and got.shape == want.shape
        # The integer products are exact; the float tail (Cast, two Muls, Add) rounds alike.
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_dynamic_model_with_convinteger_matches_onnxruntime(tmp_path):
    """onnxruntime quantizes Conv with uint8 weights to ConvInteger."""
    proto = dynamic(tmp_path, QuantType.QUInt8)
    if "ConvInteger" not in {n.op_type for n in proto.graph.node}:
        pytest.skip("this onnxruntime leaves Conv in float")
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(
        oxiquant.load(proto).run({"x": x})["y"], run_onnxruntime(proto, {"x": x})["y"], rtol=1e-6, atol=1e-6
    )


def test_quantizing_a_dynamic_model_keeps_its_integer_chain(tmp_path):
    """The DynamicQuantizeLinear -> MatMulInteger/ConvInteger chains stay as they are when the
    model is quantized again (their integer values carry no activation); the model still runs
    and its saved form still holds them."""
    proto = dynamic(tmp_path, QuantType.QUInt8)
    m = oxiquant.load(proto)
    calib = np.random.default_rng(3).standard_normal((8, 3, 6, 6)).astype(np.float32)
    x = calib[:2]
    want = run_onnxruntime(proto, {"x": x})["y"]
    oxiquant.quantize_network(m, 8, calib)
    got = m.run({"x": x})["y"]
    np.testing.assert_allclose(got, want, atol=0.05 * float(np.abs(want).max()))
    saved = onnx.load(str(m.save(tmp_path / "requantized.onnx")))
    ops = {n.op_type for n in saved.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"} <= ops, sorted(ops)
