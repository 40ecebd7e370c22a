"""Quantizing a model with control flow: an If is a float island (its inputs dequantized, its
float output requantized), listed with its reason; the PTQ does not look inside its branches."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import oxiquant

C = 4


def conv_if_model(seed: int = 0) -> onnx.ModelProto:
    """conv -> If(mean(x) > 0: relu(conv(h)), else: relu(h) * 0.5) -> conv; the branches
    read h from the outer graph and hold weights of their own."""
    rng = np.random.default_rng(seed)

    def w(shape, name):
        return nh.from_array((rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    feat = h.make_tensor_value_info
    then = h.make_graph(
        [h.make_node("Conv", ["h", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c2"], ["t"])],
        "then",
        [],
        [feat("t", T.FLOAT, ["N", C, 8, 8])],
        [w((C, C, 3, 3), "W2"), nh.from_array(np.full(C, 0.1, np.float32), "B2")],
    )
    els = h.make_graph(
        [h.make_node("Relu", ["h"], ["r"]), h.make_node("Mul", ["r", "half"], ["e"])],
        "else",
        [],
        [feat("e", T.FLOAT, ["N", C, 8, 8])],
        [nh.from_array(np.float32(0.5), "half")],
    )
    nodes = [
        h.make_node("Conv", ["x", "W1", "B1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
        h.make_node("ReduceMean", ["x"], ["m"], keepdims=0, name="mean"),
        h.make_node("Greater", ["m", "zero"], ["cond"], name="positive"),
        h.make_node("If", ["cond"], ["b"], then_branch=then, else_branch=els, name="branch"),
        h.make_node("Conv", ["b", "W3", "B3"], ["y"], name="conv3"),
    ]
    inits = [
        w((C, 3, 3, 3), "W1"),
        nh.from_array(rng.normal(size=C).astype(np.float32) * 0.1, "B1"),
        w((2, C, 1, 1), "W3"),
        nh.from_array(np.zeros(2, np.float32), "B3"),
        nh.from_array(np.float32(0.0), "zero"),
    ]
    g = h.make_graph(
        nodes,
        "conv_if",
        [feat("x", T.FLOAT, ["N", 3, 8, 8])],
        [feat("y", T.FLOAT, ["N", 2, 8, 8])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    return m


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - got) ** 2), 1e-30)))


def test_if_is_a_float_island_and_quantizes_close_to_float():
    model = conv_if_model()
    rng = np.random.default_rng(3)
    # Batches of one, half with a positive mean (then-branch) and half negative.
    calib = rng.normal(size=(32, 3, 8, 8)).astype(np.float32)
    calib += np.where(np.arange(32) % 2 == 0, 0.3, -0.3).astype(np.float32)[:, None, None, None]
    loaded = oxiquant.load(model)
    q = oxiquant.quantize_network(loaded, 8, [c[None] for c in calib])
    islands = {name: reason for name, _, reason in q.quant_info["float_nodes"]}
    assert "branch" in islands and "control flow" in islands["branch"], islands
    # Nothing inside the branches was touched: their weights are not among the quantized ones.
    quantized = {a["tensor"] for a in q.quant_info["activations"]}
    assert not {"c2", "t", "r", "e"} & quantized
    for shift in (0.3, -0.3):
        x = (rng.normal(size=(1, 3, 8, 8)) + shift).astype(np.float32)
        ref = ort_run(model, x)
        got = q.run(x)["y"]
        assert sqnr_db(ref, got) > 25, (shift, sqnr_db(ref, got))
        # The QDQ export runs in onnxruntime and agrees within two steps of the output.
        qdq = q.to_onnx("qdq")
        onnx.checker.check_model(qdq, full_check=True)
        step = np.abs(ref).max() / 127
        assert np.abs(ort_run(qdq, x) - got).max() <= 2 * step, shift
        # The fake-quantized export too.
        assert np.abs(ort_run(q.to_onnx(), x) - q.run(x, mode="fake")["y"]).max() <= 1e-4
