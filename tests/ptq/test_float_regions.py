"""Values are quantized only where an integer op reads them: an affine output read only by float
islands stays float (a dequantizer takes the accumulator to real values), a graph input read
only by islands is not quantized, data movement between islands runs in float. Checked
against onnxruntime's float run of the same model, and the integer engine and the QDQ export
against the fake-quantized graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import oxiquant

D, S = 16, 8


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((got - ref).astype(np.float64) ** 2).sum()))


def roles(q: oxiquant.Model) -> dict[str, str]:
    return {a["tensor"]: a["role"] for a in q.quant_info["activations"]}


def ffn_with_outlier(seed: int = 0) -> onnx.ModelProto:
    """x [N, S, D] -> MatMul W1 -> Add b1 -> Relu -> MatMul W2 -> Add b2 -> + x ->
    LayerNormalization -> y. One output channel of W2 is 60 times the others (a transformer's
    feed-forward outlier)."""
    rng = np.random.default_rng(seed)
    w2 = rng.normal(size=(2 * D, D)) / np.sqrt(2 * D)
    w2[:, 3] *= 60
    inits = [
        nh.from_array((rng.normal(size=(D, 2 * D)) / np.sqrt(D)).astype(np.float32), "W1"),
        nh.from_array(rng.normal(size=2 * D).astype(np.float32) * 0.1, "b1"),
        nh.from_array(w2.astype(np.float32), "W2"),
        nh.from_array(rng.normal(size=D).astype(np.float32) * 0.1, "b2"),
        nh.from_array(np.ones(D, np.float32), "gamma"),
        nh.from_array(np.zeros(D, np.float32), "beta"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "W1"], ["m1"], name="ffn1"),
        h.make_node("Add", ["m1", "b1"], ["a1"], name="ffn1_bias"),
        h.make_node("Relu", ["a1"], ["r1"], name="relu"),
        h.make_node("MatMul", ["r1", "W2"], ["m2"], name="ffn2"),
        h.make_node("Add", ["m2", "b2"], ["a2"], name="ffn2_bias"),
        h.make_node("Add", ["a2", "x"], ["res"], name="residual"),
        h.make_node("LayerNormalization", ["res", "gamma", "beta"], ["y"], axis=-1, name="ln"),
    ]
    graph = h.make_graph(
        nodes,
        "ffn",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", S, D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", S, D])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_affine_outputs_read_only_by_float_islands_stay_float():
    proto = ffn_with_outlier()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, S, D)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, progress=False)
    r = roles(q)
    # Both MatMuls are read only by their bias Add (a float island): dequantized, not
    # requantized, and nothing dequantizes them again. The bias Add's output, which the Relu
    # and the second MatMul read, is quantized.
    assert r.get("m1") == "dequant" and r.get("m2") == "dequant", r
    assert sorted(r.values()).count("dequant") == 3, r  # m1, m2 and the residual's x
    assert r.get("a1") == "island_output", r
    # Their weights have one scale per output feature (the last axis of the MatMul's output,
    # where the dequantizer applies one factor per channel).
    scales = {w["name"]: w["weight_scale"] for w in q.quant_info["weights"]}
    assert len(scales["ffn1"]) == 2 * D and len(scales["ffn2"]) == D, scales
    assert len(set(scales["ffn2"])) == D
    # The residual Add is read only by the LayerNorm: float too.
    floats = {n: why for n, _, why in q.quant_info["float_nodes"]}
    assert "residual" in floats and "read only by float ops" in floats["residual"]
    assert q.engine == "int", q.engine_note
    # The report names them.
    from oxiquant.report import format_report, layer_report

    report = layer_report(oxiquant.load(proto), q, x[:8])
    assert sorted(report["float_outputs"]) == ["ffn1", "ffn2"]
    assert "output kept in float (only float ops read it): ffn1" in format_report(report)
    ref = run_ort(proto, {"x": x})
    got = q.run(x)["y"]
    # The integer engine computes what the fake-quantized graph does.
    np.testing.assert_allclose(got, q.run(x, mode="fake")["y"], rtol=1e-6, atol=1e-6)
    # Requantizing the second MatMul's output to 8 bits alone (max range, numpy, every other
    # value exact) would cost more than all of the quantization does here: its outlier
    # channel sets the step of every other channel.
    inits = {i.name: nh.to_array(i) for i in proto.graph.initializer}
    m2 = np.maximum(x @ inits["W1"] + inits["b1"], 0) @ inits["W2"]
    step = np.abs(m2).max() / 127
    res = np.round(m2 / step) * step + inits["b2"] + x
    mu, var = res.mean(-1, keepdims=True), res.var(-1, keepdims=True)
    requantized_alone = sqnr_db(ref, (res - mu) / np.sqrt(var + 1e-5))
    assert sqnr_db(ref, got) > requantized_alone + 3, (sqnr_db(ref, got), requantized_alone)
    # Both exports run in onnxruntime to the same values (f32 rounding apart).
    for fmt in ("qdq", "qoperator"):
        np.testing.assert_allclose(run_ort(q.to_onnx(fmt), {"x": x}), got, rtol=1e-4, atol=1e-4, err_msg=fmt)


def island_reads_the_input() -> onnx.ModelProto:
    """x -> Softmax -> MatMul W -> y: only the Softmax (a float island) reads the input."""
    rng = np.random.default_rng(2)
    w = nh.from_array((rng.normal(size=(D, 4)) / 4).astype(np.float32), "W")
    nodes = [
        h.make_node("Softmax", ["x"], ["p"], axis=-1, name="softmax"),
        h.make_node("MatMul", ["p", "W"], ["y"], name="proj"),
    ]
    graph = h.make_graph(
        nodes,
        "island_first",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])],
        [w],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def test_an_input_only_float_islands_read_is_not_quantized():
    proto = island_reads_the_input()
    x = (3 * np.random.default_rng(3).normal(size=(64, D))).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, progress=False)
    r = roles(q)
    assert "input" not in r.values(), r
    assert r.get("p") == "island_output", r
    ref = run_ort(proto, {"x": x})
    got = q.run(x)["y"]
    # The Softmax runs on the exact input: its output is rounded once, to its 8-bit step.
    step = next(a["step"] for a in q.quant_info["activations"] if a["tensor"] == "p")
    w = nh.to_array(proto.graph.initializer[0])
    assert np.abs(got - ref).max() <= 0.5 * step * np.abs(w).sum(axis=0).max() * 1.01 + 1e-6
    for fmt in ("qdq", "qoperator"):
        np.testing.assert_allclose(run_ort(q.to_onnx(fmt), {"x": x}), got, rtol=1e-5, atol=1e-5, err_msg=fmt)


def movement_between_islands() -> onnx.ModelProto:
    """x -> MatMul W -> Sigmoid -> Reshape -> ReduceMean -> y: the Reshape sits between two
    islands."""
    rng = np.random.default_rng(4)
    inits = [
        nh.from_array((rng.normal(size=(D, D)) / 4).astype(np.float32), "W"),
        nh.from_array(np.array([-1, 4, 4], np.int64), "shape"),
        nh.from_array(np.array([2], np.int64), "axes"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["m"], name="proj"),
        h.make_node("Sigmoid", ["m"], ["s"], name="sigmoid"),
        h.make_node("Reshape", ["s", "shape"], ["s3"], name="reshape"),
        h.make_node("ReduceMean", ["s3", "axes"], ["y"], keepdims=0, name="mean"),
    ]
    graph = h.make_graph(
        nodes,
        "between",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", D])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_data_movement_between_islands_runs_in_float():
    proto = movement_between_islands()
    x = np.random.default_rng(5).normal(size=(32, D)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, progress=False)
    r = roles(q)
    floats = {n for n, _, _ in q.quant_info["float_nodes"]}
    assert "reshape" in floats, floats
    # The Sigmoid's output is not requantized (only float ops read it), so it cannot become a
    # lookup table: the MatMul's output stays float too.
    assert "s" not in r and r.get("m") == "dequant", r
    ref = run_ort(proto, {"x": x})
    got = q.run(x)["y"]
    assert sqnr_db(ref, got) > 35, sqnr_db(ref, got)
    for fmt in ("qdq", "qoperator"):
        np.testing.assert_allclose(run_ort(q.to_onnx(fmt), {"x": x}), got, rtol=1e-5, atol=1e-6, err_msg=fmt)


def test_an_island_that_may_become_a_table_reads_8_bits():
    """x -> MatMul -> Sigmoid -> MatMul -> y: the Sigmoid's output is requantized for the
    second MatMul, so the island can become a lookup table of its 8-bit input: the first
    MatMul's output stays quantized (where a bias Add alone would take it to float)."""
    rng = np.random.default_rng(6)
    inits = [nh.from_array((rng.normal(size=(D, D)) / 4).astype(np.float32), n) for n in ("W1", "W2")]
    nodes = [
        h.make_node("MatMul", ["x", "W1"], ["m"], name="proj"),
        h.make_node("Sigmoid", ["m"], ["s"], name="sigmoid"),
        h.make_node("MatMul", ["s", "W2"], ["y"], name="out"),
    ]
    graph = h.make_graph(
        nodes,
        "table",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", D])],
        inits,
    )
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    x = rng.normal(size=(32, D)).astype(np.float32)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, progress=False)
    r = roles(q)
    assert r.get("m") == "affine" and r.get("s") == "island_output", r
    got = q.run(x)["y"]
    assert sqnr_db(run_ort(proto, {"x": x}), got) > 30
    np.testing.assert_allclose(got, q.run(x, mode="fake")["y"], rtol=1e-6, atol=1e-6)


