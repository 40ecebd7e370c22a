"""Models as exporters write them: -1 for a dynamic dimension, shape arithmetic computed at run
time on a dynamic batch (Shape -> Gather -> Concat -> Reshape), float16 and float64 graphs
(computed in float32). Each against onnxruntime; the quantized shape-arithmetic head against
the fake-quantized graph and the QDQ export run in onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import oxiquant


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def shape_head_model(batch_dim) -> onnx.ModelProto:
    """A PP-LCNet-style tail: Conv -> HardSwish -> GlobalAveragePool, then the pooled tensor is
    flattened by a Reshape whose shape is computed from Shape(x)[0] at run time."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32), "W"),
        nh.from_array(rng.normal(size=8).astype(np.float32) * 0.1, "B"),
        nh.from_array((rng.normal(size=(8, 5)) * 0.3).astype(np.float32), "FW"),
        nh.from_array(np.array([-1], np.int64), "minus1"),
        nh.from_array(np.array(0, np.int64), "zero"),
        nh.from_array(np.array([0], np.int64), "axis0"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        h.make_node("HardSwish", ["c"], ["hs"], name="hardswish"),
        h.make_node("GlobalAveragePool", ["hs"], ["p"], name="pool"),
        h.make_node("Shape", ["p"], ["s"], name="shape"),
        h.make_node("Gather", ["s", "zero"], ["n"], axis=0, name="batch"),
        h.make_node("Unsqueeze", ["n", "axis0"], ["n1"], name="unsqueeze"),
        h.make_node("Concat", ["n1", "minus1"], ["target"], axis=0, name="target_shape"),
        h.make_node("Reshape", ["p", "target"], ["f"], name="flatten"),
        h.make_node("MatMul", ["f", "FW"], ["y"], name="fc"),
    ]
    graph = h.make_graph(
        nodes,
        "shape_head",
        [h.make_tensor_value_info("x", T.FLOAT, [batch_dim, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [batch_dim, 5])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 14)])


@pytest.mark.parametrize("batch_dim", [-1, "N", None])
def test_dynamic_batch_dimension_loads_and_runs_like_onnxruntime(batch_dim):
    model = shape_head_model(batch_dim)
    m = oxiquant.load(model)
    for batch in (1, 4):
        x = np.random.default_rng(batch).normal(size=(batch, 3, 8, 8)).astype(np.float32)
        want = ort_run(model, {"x": x})["y"]
        got = m.run(x)["y"]
        assert got.shape == (batch, 5)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert m.inputs[0][2][0] in (None, "N")


def test_negative_dimension_other_than_minus_one_is_refused():
    model = shape_head_model(-2)
    with pytest.raises(oxiquant.ModelFormatError, match="negative dimension -2"):
        oxiquant.load(model)


def test_shape_arithmetic_is_never_quantized():
    model = shape_head_model(-1)
    rng = np.random.default_rng(1)
    cal = [rng.normal(size=(4, 3, 8, 8)).astype(np.float32) for _ in range(2)]
    q = oxiquant.quantize_network(oxiquant.load(model), 8, cal)
    quantized = {a["tensor"] for a in q.quant_info["activations"]}
    assert not quantized & {"s", "n", "n1", "target"}
    for batch in (1, 3):
        x = rng.normal(size=(batch, 3, 8, 8)).astype(np.float32)
        got = q.run(x, mode="int")["y"]
        fake = q.run(x, mode="fake")["y"]
        assert got.shape == (batch, 5)
        np.testing.assert_allclose(got, fake, rtol=1e-5, atol=1e-6)
        # The QDQ and QOperator exports keep the run-time shape arithmetic and run in onnxruntime.
        for fmt in ("qdq", "qoperator"):
            exported = ort_run(q.to_onnx(fmt), {"x": x})["y"]
            step = np.abs(fake).max() / 127
            np.testing.assert_allclose(exported, got, atol=2 * step, err_msg=fmt)
        # Close to the float model's outputs (8 bits; this random net measures about 27 dB).
        want = ort_run(model, {"x": x})["y"]
        assert 10 * np.log10((want**2).sum() / ((got - want) ** 2).sum()) > 20


@pytest.mark.parametrize("elem, np_type", [(T.DOUBLE, np.float64), (T.FLOAT16, np.float16)])
def test_float64_and_float16_models_are_computed_in_float32(elem, np_type):
    rng = np.random.default_rng(2)
    w = (rng.normal(size=(6, 4)) * 0.5).astype(np_type)
    b = rng.normal(size=4).astype(np_type)
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["m"]),
        h.make_node("Add", ["m", "B"], ["a"]),
        h.make_node("Relu", ["a"], ["r"]),
        h.make_node("Cast", ["r"], ["y32"], to=T.FLOAT),
        h.make_node("Cast", ["y32"], ["y"], to=elem),
    ]
    graph = h.make_graph(
        nodes,
        "wide",
        [h.make_tensor_value_info("x", elem, ["N", 6])],
        [h.make_tensor_value_info("y", elem, ["N", 4])],
        [nh.from_array(w, "W"), nh.from_array(b, "B")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    m = oxiquant.load(model)
    assert m.float_types == {"x": str(np.dtype(np_type)), "y": str(np.dtype(np_type))}
    assert "computed in float32" in m.summary()
    assert m.inputs[0][1] == str(np.dtype(np_type))
    x = rng.normal(size=(5, 6)).astype(np_type)
    want = ort_run(model, {"x": x})["y"]
    got = m.run(x)["y"]
    assert got.dtype == np_type
    tol = 1e-5 if np_type == np.float64 else 2e-2  # float16 rounds each op's result in onnxruntime
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)
    # float32 arrays are taken too; anything else is refused with the declared type named.
    m.run(x.astype(np.float32))
    with pytest.raises(oxiquant.ShapeError, match=str(np.dtype(np_type))):
        m.run(x.astype(np.int32))
