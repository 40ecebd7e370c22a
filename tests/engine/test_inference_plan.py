"""The float inference plan (BatchNormalization folded, convolutions fused with the Add and
Relu/Clip that only read them, weights packed once): what `Model.run` executes for a float
model. Checked against onnxruntime and against the unplanned graph (`run` with `fetch`
executes the model's own graph, since fusion would hide intermediate values)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import oxiquant

import ptq_graphs
import reference
from reference import assert_close, ort_run


def residual_block(
    c: int = 8, clip: bool = False, bn: bool = True, seed: int = 0, add: str = "Add", hw: tuple[int, int] = (9, 11)
) -> onnx.ModelProto:
    """x -> Conv -> [BN] -> Relu -> Conv -> Add(x) (or Sum) -> Relu|Clip -> y."""
    rng = np.random.default_rng(seed)

    def init(name, shape, lo=-0.5, hi=0.5):
        return numpy_helper.from_array(rng.uniform(lo, hi, shape).astype(np.float32), name)

    inits = [init("w1", (c, c, 3, 3)), init("b1", (c,)), init("w2", (c, c, 3, 3)), init("b2", (c,))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1])]
    first = "c1"
    if bn:
        inits += [init("g", (c,), 0.5, 1.5), init("be", (c,)), init("mu", (c,)), init("var", (c,), 0.5, 2.0)]
        nodes.append(helper.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn"]))
        first = "bn"
    nodes += [
        helper.make_node("Relu", [first], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node(add, ["x", "c2"], ["s"]),
    ]
    if clip:
        inits += [numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(0.75), "hi")]
        nodes.append(helper.make_node("Clip", ["s", "lo", "hi"], ["y"]))
    else:
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, *hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, *hw])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def unplanned(m: oxiquant.Model, x: np.ndarray) -> np.ndarray:
    # Fetching a value makes `run` execute the model's own graph.
    return m.run(x, fetch=["x"])["y"]


@pytest.mark.parametrize("add", ["Add", "Sum"])
def test_residual_block_fuses_and_matches_onnxruntime(add):
    for clip in (False, True):
        onnx_model = residual_block(clip=clip, add=add)
        m = oxiquant.load(onnx_model)
        assert m._native.plan_op_counts() == {"Conv+Clip": 1, "Conv+Add+Clip": 1}
        x = np.random.default_rng(1).uniform(-1, 1, (3, 8, 9, 11)).astype(np.float32)
        y = m.run(x)["y"]
        assert_close(y, ort_run(onnx_model, x)["y"], "plan vs onnxruntime", rtol=1e-5)
        assert_close(y, unplanned(m, x), "plan vs graph", rtol=1e-5)
        if clip:
            assert y.max() <= 0.75 and y.min() >= 0.0


def float64_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model evaluated in float64 by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for v in [*m.graph.input, *m.graph.output]:
        v.type.tensor_type.elem_type = TensorProto.DOUBLE
    return ReferenceEvaluator(m).run(None, {"x": x.astype(np.float64)})[0]


def test_wide_layers_run_the_winograd_kernel_and_match_onnxruntime():
    # 64 channels on 29 x 30 outputs: the Winograd kernel's rule (64-128 channels, 28 x 28
    # outputs or more), an odd height (a cut last tile row), the residual and the clamp in
    # its store; on 8 x 8 inputs the same plan runs the direct kernel. Winograd rounds
    # differently from a direct sum: both engines are held to the float64 result, within
    # 2e-6 of the largest unclipped output (measured: 4.4e-7 here, onnxruntime's 3.2e-7).
    for clip, hw in ((False, (29, 30)), (True, (29, 30)), (False, (8, 8))):
        onnx_model = residual_block(c=64, clip=clip, bn=False, hw=hw, seed=3)
        m = oxiquant.load(onnx_model)
        assert m._native.plan_op_counts() == {"Conv+Clip": 1, "Conv+Add+Clip": 1}
        x = np.random.default_rng(4).uniform(-1, 1, (2, 64, *hw)).astype(np.float32)
        exact = float64_run(onnx_model, x)
        scale = np.abs(float64_run(residual_block(c=64, bn=False, hw=hw, seed=3), x)).max()
        runs = (("plan", m.run(x)["y"]), ("graph", unplanned(m, x)), ("onnxruntime", ort_run(onnx_model, x)["y"]))
        for name, y in runs:
            err = float(np.abs(y - exact).max())
            assert err <= 2e-6 * scale, f"{name} {hw} clip={clip}: error {err:.3g} for outputs up to {scale:.3g}"


def test_shared_values_are_not_fused_away():
    # The first convolution's output is also a graph output: it must stay as computed.
    onnx_model = residual_block(bn=False)
    onnx_model.graph.output.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, None))
    m = oxiquant.load(onnx_model)
    assert m._native.plan_op_counts() == {"Conv(packed)": 1, "Relu": 1, "Conv+Add+Clip": 1}
    x = np.random.default_rng(2).uniform(-1, 1, (2, 8, 9, 11)).astype(np.float32)
    got, want = m.run(x), ort_run(onnx_model, x)
    for name in ("y", "c1"):
        assert_close(got[name], want[name], name, rtol=1e-5)


def test_a_broadcasting_add_after_a_convolution_is_still_exact():
    # Add(conv, constant [1, C, 1, 1]) is fused as a residual whose shape differs: the plan
    # must compute the broadcast, not refuse it.
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.uniform(-1, 1, (6, 4, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.uniform(-1, 1, (1, 6, 1, 1)).astype(np.float32), "k"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Add", ["c", "k"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bcast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m = oxiquant.load(onnx_model)
    assert m._native.plan_op_counts() == {"Conv+Add+Clip": 1}
    x = rng.uniform(-1, 1, (2, 4, 10, 10)).astype(np.float32)
    assert_close(m.run(x)["y"], ort_run(onnx_model, x)["y"], "broadcast add", rtol=1e-5)


def test_run_after_a_pipeline_step_runs_the_edited_graph():
    # The plan is built at the first run; every step that edits the graph must drop it.
    onnx_model = ptq_graphs.small_cnn()
    m = oxiquant.load(onnx_model)
    assert m._native.plan_op_counts()["Conv+Add+Clip"] == 1
    x = np.random.default_rng(4).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    steps = [oxiquant.prepare_network, oxiquant.insert_scaling_nodes, oxiquant.normalize_parameters]
    for step in steps:
        m.run(x)  # builds the plan of the graph as it is now
        step(m)
        y = m.run(x)["y"]
        assert_close(y, ort_run(m.to_onnx(format="fake"), x)["y"], f"after {step.__name__}", rtol=1e-5)
    # The normalized network computes the float one divided by its recorded output scale:
    # a different output, which a stale plan would miss.
    assert not np.allclose(y, ort_run(onnx_model, x)["y"], rtol=1e-2)


@settings(max_examples=reference.examples(40), deadline=None)
@given(model=ptq_graphs.networks(), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_plan_matches_graph_and_onnxruntime_on_random_networks(model, batch, seed):
    m = oxiquant.load(model)
    x = np.random.default_rng(seed).standard_normal((batch, *ptq_graphs.input_shape(model))).astype(np.float32)
    planned = m.run(x)["y"]
    # BatchNormalization folding rounds the scaled weights: the tolerance of the PTQ tests.
    assert_close(planned, ort_run(model, x)["y"], "plan vs onnxruntime")
    assert_close(planned, unplanned(m, x), "plan vs graph")