def test_outputs_of_non_negative_islands_are_quantized_unsigned():
    """Sqrt and Exp never output a negative value: their requantized outputs use the
    unsigned grid (twice the resolution of the signed one), and the engine still matches
    onnxruntime's float run within that grid's rounding."""
    rng = np.random.default_rng(5)
    w = (rng.normal(size=(D, D)) / np.sqrt(D)).astype(np.float32)
    for op in ("Sqrt", "Exp"):
        nodes = [
            h.make_node("Abs", ["x"], ["a"], name="abs"),
            h.make_node(op, ["a"], ["s"], name="island"),
            h.make_node("MatMul", ["s", "W"], ["y"], name="mm"),
        ]
        graph = h.make_graph(
            nodes,
            "nonneg",
            [h.make_tensor_value_info("x", T.FLOAT, ["N", D])],
            [h.make_tensor_value_info("y", T.FLOAT, ["N", D])],
            [nh.from_array(w, "W")],
        )
        proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
        x = rng.normal(size=(64, D)).astype(np.float32)
        q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, progress=False)
        signed = {a["tensor"]: a["signed"] for a in q.quant_info["activations"] if a["role"] == "island_output"}
        assert signed == {"s": False}, (op, signed)
        ref = run_ort(proto, {"x": x})
        assert sqnr_db(ref, q.run(x)["y"]) > 30, op
