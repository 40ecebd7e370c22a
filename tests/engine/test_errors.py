"""Every error is an OxiquantError subclass whose message names the problem and where."""

import numpy as np
import onnx
import pytest
from onnx import helper

import oxiquant

import zoo
from zoo import demo_model

VI = helper.make_tensor_value_info


def test_hierarchy():
    for cls in (
        oxiquant.UnsupportedOpError,
        oxiquant.ModelFormatError,
        oxiquant.ShapeError,
        oxiquant.InvalidArgumentError,
        oxiquant.InternalError,
    ):
        assert issubclass(cls, oxiquant.OxiquantError)
    assert issubclass(oxiquant.OxiquantError, Exception)


def test_unsupported_ops_are_all_listed_with_first_node():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r"),
        helper.make_node("Bernoulli", ["a"], ["b"], name="det_first"),
        helper.make_node("Bernoulli", ["b"], ["c"], name="det_second"),
        helper.make_node("Multinomial", ["c"], ["d"], name="sample_node", sample_size=2),
    ]
    proto = zoo.make_model(nodes, [VI("x", 1, [1, 4])], [VI("d", 7, None)])
    with pytest.raises(oxiquant.UnsupportedOpError) as ei:
        oxiquant.load(proto)
    msg = str(ei.value)
    assert "Bernoulli (2 nodes, first 'det_first')" in msg and "Multinomial (1 node, first 'sample_node')" in msg
    assert [(u[0], u[1], u[2]) for u in ei.value.unsupported] == [
        ("Bernoulli", "det_first", 2),
        ("Multinomial", "sample_node", 1),
    ]


def test_unsupported_attribute_is_not_ignored():
    n = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="lanczos", name="up")
    s = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    proto = zoo.make_model([n], [VI("x", 1, [1, 1, 2, 2])], [VI("y", 1, None)], [s])
    with pytest.raises(oxiquant.UnsupportedOpError, match="Resize.*'up'.*lanczos"):
        oxiquant.load(proto)


@pytest.mark.parametrize("blob", [b"", b"\x00\x01garbage", b"\xff" * 100])
def test_garbage_bytes(blob, tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(blob)
    with pytest.raises(oxiquant.ModelFormatError, match="bad.onnx"):
        oxiquant.load(p)


def test_truncated_model(tmp_path):
    data = demo_model().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(oxiquant.ModelFormatError):
        oxiquant.load(p)


def test_missing_file_and_wrong_type():
    with pytest.raises(oxiquant.ModelFormatError, match="no ONNX file"):
        oxiquant.load("/definitely/not/here.onnx")
    with pytest.raises(oxiquant.ModelFormatError, match="int"):
        oxiquant.load(42)


def test_cycle_is_named():
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2")]
    proto = zoo.make_model(nodes + [helper.make_node("Relu", ["x"], ["y"])], [VI("x", 1, [1])], [VI("y", 1, None)])
    with pytest.raises(oxiquant.ModelFormatError, match="cycle.*n1"):
        oxiquant.load(proto)


def test_dangling_input_is_named():
    proto = zoo.make_model(
        [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")], [VI("x", 1, [1])], [VI("y", 1, None)]
    )
    with pytest.raises(oxiquant.ModelFormatError, match="'adder'.*'ghost'"):
        oxiquant.load(proto)


def test_duplicate_producer_is_named():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")]
    proto = zoo.make_model(nodes, [VI("x", 1, [1])], [VI("y", 1, None)])
    with pytest.raises(oxiquant.ModelFormatError, match="'y' is produced by both node 'a' and node 'b'"):
        oxiquant.load(proto)


def test_opset_from_the_future():
    proto = zoo.make_model([helper.make_node("Relu", ["x"], ["y"])], [VI("x", 1, [1])], [VI("y", 1, None)])
    proto.opset_import[0].version = 99
    with pytest.raises(oxiquant.ModelFormatError, match="opset 99"):
        oxiquant.load(proto)


def test_wrong_input_shape_rank_dtype_and_name(rng):
    m = oxiquant.load(demo_model())
    with pytest.raises(
        oxiquant.ShapeError, match=r"input 'x' expects float32 \[N, 1, 28, 28\], got float32 \[2, 3, 28, 28\]"
    ):
        m.run(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(oxiquant.ShapeError, match=r"\[28, 28\]"):
        m.run(np.zeros((28, 28), np.float32))
    with pytest.raises(oxiquant.ShapeError, match="expects float32, got float64"):
        m.run(np.zeros((1, 1, 28, 28)))
    with pytest.raises(oxiquant.ShapeError, match="unknown input 'y'"):
        m.run({"x": np.zeros((1, 1, 28, 28), np.float32), "y": np.zeros(1, np.float32)})
    with pytest.raises(oxiquant.ShapeError, match="missing input 'x'"):
        m.run({})


def test_runtime_error_names_node():
    # A Reshape to an impossible shape only fails at run time: the node and op are named.
    shape = onnx.numpy_helper.from_array(np.array([7, -1], np.int64), "shape")
    proto = zoo.make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="bad_reshape")],
        [VI("x", 1, ["N", 4])],
        [VI("y", 1, None)],
        [shape],
    )
    m = oxiquant.load(proto)
    with pytest.raises(oxiquant.ShapeError, match="node 'bad_reshape' \\(Reshape\\).*cannot reshape"):
        m.run(np.zeros((3, 4), np.float32))
