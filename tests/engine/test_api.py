"""The public Python API: load / run / save / summary / threads."""

import copy

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import oxiquant

import zoo
from zoo import demo_model


def two_input_model():
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    return zoo.make_model(
        nodes,
        [helper.make_tensor_value_info("a", 1, ["N", 4]), helper.make_tensor_value_info("b", 1, ["N", 4])],
        [helper.make_tensor_value_info("y", 1, ["N", 4])],
    )


def test_run_accepts_array_dict_and_list(rng):
    proto = demo_model()
    m = oxiquant.load(proto)
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    ref = ReferenceEvaluator(proto).run(None, {"x": x})[0]
    for arg in (x, {"x": x}, [x]):
        np.testing.assert_allclose(m.run(arg)["logits"], ref, rtol=1e-4, atol=1e-5)


def test_dynamic_batch_and_non_contiguous_input(rng):
    m = oxiquant.load(demo_model())
    x = rng.standard_normal((28, 28, 5, 1)).astype(np.float32).transpose(2, 3, 0, 1)
    assert not x.flags.c_contiguous
    out = m.run(x)["logits"]
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, m.run(np.ascontiguousarray(x))["logits"])


def test_multi_input_model(rng):
    m = oxiquant.load(two_input_model())
    a, b = rng.standard_normal((2, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(m.run({"a": a, "b": b})["y"], np.maximum(a + b, 0))
    with pytest.raises(oxiquant.ShapeError, match="2 inputs"):
        m.run(a)


def test_save_roundtrip_passes_checker(tmp_path, rng):
    m = oxiquant.load(demo_model())
    path = m.save(tmp_path / "sub" / "model.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    m2 = oxiquant.load(path)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(m.run(x)["logits"], m2.run(x)["logits"])
    assert m2.op_counts() == m.op_counts()


def test_load_from_bytes_and_external_data(tmp_path, rng):
    proto = demo_model()
    m_bytes = oxiquant.load(proto.SerializeToString())
    path = tmp_path / "ext.onnx"
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    assert (tmp_path / "ext.data").exists()
    m_ext = oxiquant.load(path)
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(m_bytes.run(x)["logits"], m_ext.run(x)["logits"])


def test_summary_and_repr():
    m = oxiquant.load(demo_model())
    s = m.summary()
    assert "Conv x3" in s and "input  x: float32 [N, 1, 28, 28]" in s and "8,586 parameters" in s
    assert m.num_parameters == 8 * 9 + 8 + 8 * 8 * 9 + 8 + 64 + 8 + 784 * 10 + 10
    assert "demo_cnn" in repr(m)
    assert m.inputs == [("x", "float32", ["N", 1, 28, 28])]


def test_constant_folding_on_load():
    # Reshape whose shape comes from a Constant -> Concat chain is folded to one node.
    c0 = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([-1], np.int64)))
    c1 = helper.make_node("Constant", [], ["j"], value=numpy_helper.from_array(np.array([6], np.int64)))
    cat = helper.make_node("Concat", ["k", "j"], ["shape"], axis=0)
    r = helper.make_node("Reshape", ["x", "shape"], ["y"])
    proto = zoo.make_model(
        [c0, c1, cat, r],
        [helper.make_tensor_value_info("x", 1, [2, 3, 2])],
        [helper.make_tensor_value_info("y", 1, None)],
    )
    assert oxiquant.load(proto).op_counts() == {"Reshape": 1}
    assert oxiquant.load(proto, fold_constants=False).op_counts() == {"Constant": 2, "Concat": 1, "Reshape": 1}


def test_threads_setting(rng):
    m = oxiquant.load(demo_model())
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref = m.run(x, num_threads=1)["logits"]
    np.testing.assert_allclose(m.run(x, num_threads=2)["logits"], ref, rtol=1e-5, atol=1e-6)
    old = oxiquant.get_num_threads()
    try:
        oxiquant.set_num_threads(1)
        assert oxiquant.get_num_threads() == 1
    finally:
        oxiquant.set_num_threads(None)
    assert oxiquant.get_num_threads() == old
    with pytest.raises(oxiquant.InvalidArgumentError):
        m.run(x, num_threads=0)
    with pytest.raises(oxiquant.InvalidArgumentError):
        oxiquant.set_num_threads(0)


@pytest.mark.parametrize("make_copy", [copy.deepcopy, copy.copy, oxiquant.Model.copy])
def test_copy_is_independent(rng, make_copy):
    """Changing a copy (here: PTQ steps that rewrite its graph and weights) leaves the
    original as it was, and changing the original leaves the copy."""
    proto = demo_model()
    x = rng.standard_normal((4, *[d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:]))
    x = x.astype(np.float32)
    m = oxiquant.load(proto)
    name = m.output_names[0]
    graph, out = m.to_onnx().SerializeToString(), m.run(x)[name]

    c = make_copy(m)
    assert c is not m and c._native is not m._native
    assert c.to_onnx().SerializeToString() == graph
    oxiquant.prepare_network(c)
    oxiquant.insert_scaling_nodes(c)
    oxiquant.normalize_parameters(c)
    assert c.to_onnx().SerializeToString() != graph and c.quant_info["stage"] != "float"
    assert m.to_onnx().SerializeToString() == graph and m.quant_info["stage"] == "float"
    np.testing.assert_array_equal(m.run(x)[name], out)

    # ... and the other way round: the original changes, a copy taken before does not.
    c2 = make_copy(m)
    oxiquant.prepare_network(m)
    oxiquant.insert_scaling_nodes(m)
    oxiquant.normalize_parameters(m)
    assert c2.to_onnx().SerializeToString() == graph and c2.quant_info["stage"] == "float"
    np.testing.assert_array_equal(c2.run(x)[name], out)


def test_run_fetches_intermediate_values_matching_onnxruntime():
    import onnxruntime as ort

    proto = demo_model()
    model = oxiquant.load(proto)
    hidden = proto.graph.node[0].output[0]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:]
    x = np.random.default_rng(0).standard_normal((2, *dims)).astype(np.float32)
    got = model.run(x, fetch=[hidden])
    assert set(got) == {*model.output_names, hidden}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    exposed.graph.output.append(helper.make_empty_tensor_value_info(hidden))
    sess = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run([hidden], {proto.graph.input[0].name: x})
    np.testing.assert_allclose(got[hidden], want, rtol=1e-4, atol=1e-5)
    with pytest.raises(oxiquant.InvalidArgumentError, match="cannot fetch 'nope'"):
        model.run(x, fetch=["nope"])
