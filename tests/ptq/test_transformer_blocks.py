"""Quantization of the blocks transformers are made of, against onnxruntime's float run: an
attention head (MatMul of two activations, Softmax), a constant on the left of a MatMul, and
the integer engine and the QDQ export against the fake-quantized graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import oxiquant

D, S = 16, 8


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((got - ref).astype(np.float64) ** 2).sum()))


def attention_head(seed: int = 0) -> onnx.ModelProto:
    """y = softmax(q k^T / sqrt(D)) v Wo with q, k, v = x Wq, x Wk, x Wv."""
    rng = np.random.default_rng(seed)
    inits = [
        nh.from_array((rng.normal(size=(D, D)) / np.sqrt(D)).astype(np.float32), n) for n in ("Wq", "Wk", "Wv", "Wo")
    ]
    inits.append(nh.from_array(np.array(1 / np.sqrt(D), np.float32), "scale"))
    nodes = [
        h.make_node("MatMul", ["x", "Wq"], ["q"], name="q"),
        h.make_node("MatMul", ["x", "Wk"], ["k"], name="k"),
        h.make_node("MatMul", ["x", "Wv"], ["v"], name="v"),
        h.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
        h.make_node("MatMul", ["q", "kt"], ["s0"], name="qk"),
        h.make_node("Mul", ["s0", "scale"], ["s"], name="scale"),
        h.make_node("Softmax", ["s"], ["p"], axis=-1, name="softmax"),
        h.make_node("MatMul", ["p", "v"], ["o"], name="pv"),
        h.make_node("MatMul", ["o", "Wo"], ["y"], name="out"),
    ]
    graph = h.make_graph(
        nodes,
        "attention",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", S, D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", S, D])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def constant_on_the_left(seed: int = 1) -> onnx.ModelProto:
    """y = Relu(M @ x) @ W: a token-mixing matrix M (constant) on the left of the activation."""
    rng = np.random.default_rng(seed)
    inits = [
        nh.from_array((rng.normal(size=(S, S)) / np.sqrt(S)).astype(np.float32), "M"),
        nh.from_array((rng.normal(size=(D, D)) / np.sqrt(D)).astype(np.float32), "W"),
    ]
    nodes = [
        h.make_node("MatMul", ["M", "x"], ["mixed"], name="mix"),
        h.make_node("Relu", ["mixed"], ["r"], name="relu"),
        h.make_node("MatMul", ["r", "W"], ["y"], name="proj"),
    ]
    graph = h.make_graph(
        nodes,
        "mixer",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", S, D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", S, D])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


@pytest.mark.parametrize("make", [attention_head, constant_on_the_left])
def test_block_quantizes_close_to_float_and_the_integer_engine_agrees(make):
    model = make()
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, S, D)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(model), 8, x)
    ref = ort_run(model, x)
    # Every activation entering an island is dequantized first (a quantized operand in B
    # used to reach the float MatMul as raw integers: -15 dB).
    assert sqnr_db(ref, q.run(x, mode="fake")["y"]) > 25
    assert q.engine == "int", q.engine_note
    np.testing.assert_allclose(q.run(x, mode="int")["y"], q.run(x, mode="fake")["y"], rtol=1e-5, atol=1e-6)
    # Both exports in onnxruntime agree within a step.
    step = np.abs(ref).max() / 127
    for fmt in ("qdq", "qoperator"):
        got = ort_run(q.to_onnx(fmt), x)
        assert np.abs(got - q.run(x)["y"]).max() <= 2 * step, fmt


def test_attention_matmuls_multiply_quantized_operands():
    # Q K^T and softmax(.) V read both operands quantized and are no longer float islands;
    # the softmax output is requantized unsigned.
    model = attention_head()
    x = np.random.default_rng(8).normal(size=(16, S, D)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(model), 8, x)
    islands = {name for name, _, _ in q.quant_info["float_nodes"]}
    assert islands == {"scale", "softmax"}, islands
    quantized = {a["tensor"]: a for a in q.quant_info["activations"] if a["bits"]}
    assert quantized["s0"]["role"] == "island_output"  # Q K^T, requantized
    assert quantized["p"]["signed"] is False  # softmax probabilities
    # `oxiquant inspect`'s view (prepare + insert_scaling_nodes) says the same.
    m = oxiquant.load(model)
    oxiquant.prepare_network(m)
    oxiquant.insert_scaling_nodes(m)
    assert {name for name, _, _ in m.quant_info["float_nodes"]} == {"scale", "softmax"}
    qop = q.to_onnx("qoperator")
    assert sum(n.op_type == "QLinearMatMul" for n in qop.graph.node) == 4  # q, k, v, out


def embedding_with_mask(seed: int = 2) -> onnx.ModelProto:
    """y = (E[ids] * float(mask)[..., None]) @ W: token ids and a mask, both int64 inputs."""
    rng = np.random.default_rng(seed)
    inits = [
        nh.from_array(rng.normal(size=(50, D)).astype(np.float32), "E"),
        nh.from_array((rng.normal(size=(D, 4)) / 4).astype(np.float32), "W"),
        nh.from_array(np.array([2], np.int64), "axis"),
    ]
    nodes = [
        h.make_node("Gather", ["E", "ids"], ["e"], axis=0, name="embed"),
        h.make_node("Cast", ["mask"], ["mask_f"], to=T.FLOAT, name="cast"),
        h.make_node("Unsqueeze", ["mask_f", "axis"], ["mask_3d"], name="unsqueeze"),
        h.make_node("Mul", ["e", "mask_3d"], ["masked"], name="apply_mask"),
        h.make_node("MatMul", ["masked", "W"], ["y"], name="proj"),
    ]
    graph = h.make_graph(
        nodes,
        "embedding",
        [h.make_tensor_value_info("ids", T.INT64, ["N", "S"]), h.make_tensor_value_info("mask", T.INT64, ["N", "S"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", "S", 4])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def test_embedding_lookup_is_quantized_and_the_mask_is_not():
    model = embedding_with_mask()
    rng = np.random.default_rng(3)
    feeds = {
        "ids": rng.integers(0, 50, size=(64, 12)).astype(np.int64),
        "mask": (rng.random((64, 12)) > 0.2).astype(np.int64),
    }
    # Calibration takes a dict of int64 arrays.
    q = oxiquant.quantize_network(oxiquant.load(model), 8, feeds)
    quantized = {a["tensor"]: a["role"] for a in q.quant_info["activations"]}
    assert quantized.get("e") == "input", quantized
    assert not {"mask_f", "mask_3d"} & set(quantized)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    got = q.run(feeds)["y"]
    # Without the embedding's quantizer nothing was quantized at all (infinite SQNR).
    assert 25 < sqnr_db(ref, got) < 60
    assert q.engine == "int", q.engine_note
    np.testing.assert_allclose(got, q.run(feeds, mode="fake")["y"], rtol=1e-5, atol=1e-6)
    qdq = ort.InferenceSession(q.to_onnx("qdq").SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(qdq.run(None, feeds)[0] - got).max() <= 2 * np.abs(ref).max() / 127
