"""Control flow (If, Loop, Scan) against onnxruntime: hand-built models covering conditions
both ways, trip counts and conditions, carried values and scan outputs, scan axes and
directions, bodies reading outer-scope values, nesting, the errors, and the round trip through
`save`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import oxiquant

from op_models import run_onnxruntime

RTOL, ATOL = 1e-5, 1e-6


def model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(m, full_check=True)
    return m


def vi(name, elem=T.FLOAT, shape=None):
    return h.make_tensor_value_info(name, elem, shape)


def check(m: onnx.ModelProto, feeds: dict, roundtrip: bool = True) -> dict:
    """The engine's outputs equal onnxruntime's, and so do those of the model it saves."""
    ref = run_onnxruntime(m, feeds)
    loaded = oxiquant.load(m)
    got = loaded.run(feeds)
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype, k
        assert got[k].shape == ref[k].shape, (k, got[k].shape, ref[k].shape)
        np.testing.assert_allclose(got[k], ref[k], rtol=RTOL, atol=ATOL, err_msg=k)
    if roundtrip:
        saved = loaded.to_onnx()
        onnx.checker.check_model(saved, full_check=True)
        again = run_onnxruntime(saved, feeds)
        for k in ref:
            np.testing.assert_allclose(again[k], ref[k], rtol=RTOL, atol=ATOL, err_msg=k)
    return got


def if_model(opset: int = 17) -> onnx.ModelProto:
    """y = cond ? relu(x) + a : x * b, the branches reading x, a and b from the outer graph."""
    then = h.make_graph(
        [h.make_node("Relu", ["x"], ["r"]), h.make_node("Add", ["r", "a"], ["t_out"])],
        "then",
        [],
        [vi("t_out", T.FLOAT, [2, 3])],
    )
    els = h.make_graph([h.make_node("Mul", ["x", "b"], ["e_out"])], "else", [], [vi("e_out", T.FLOAT, [2, 3])])
    inits = [nh.from_array(np.float32([1, 2, 3]), "a"), nh.from_array(np.float32(0.5), "b")]
    return model(
        [h.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=els, name="choose")],
        [vi("cond", T.BOOL, []), vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [2, 3])],
        inits,
        opset,
    )


@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("opset", [11, 17, 21])
def test_if_takes_either_branch(cond, opset):
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    check(if_model(opset), {"cond": np.array(cond), "x": x})


def test_if_outer_values_are_explicit_inputs():
    m = oxiquant.load(if_model())
    # The loaded graph lists what the branches read; the saved one does not.
    saved = m.to_onnx()
    node = next(n for n in saved.graph.node if n.op_type == "If")
    assert list(node.input) == ["cond"]
    assert m.op_counts()["If"] == 1


def test_if_branches_of_different_shapes():
    # The branches disagree on the shape: the facts keep what they agree on.
    then = h.make_graph(
        [h.make_node("Concat", ["x", "x"], ["t"], axis=0)], "then", [], [vi("t", T.FLOAT, [None, 3])]
    )
    els = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", T.FLOAT, [None, 3])])
    m = model(
        [h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els), h.make_node("Relu", ["y"], ["z"])],
        [vi("c", T.BOOL, []), vi("x", T.FLOAT, [2, 3])],
        [vi("z", T.FLOAT, [None, 3])],
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    for c in (True, False):
        check(m, {"c": np.array(c), "x": x})


def loop_model(with_m: bool, with_cond: bool, scan: bool, opset: int = 17) -> onnx.ModelProto:
    """Carries s (s = s * w + i, w read from the outer graph) while i < M and/or s < limit;
    the scan output stacks each s."""
    body_nodes = [
        h.make_node("Cast", ["i"], ["i_f"], to=T.FLOAT),
        h.make_node("Mul", ["s_in", "w"], ["sw"]),
        h.make_node("Add", ["sw", "i_f"], ["s_out"]),
        h.make_node("ReduceMax", ["s_out"], ["top"], keepdims=0),
        h.make_node("Less", ["top", "limit"], ["c_out"]),
    ]
    outs = [vi("c_out", T.BOOL, []), vi("s_out", T.FLOAT, [3])]
    if scan:
        body_nodes.append(h.make_node("Identity", ["s_out"], ["each"]))
        outs.append(vi("each", T.FLOAT, [3]))
    body = h.make_graph(
        body_nodes, "body", [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("s_in", T.FLOAT, [3])], outs
    )
    graph_outputs = [vi("s_final", T.FLOAT, [3])] + ([vi("stacked", T.FLOAT, [None, 3])] if scan else [])
    node = h.make_node(
        "Loop",
        ["M" if with_m else "", "cond" if with_cond else "", "s0"],
        ["s_final"] + (["stacked"] if scan else []),
        body=body,
        name="loop",
    )
    inits = [
        nh.from_array(np.float32([1.5, 1.0, 0.5]), "w"),
        nh.from_array(np.float32(40.0), "limit"),
        nh.from_array(np.array(True), "cond"),
    ]
    inputs = [vi("s0", T.FLOAT, [3])] + ([vi("M", T.INT64, [])] if with_m else [])
    return model([node], inputs, graph_outputs, inits if with_cond else inits[:2], opset)


@pytest.mark.parametrize(
    "with_m, with_cond", [(True, False), (False, True), (True, True)], ids=["trip_count", "condition", "both"]
)
@pytest.mark.parametrize("scan", [False, True], ids=["carried", "scan_outputs"])
@pytest.mark.parametrize("trips", [0, 1, 3, 50])
def test_loop(with_m, with_cond, scan, trips):
    m = loop_model(with_m, with_cond, scan)
    feeds = {"s0": np.float32([0.5, -1.0, 2.0])}
    if with_m:
        feeds["M"] = np.array(trips, np.int64)
    elif trips != 3:
        pytest.skip("the trip count matters only with M")
    check(m, feeds)


def scan_model(directions, axes, out_directions, out_axes, opset=17) -> onnx.ModelProto:
    """A running sum over the first scan input (state), plus the element times a factor read
    from the outer graph, as scan outputs; two scan inputs."""
    body = h.make_graph(
        [
            h.make_node("Add", ["acc_in", "a"], ["acc_out"]),
            h.make_node("Mul", ["b", "k"], ["bk"]),
            h.make_node("Add", ["bk", "acc_out"], ["y"]),
            h.make_node("Identity", ["acc_out"], ["acc_seen"]),
        ],
        "body",
        [vi("acc_in", T.FLOAT, [4]), vi("a", T.FLOAT, [4]), vi("b", T.FLOAT, [4])],
        [vi("acc_out", T.FLOAT, [4]), vi("y", T.FLOAT, [4]), vi("acc_seen", T.FLOAT, [4])],
    )
    shapes = {0: [5, 4], 1: [4, 5], -1: [4, 5], -2: [5, 4]}
    node = h.make_node(
        "Scan",
        ["acc0", "A", "B"],
        ["acc", "Y", "S"],
        body=body,
        num_scan_inputs=2,
        scan_input_directions=directions,
        scan_input_axes=axes,
        scan_output_directions=out_directions,
        scan_output_axes=out_axes,
        name="scan",
    )
    return model(
        [node],
        [vi("acc0", T.FLOAT, [4]), vi("A", T.FLOAT, shapes[axes[0]]), vi("B", T.FLOAT, shapes[axes[1]])],
        [vi("acc", T.FLOAT, [4]), vi("Y", T.FLOAT, [None, None]), vi("S", T.FLOAT, [None, None])],
        [nh.from_array(np.float32(3.0), "k")],
        opset,
    )


SCAN_CASES = [
    ([0, 0], [0, 0], [0, 0], [0, 0]),
    ([1, 0], [0, 0], [0, 0], [0, 0]),
    ([0, 1], [0, 1], [1, 0], [0, 1]),
    ([1, 1], [1, 0], [0, 1], [1, 0]),
    ([0, 1], [-1, 0], [1, 1], [-1, 0]),
]


@pytest.mark.parametrize("directions, axes, out_directions, out_axes", SCAN_CASES)
def test_scan_axes_and_directions(directions, axes, out_directions, out_axes):
    m = scan_model(directions, axes, out_directions, out_axes)
    rng = np.random.default_rng(1)
    shapes = {0: (5, 4), 1: (4, 5), -1: (4, 5), -2: (5, 4)}
    feeds = {
        "acc0": rng.normal(size=4).astype(np.float32),
        "A": rng.normal(size=shapes[axes[0]]).astype(np.float32),
        "B": rng.normal(size=shapes[axes[1]]).astype(np.float32),
    }
    check(m, feeds)


def test_if_nested_in_a_loop_reads_both_enclosing_graphs():
    # Inside the loop: s = (i is even) ? s + w : s * 0.5, where w belongs to the outer graph
    # and s to the loop body.
    then = h.make_graph([h.make_node("Add", ["s_in", "w"], ["t"])], "then", [], [vi("t", T.FLOAT, [3])])
    els = h.make_graph([h.make_node("Mul", ["s_in", "half"], ["e"])], "else", [], [vi("e", T.FLOAT, [3])])
    body = h.make_graph(
        [
            h.make_node("Mod", ["i", "two"], ["r"]),
            h.make_node("Equal", ["r", "zero"], ["even"]),
            h.make_node("If", ["even"], ["s_out"], then_branch=then, else_branch=els, name="inner_if"),
            h.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("s_in", T.FLOAT, [3])],
        [vi("c_out", T.BOOL, []), vi("s_out", T.FLOAT, [3])],
        [nh.from_array(np.int64(2), "two"), nh.from_array(np.int64(0), "zero")],
    )
    m = model(
        [h.make_node("Loop", ["M", "", "s0"], ["s"], body=body, name="outer_loop")],
        [vi("M", T.INT64, []), vi("s0", T.FLOAT, [3])],
        [vi("s", T.FLOAT, [3])],
        [nh.from_array(np.float32([1, 2, 3]), "w"), nh.from_array(np.float32(0.5), "half")],
    )
    for trips in (0, 1, 4, 7):
        check(m, {"M": np.array(trips, np.int64), "s0": np.float32([1, -1, 0.25])})


def test_a_value_read_by_a_body_that_exists_nowhere_is_an_error_naming_it():
    then = h.make_graph([h.make_node("Add", ["x", "ghost"], ["t"])], "then", [], [vi("t", T.FLOAT, [2])])
    els = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", T.FLOAT, [2])])
    g = h.make_graph(
        [h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els, name="picky")],
        "g",
        [vi("c", T.BOOL, []), vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(oxiquant.ModelFormatError, match=r"node 'picky' \(If\).*'ghost'"):
        oxiquant.load(m)


def test_a_nested_body_reading_a_missing_value_names_the_outer_node():
    inner_then = h.make_graph([h.make_node("Identity", ["nowhere"], ["t"])], "t", [], [vi("t", T.FLOAT, [1])])
    inner_else = h.make_graph([h.make_node("Identity", ["s_in"], ["e"])], "e", [], [vi("e", T.FLOAT, [1])])
    body = h.make_graph(
        [
            h.make_node("If", ["c_in"], ["s_out"], then_branch=inner_then, else_branch=inner_else),
            h.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("s_in", T.FLOAT, [1])],
        [vi("c_out", T.BOOL, []), vi("s_out", T.FLOAT, [1])],
    )
    g = h.make_graph(
        [h.make_node("Loop", ["M", "", "s0"], ["s"], body=body, name="looper")],
        "g",
        [vi("M", T.INT64, []), vi("s0", T.FLOAT, [1])],
        [vi("s", T.FLOAT, [1])],
    )
    with pytest.raises(oxiquant.ModelFormatError, match=r"node 'looper' \(Loop\).*'nowhere'"):
        oxiquant.load(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))


def test_an_unsupported_op_inside_a_body_is_reported():
    then = h.make_graph([h.make_node("Bernoulli", ["x"], ["t"])], "then", [], [vi("t", T.FLOAT, [2])])
    els = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", T.FLOAT, [2])])
    g = h.make_graph(
        [h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els)],
        "g",
        [vi("c", T.BOOL, []), vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    with pytest.raises(oxiquant.UnsupportedOpError, match="Bernoulli"):
        oxiquant.load(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 6),  # (onnxruntime fails on an empty sequence)
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_scan_matches_onnxruntime_on_random_shapes(width, length, reverse, seed):
    body = h.make_graph(
        [h.make_node("Add", ["acc_in", "a"], ["acc_out"]), h.make_node("Tanh", ["acc_out"], ["y"])],
        "body",
        [vi("acc_in", T.FLOAT, [width]), vi("a", T.FLOAT, [width])],
        [vi("acc_out", T.FLOAT, [width]), vi("y", T.FLOAT, [width])],
    )
    m = model(
        [
            h.make_node(
                "Scan",
                ["acc0", "A"],
                ["acc", "Y"],
                body=body,
                num_scan_inputs=1,
                scan_input_directions=[int(reverse)],
            )
        ],
        [vi("acc0", T.FLOAT, [width]), vi("A", T.FLOAT, [length, width])],
        [vi("acc", T.FLOAT, [width]), vi("Y", T.FLOAT, [length, width])],
    )
    rng = np.random.default_rng(seed)
    feeds = {
        "acc0": rng.normal(size=width).astype(np.float32),
        "A": rng.normal(size=(length, width)).astype(np.float32),
    }
    check(m, feeds, roundtrip=False)


@pytest.mark.parametrize("cond", [True, False])
def test_an_if_on_a_constant_condition_becomes_its_branch(cond):
    # The condition is computed from constants (a Constant node, a comparison): folding makes
    # it a constant, and the If is replaced by the nodes of the branch it takes.
    then = h.make_graph(
        [h.make_node("Relu", ["x"], ["r"]), h.make_node("Add", ["r", "k"], ["t"])],
        "then",
        [],
        [vi("t", T.FLOAT, [2, 3])],
        [nh.from_array(np.float32(1.5), "k")],
    )
    els = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", T.FLOAT, [2, 3])])
    m = model(
        [
            h.make_node("Constant", [], ["c0"], value=nh.from_array(np.int64(16000 if cond else 8000))),
            h.make_node("Equal", ["c0", "sr"], ["c"]),
            h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els, name="by_rate"),
        ],
        [vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [2, 3])],
        [nh.from_array(np.int64(16000), "sr")],
    )
    x = np.random.default_rng(5).normal(size=(2, 3)).astype(np.float32)
    check(m, {"x": x})
    loaded = oxiquant.load(m)
    assert "If" not in loaded.op_counts()
    assert "If" in oxiquant.load(m, fold_constants=False).op_counts()
