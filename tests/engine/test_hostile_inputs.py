"""Hostile inputs: every one gives a clear `OxiquantError` subclass whose message names the
problem and where, the process stays alive, and the user's model is left exactly as it was
(serialized graph, PTQ state and outputs compared before and after each failing call).
Degenerate but valid networks (all-zero weights, constantly zero activations) must quantize.

The table of docs/robustness.md is generated from `CASES` (`PYTHONPATH=tests python
tests/engine/test_hostile_inputs.py` rewrites it) and `test_the_docs_table_matches_the_cases`
checks it is current.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import oxiquant

import zoo
from ptq_graphs import dead_conv_cnn, init, small_cnn, two_input_model

VI = helper.make_tensor_value_info
DOC = Path(__file__).resolve().parents[2] / "docs" / "robustness.md"
BEGIN, END = "<!-- hostile-inputs:begin -->", "<!-- hostile-inputs:end -->"
STAGES = ("float", "prepare_network", "insert_scaling_nodes", "normalize_parameters", "compute_ranges")


class Ctx:
    """Hands out models and data to a case, snapshotting every model it hands out so that
    the harness can check none was modified by the failing call."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.calib = np.random.default_rng(5).standard_normal((24, 3, 8, 8)).astype(np.float32)
        self.models: list[tuple[oxiquant.Model, tuple[Any, ...]]] = []

    def model(self, stage: str = "float", proto: onnx.ModelProto | None = None, fold: bool = True) -> oxiquant.Model:
        m = oxiquant.load(proto if proto is not None else small_cnn(), fold_constants=fold)
        steps = [
            lambda: oxiquant.prepare_network(m),
            lambda: oxiquant.insert_scaling_nodes(m),
            lambda: oxiquant.normalize_parameters(m),
            lambda: oxiquant.compute_ranges(m, self.calib),
        ]
        for step in steps[: STAGES.index(stage)]:
            step()
        self.models.append((m, snapshot(m, self.calib_for(m))))
        return m

    def calib_for(self, m: oxiquant.Model) -> dict[str, np.ndarray]:
        if m.inputs[0][2] == ["N", 2, 5, 5]:
            return {"x": np.ones((2, 2, 5, 5), np.float32)}
        if m.input_names == ["x"]:
            return {"x": self.calib[:4]}
        return {n: np.zeros((2, *[d for d in s[1:]]), np.float32) for n, _, s in m.inputs}

    def file(self, data: bytes) -> Path:
        p = self.tmp / "model.onnx"
        p.write_bytes(data)
        return p


def snapshot(m: oxiquant.Model, feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
    try:
        outputs: Any = {k: v.tobytes() for k, v in m.run(feeds).items()}
    except oxiquant.OxiquantError as e:  # a model that cannot run (on purpose) fails the same way
        outputs = f"{type(e).__name__}: {e}"
    return (m.to_onnx().SerializeToString(), repr(m.quant_info), outputs)


@dataclass
class Case:
    id: str
    what: str  # the hostile input, as the docs table says it
    call: Callable[[Ctx], Any]
    error: type | None  # None: must succeed (then `check` verifies the result)
    excerpt: str  # must appear in the message (or, for a success, what the user gets)
    check: Callable[[Any, Ctx], None] | None = None


# -- models --------------------------------------------------------------------------------
def one_node(op: str, inputs: list[str], inits=(), x_shape=(1, 2, 5, 5), opset: int = 13, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, inputs, ["y"], name="hostile", **attrs)
    proto = zoo.make_model(
        [node], [VI("x", TensorProto.FLOAT, list(x_shape))], [VI("y", TensorProto.FLOAT, None)], inits, min(opset, 23)
    )
    proto.opset_import[0].version = opset
    return proto


def ints(name: str, v) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(v, np.int64), name)


def conv_weight() -> onnx.TensorProto:
    return init("W", np.ones((3, 2, 3, 3)))


X5 = np.ones((1, 2, 5, 5), np.float32)


def run_once(proto: onnx.ModelProto, x: np.ndarray = X5) -> Any:
    return oxiquant.load(proto).run(x)


def cycle_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Add", ["a", "x"], ["b"], name="second"),
        helper.make_node("Relu", ["b"], ["y"], name="out"),
    ]
    return zoo.make_model(nodes, [VI("x", 1, [1, 2])], [VI("y", 1, None)])


def duplicate_producer_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")]
    return zoo.make_model(nodes, [VI("x", 1, [2])], [VI("y", 1, None)])


def duplicate_node_names_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="same"), helper.make_node("Neg", ["a"], ["y"], name="same")]
    return zoo.make_model(nodes, [VI("x", 1, [2])], [VI("y", 1, None)])


def every_weight_zero_model() -> onnx.ModelProto:
    proto = small_cnn()
    for t in proto.graph.initializer:
        t.CopyFrom(init(t.name, np.zeros(numpy_helper.to_array(t).shape)))
    return proto


def ort_ref(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def quantizes_like_float(proto_fn: Callable[[], onnx.ModelProto]) -> Callable[[Any, Ctx], None]:
    def check(q: oxiquant.Model, ctx: Ctx) -> None:
        ref = ort_ref(proto_fn(), ctx.calib)
        y = q.run(ctx.calib)["y"]
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y, ref, atol=0.02 * max(float(np.abs(ref).max()), 1e-6))
        for a in q.quant_info["activations"]:
            assert a["step"] is None or (np.isfinite(a["step"]) and a["step"] > 0), a
        # onnxruntime on the exports: one output step, as for the other fixed models (a tie its
        # f32 arithmetic rounds the other way; on these models no later layer multiplies it).
        step = next(a["step"] for a in q.quant_info["activations"] if a["tensor"] == "y")
        bound = step * (1 + 1e-6)
        assert np.abs(ort_ref(q.to_onnx(), ctx.calib) - y).max() <= bound
        assert np.abs(ort_ref(q.to_onnx("qdq"), ctx.calib) - y).max() <= bound

    return check


def training_dropout_model() -> onnx.ModelProto:
    """Conv -> Dropout whose training_mode comes from a Constant node (true): loaded without
    folding, prepare_network only sees the constant after it has folded the graph."""
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Constant", [], ["train"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
        helper.make_node("Dropout", ["c", "ratio", "train"], ["y"], name="dropout"),
    ]
    proto = zoo.make_model(
        nodes,
        [VI("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [VI("y", TensorProto.FLOAT, None)],
        [conv_weight(), init("ratio", 0.5)],
    )
    return proto


def truncated(ctx: Ctx) -> Any:
    data = small_cnn().SerializeToString()
    return oxiquant.load(ctx.file(data[: len(data) * 2 // 3]))


def nan_batch(ctx: Ctx) -> np.ndarray:
    bad = ctx.calib.copy()
    bad[17, 0, 3, 3] = np.nan
    return bad


def generator_then_failure(ctx: Ctx):
    yield ctx.calib[:8]
    raise KeyboardInterrupt  # the user interrupts a long calibration


# -- the cases -----------------------------------------------------------------------------
CASES = [
    # Files and bytes.
    Case(
        "truncated-file",
        "a model file cut at two thirds",
        truncated,
        oxiquant.ModelFormatError,
        "is not a readable ONNX model",
    ),
    Case(
        "random-bytes",
        "random bytes as a model file",
        lambda c: oxiquant.load(c.file(np.random.default_rng(0).bytes(4096))),
        oxiquant.ModelFormatError,
        "is not a readable ONNX model",
    ),
    Case(
        "random-bytes-in-memory",
        "random bytes passed as `bytes`",
        lambda c: oxiquant.load(np.random.default_rng(1).bytes(4096)),
        oxiquant.ModelFormatError,
        "the bytes given are not an ONNX model",
    ),
    Case(
        "empty-file",
        "an empty file",
        lambda c: oxiquant.load(c.file(b"")),
        oxiquant.ModelFormatError,
        "holds no ONNX graph",
    ),
    Case(
        "missing-file",
        "a path to no file",
        lambda c: oxiquant.load(c.tmp / "nothing.onnx"),
        oxiquant.ModelFormatError,
        "no ONNX file at",
    ),
    # Graph structure.
    Case(
        "cycle",
        "a cycle (`first` -> `second` -> `first`)",
        lambda c: oxiquant.load(cycle_model()),
        oxiquant.ModelFormatError,
        'the graph has a cycle through node(s) ["first", "second"]',
    ),
    Case(
        "dangling-input",
        "a node reading a value nobody produces",
        lambda c: oxiquant.load(one_node("Add", ["x", "ghost"])),
        oxiquant.ModelFormatError,
        "node 'hostile' (Add) reads 'ghost', which no node, initializer or graph input provides",
    ),
    Case(
        "duplicate-producer",
        "two nodes writing the same value",
        lambda c: oxiquant.load(duplicate_producer_model()),
        oxiquant.ModelFormatError,
        "value 'y' is produced by both node 'a' and node 'b'",
    ),
    Case(
        "duplicate-initializer",
        "two initializers of the same name",
        lambda c: oxiquant.load(one_node("Add", ["x", "w"], [init("w", [1.0]), init("w", [2.0])])),
        oxiquant.ModelFormatError,
        "initializer 'w' is defined twice",
    ),
    Case(
        "duplicate-graph-input",
        "a graph input declared twice",
        lambda c: oxiquant.load(
            zoo.make_model(
                [helper.make_node("Relu", ["x"], ["y"])], [VI("x", 1, [2]), VI("x", 1, [2])], [VI("y", 1, None)]
            )
        ),
        oxiquant.ModelFormatError,
        "graph input 'x' is empty or declared twice",
    ),
    Case(
        "duplicate-node-names",
        "two nodes with the same name (allowed by ONNX)",
        lambda c: oxiquant.load(duplicate_node_names_model()).run(np.array([1.0, -2.0], np.float32)),
        None,
        "accepted: the second is renamed `same_1`; runs",
        lambda out, c: np.testing.assert_array_equal(out["y"], [-1.0, -0.0]),
    ),
    Case(
        "output-not-produced",
        "a graph output no node writes",
        lambda c: oxiquant.load(
            zoo.make_model([helper.make_node("Relu", ["x"], ["y"])], [VI("x", 1, [2])], [VI("z", 1, None)])
        ),
        oxiquant.ModelFormatError,
        "graph output 'z' is not produced by any node",
    ),
    Case(
        "unsupported-op",
        "an op the engine does not have (Bernoulli)",
        lambda c: oxiquant.load(one_node("Bernoulli", ["x"])),
        oxiquant.UnsupportedOpError,
        "unsupported op(s): Bernoulli (1 node, first 'hostile')",
    ),
    Case(
        "unknown-attribute",
        "an attribute value the op does not implement (Resize mode=lanczos)",
        lambda c: oxiquant.load(one_node("Resize", ["x", "", "s"], [init("s", [1, 1, 2, 2])], mode="lanczos")),
        oxiquant.UnsupportedOpError,
        "Resize (1 node, first 'hostile'): mode 'lanczos'",
    ),
    Case(
        "future-opset",
        "opset 99",
        lambda c: oxiquant.load(one_node("Relu", ["x"], opset=99)),
        oxiquant.ModelFormatError,
        "the model uses ai.onnx opset 99, newer than the newest oxiquant knows (28)",
    ),
    # Attributes and shape inputs that break arithmetic.
    Case(
        "conv-strides-0",
        "Conv with strides 0",
        lambda c: run_once(one_node("Conv", ["x", "W"], [conv_weight()], strides=[0, 0])),
        oxiquant.ShapeError,
        "node 'hostile' (Conv): shape error: strides [0, 0] should be 2 positive values",
    ),
    Case(
        "conv-negative-pads",
        "Conv with negative pads",
        lambda c: run_once(one_node("Conv", ["x", "W"], [conv_weight()], pads=[-1, -1, -1, -1])),
        oxiquant.ModelFormatError,
        "node 'hostile' (Conv): attribute 'pads' must be non-negative",
    ),
    Case(
        "conv-huge-pads",
        "Conv with pads of 2^40 (an output of ~10^25 elements)",
        lambda c: run_once(one_node("Conv", ["x", "W"], [conv_weight()], pads=[2**40] * 4)),
        oxiquant.ShapeError,
        "node 'hostile' (Conv): shape error: an output of shape [1, 3, 2199023255555, 2199023255555]"
        " would have more elements than memory can address",
    ),
    Case(
        "conv-pads-2^31",
        "Conv with pads of 2^31 (a 2^64-element output)",
        lambda c: run_once(one_node("Conv", ["x", "W"], [conv_weight()], pads=[2**31] * 4)),
        oxiquant.ShapeError,
        "would have more elements than memory can address",
    ),
    Case(
        "conv-huge-output",
        "Conv with pads of 2^20 (a 48 TiB output: addressable, but more than any RAM)",
        lambda c: run_once(one_node("Conv", ["x", "W"], [conv_weight()], pads=[2**20] * 4)),
        oxiquant.ShapeError,
        "GiB, which cannot be allocated",
    ),
    Case(
        "conv-huge-dilations",
        "Conv with dilations of 2^62",
        lambda c: run_once(one_node("Conv", ["x", "W"], [conv_weight()], dilations=[2**62] * 2)),
        oxiquant.ShapeError,
        "is smaller than the kernel [3, 3] with dilations [4611686018427387904, 4611686018427387904]",
    ),
    Case(
        "conv-bad-group",
        "Conv whose group does not divide the channels",
        lambda c: run_once(one_node("Conv", ["x", "W"], [conv_weight()], group=3)),
        oxiquant.ShapeError,
        "has 2 channels but weight [3, 2, 3, 3] with group 3 expects 6",
    ),
    Case(
        "pool-kernel-0",
        "MaxPool with kernel_shape [0, 0]",
        lambda c: run_once(one_node("MaxPool", ["x"], kernel_shape=[0, 0])),
        oxiquant.ModelFormatError,
        "node 'hostile' (MaxPool): kernel_shape [0, 0] must be positive",
    ),
    Case(
        "pool-huge-window",
        "AveragePool with kernel and pads of 2^62",
        lambda c: run_once(one_node("AveragePool", ["x"], kernel_shape=[2**62] * 2, pads=[2**62] * 4)),
        oxiquant.ShapeError,
        "would have more elements than memory can address",
    ),
    Case(
        "pool-huge-pads",
        "MaxPool with pads of 2^40",
        lambda c: run_once(one_node("MaxPool", ["x"], kernel_shape=[2, 2], pads=[2**40] * 4)),
        oxiquant.ShapeError,
        "would have more elements than memory can address",
    ),
    Case(
        "reshape-overflow",
        "Reshape to [2^40, 2^40]",
        lambda c: run_once(one_node("Reshape", ["x", "s"], [ints("s", [2**40, 2**40])])),
        oxiquant.ShapeError,
        "node 'hostile' (Reshape): shape error: cannot reshape [1, 2, 5, 5] (50 elements) to"
        " [1099511627776, 1099511627776]",
    ),
    Case(
        "reshape-empty-overflow",
        "Reshape (allowzero) of an empty tensor to [2^40, 2^40, 0]",
        lambda c: oxiquant.load(
            one_node("Reshape", ["x", "s"], [ints("s", [2**40, 2**40, 0])], x_shape=(0, 2), opset=14, allowzero=1)
        ).run(np.zeros((0, 2), np.float32)),
        oxiquant.ShapeError,
        "the dimensions of [1099511627776, 1099511627776, 0] overflow",
    ),
    Case(
        "constant-of-shape-huge",
        "ConstantOfShape of [2^40, 2^40] (not folded at load)",
        lambda c: oxiquant.load(
            one_node("ConstantOfShape", ["s"], [ints("s", [2**40, 2**40])]), fold_constants=False
        ).run(X5),
        oxiquant.ShapeError,
        "node 'hostile' (ConstantOfShape): shape error: an output of shape [1099511627776,"
        " 1099511627776] would have more elements",
    ),
    Case(
        "constant-of-shape-1tb",
        "ConstantOfShape of [2^37] (1 TiB), folded at load",
        lambda c: oxiquant.load(one_node("ConstantOfShape", ["s"], [ints("s", [2**37])])).run(X5),
        oxiquant.ShapeError,
        "needs 1024.0 GiB, which cannot be allocated",
    ),
    Case(
        "pad-huge",
        "Pad of 2^40 rows",
        lambda c: run_once(one_node("Pad", ["x", "p"], [ints("p", [0, 0, 2**40, 0, 0, 0, 0, 0])])),
        oxiquant.ShapeError,
        "node 'hostile' (Pad): shape error: an output of shape [1, 2, 1099511627781, 5]",
    ),
    Case(
        "pad-int64-extremes",
        "Pad with pads i64::MIN and i64::MAX",
        lambda c: run_once(one_node("Pad", ["x", "p"], [ints("p", [0, 0, -(2**63), 0, 0, 0, 2**63 - 1, 0])])),
        oxiquant.ShapeError,
        "remove more than the 5 elements of axis 2",
    ),
    Case(
        "resize-huge-scales",
        "Resize with scales 10^12",
        lambda c: run_once(one_node("Resize", ["x", "", "s"], [init("s", [1, 1, 1e12, 1e12])])),
        oxiquant.ShapeError,
        "node 'hostile' (Resize): shape error: an output of shape",
    ),
    Case(
        "resize-inf-scale",
        "Resize with an infinite scale",
        lambda c: run_once(one_node("Resize", ["x", "", "s"], [init("s", [1, 1, np.inf, 1])])),
        oxiquant.ShapeError,
        "Resize scales [1.0, 1.0, inf, 1.0] do not fit input [1, 2, 5, 5]",
    ),
    Case(
        "resize-nan-scale",
        "Resize with a NaN scale",
        lambda c: run_once(one_node("Resize", ["x", "", "s"], [init("s", [1, 1, np.nan, 1])])),
        oxiquant.ShapeError,
        "Resize scales [1.0, 1.0, NaN, 1.0] do not fit input",
    ),
    Case(
        "resize-huge-sizes",
        "Resize with sizes [1, 2, 2^40, 2^40]",
        lambda c: run_once(one_node("Resize", ["x", "", "", "sz"], [ints("sz", [1, 2, 2**40, 2**40])])),
        oxiquant.ShapeError,
        "would have more elements than memory can address",
    ),
    Case(
        "gather-out-of-range",
        "Gather with index -2^62",
        lambda c: run_once(one_node("Gather", ["x", "i"], [ints("i", [-(2**62)])])),
        oxiquant.ShapeError,
        "Gather index -4611686018427387904 out of range for axis 0 of size 1",
    ),
    Case(
        "gather-scalar",
        "Gather on a scalar",
        lambda c: oxiquant.load(one_node("Gather", ["x", "i"], [ints("i", 0)], x_shape=())).run(
            np.array(1.0, np.float32)
        ),
        oxiquant.ShapeError,
        "axis 0 out of range for rank 0",
    ),
    Case(
        "transpose-bad-perm",
        "Transpose with perm [2^40, 0, 1, 2]",
        lambda c: run_once(one_node("Transpose", ["x"], perm=[2**40, 0, 1, 2])),
        oxiquant.ShapeError,
        "is not a permutation of the 4 axes",
    ),
    Case(
        "broadcast-huge",
        "Add broadcasting inputs of [2^19, 1] and [1, 2^19] (a 1 TiB output)",
        lambda c: oxiquant.load(
            zoo.make_model(
                [helper.make_node("Add", ["x", "z"], ["y"], name="hostile")],
                [VI("x", 1, ["N", 1]), VI("z", 1, [1, "M"])],
                [VI("y", 1, None)],
            )
        ).run({"x": np.zeros((2**19, 1), np.float32), "z": np.zeros((1, 2**19), np.float32)}),
        oxiquant.ShapeError,
        "node 'hostile' (Add): shape error: an output of shape [524288, 524288] needs 1024.0 GiB",
    ),
    # Running.
    Case(
        "wrong-shape",
        "input of the wrong shape",
        lambda c: c.model().run(np.zeros((2, 3, 9, 9), np.float32)),
        oxiquant.ShapeError,
        "input 'x' expects float32 [N, 3, 8, 8], got float32 [2, 3, 9, 9]",
    ),
    Case(
        "wrong-rank",
        "input of the wrong rank",
        lambda c: c.model().run(np.zeros((3, 8, 8), np.float32)),
        oxiquant.ShapeError,
        "input 'x' expects float32 [N, 3, 8, 8], got float32 [3, 8, 8]",
    ),
    Case(
        "wrong-dtype",
        "input of the wrong dtype (float64)",
        lambda c: c.model().run(np.zeros((1, 3, 8, 8))),
        oxiquant.ShapeError,
        "input 'x' expects float32, got float64 (convert it, e.g. x.astype(np.float32))",
    ),
    Case(
        "wrong-input-name",
        "an extra input name the model does not have",
        lambda c: c.model().run({"x": np.zeros((1, 3, 8, 8), np.float32), "image": np.zeros((1, 3, 8, 8), np.float32)}),
        oxiquant.ShapeError,
        "unknown input 'image'",
    ),
    # Calibration.
    Case(
        "calibration-nan",
        "calibration data with a NaN",
        lambda c: oxiquant.quantize_network(c.model(), 8, nan_batch(c)),
        oxiquant.InvalidArgumentError,
        "calibration: the output of 'x_quantizer' ('x__x_quantizer'): a value is NaN or infinite;"
        " check the calibration data for NaN/Inf",
    ),
    Case(
        "calibration-inf-recalibrating",
        "calibration data with an Inf, on a model already calibrated",
        lambda c: oxiquant.compute_ranges(c.model("compute_ranges"), np.full((4, 3, 8, 8), np.inf, np.float32)),
        oxiquant.InvalidArgumentError,
        "a value is NaN or infinite",
    ),
    Case(
        "calibration-empty",
        "an empty calibration set",
        lambda c: oxiquant.quantize_network(c.model(), 8, []),
        oxiquant.InvalidArgumentError,
        "compute_ranges: the calibration set is empty (no batch was given)",
    ),
    Case(
        "calibration-empty-recalibrating",
        "an empty generator, on a model already calibrated",
        lambda c: oxiquant.compute_ranges(c.model("compute_ranges"), iter([])),
        oxiquant.InvalidArgumentError,
        "the calibration set is empty",
    ),
    Case(
        "calibration-interrupted",
        "Ctrl-C in the middle of a calibration",
        lambda c: oxiquant.compute_ranges(c.model("compute_ranges"), generator_then_failure(c)),
        KeyboardInterrupt,
        "",
    ),
    Case(
        "calibration-wrong-names",
        "calibration dict with names the model does not have",
        lambda c: oxiquant.quantize_network(c.model(), 8, {"image": c.calib}),
        oxiquant.ShapeError,
        "calibration batch names ['image'] do not match the model's inputs ['x'] (unknown: ['image']) (missing: ['x'])",
    ),
    Case(
        "calibration-missing-input",
        "calibration dict missing one input of two",
        lambda c: oxiquant.quantize_network(
            c.model(proto=two_input_model()), 8, {"a": np.zeros((4, 2, 6, 6), np.float32)}
        ),
        oxiquant.ShapeError,
        "(missing: ['b'])",
    ),
    Case(
        "calibration-wrong-shape",
        "calibration samples of the wrong shape",
        lambda c: oxiquant.quantize_network(c.model(), 8, np.zeros((4, 3, 9, 9), np.float32)),
        oxiquant.ShapeError,
        "input 'x' expects float32 [N, 3, 8, 8], got float32 [4, 3, 9, 9]",
    ),
    Case(
        "calibration-wrong-dtype",
        "calibration data of integers",
        lambda c: oxiquant.quantize_network(c.model(), 8, np.zeros((4, 3, 8, 8), np.int32)),
        oxiquant.ShapeError,
        "calibration data for input 'x' is int32, the model expects float32",
    ),
    Case(
        "calibration-not-data",
        "a calibration set that is not data (an int)",
        lambda c: oxiquant.quantize_network(c.model(), 8, 42),
        oxiquant.InvalidArgumentError,
        "calibration_set must be a numpy array",
    ),
    # Arguments.
    *[
        Case(
            f"nb-bits-{b!r}",
            f"`nb_bits={b!r}`",
            lambda c, b=b: oxiquant.quantize_network(c.model(), b, c.calib),
            oxiquant.InvalidArgumentError,
            msg,
        )
        for b, msg in [
            (0, "nb_bits must be between 2 and 16, got 0"),
            (1, "nb_bits must be between 2 and 16, got 1"),
            (17, "nb_bits must be between 2 and 16, got 17"),
            (-3, "nb_bits must be between 2 and 16, got -3"),
            (8.5, "nb_bits must be an integer between 2 and 16, got 8.5"),
            (True, "nb_bits must be an integer between 2 and 16, got True"),
        ]
    ],
    Case(
        "weight-bits-1",
        "`weight_bits=1` in a step",
        lambda c: oxiquant.quantize_normalized_network(c.model(), 8, weight_bits=1),
        oxiquant.InvalidArgumentError,
        "weight_bits must be between 2 and 16, got 1",
    ),
    Case(
        "clipping-unknown",
        '`clipping="minmax"`',
        lambda c: oxiquant.adjust_ranges(c.model("compute_ranges"), clipping="minmax"),
        oxiquant.InvalidArgumentError,
        "clipping must be one of max, mse, kl, sigma3, sigma4, sigma5, percentile; got 'minmax'",
    ),
    Case(
        "batch-size-0",
        "`batch_size=0`",
        lambda c: oxiquant.compute_ranges(c.model("normalize_parameters"), c.calib, batch_size=0),
        oxiquant.InvalidArgumentError,
        "batch_size must be a positive integer, got 0",
    ),
    Case(
        "step-out-of-order",
        "a step called out of order",
        lambda c: oxiquant.normalize_parameters(c.model("prepare_network")),
        oxiquant.InvalidArgumentError,
        "normalize_parameters: the model is at stage 'prepared', this step needs 'scaling nodes"
        " inserted': run insert_scaling_nodes first",
    ),
    Case(
        "step-twice",
        "a structural step called twice",
        lambda c: oxiquant.insert_scaling_nodes(c.model("insert_scaling_nodes")),
        oxiquant.InvalidArgumentError,
        "insert_scaling_nodes: the model is at stage 'scaling nodes inserted'",
    ),
    Case(
        "prepare-fails-after-folding",
        "a Dropout in training mode, seen only once prepare_network has folded constants",
        lambda c: oxiquant.prepare_network(c.model(proto=training_dropout_model(), fold=False)),
        oxiquant.InvalidArgumentError,
        "node 'dropout' (Dropout): training_mode is not a constant false; only inference graphs can be quantized",
    ),
    Case(
        "qdq-float",
        '`format="qdq"` on a float model',
        lambda c: c.model().save(c.tmp / "q.onnx", format="qdq"),
        oxiquant.InvalidArgumentError,
        "format='qdq' needs a quantized model",
    ),
    # Degenerate but valid: these must quantize, with finite, correct outputs.
    Case(
        "zero-weights",
        "a Conv whose weights and bias are all zero (its output, a Relu and a residual branch constantly 0)",
        lambda c: oxiquant.quantize_network(c.model(proto=dead_conv_cnn()), 8, c.calib),
        None,
        "quantizes; outputs match the float model; `quant_info['warnings']` says which activations are constantly 0",
        quantizes_like_float(dead_conv_cnn),
    ),
    Case(
        "all-weights-zero",
        "every weight and bias of the network zero (constant 0 output)",
        lambda c: oxiquant.quantize_network(
            c.model(proto=every_weight_zero_model()), 4, c.calib, per_channel=True, clipping="mse"
        ),
        None,
        "quantizes; the output is exactly 0",
        quantizes_like_float(every_weight_zero_model),
    ),
    Case(
        "zero-calibration",
        "a calibration set of zeros (every range 0)",
        lambda c: oxiquant.quantize_network(c.model(), 8, np.zeros((8, 3, 8, 8), np.float32), clipping="kl"),
        None,
        "quantizes; zero input gives the float model's output",
        lambda q, c: np.testing.assert_allclose(
            q.run(np.zeros((2, 3, 8, 8), np.float32))["y"],
            ort_ref(small_cnn(), np.zeros((2, 3, 8, 8), np.float32)),
            atol=0.02,
        ),
    ),
]


def _error_name(case: Case) -> str:
    if case.error is None:
        return "(no error)"
    return case.error.__name__ if case.error is KeyboardInterrupt else f"`{case.error.__name__}`"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    if case.error is None:
        result = case.call(ctx)
        assert case.check is not None
        case.check(result, ctx)
    else:
        with pytest.raises(case.error) as ei:
            case.call(ctx)
        if case.error is not KeyboardInterrupt:
            assert isinstance(ei.value, oxiquant.OxiquantError)
            assert not isinstance(ei.value, oxiquant.InternalError)
            assert case.excerpt in str(ei.value), f"{case.id}: {ei.value}"
    # The user's models are exactly as they were, and still work.
    for m, before in ctx.models:
        assert snapshot(m, ctx.calib_for(m)) == before, f"{case.id}: a failed call modified the model"


def test_a_failed_calibration_keeps_the_previous_ranges(tmp_path: Path) -> None:
    """Regression: compute_ranges cleared the statistics before running the batches, so a
    bad batch left a calibrated model back at 'parameters normalized' with partial ranges."""
    ctx = Ctx(tmp_path)
    m = ctx.model("compute_ranges")
    ranges = oxiquant.compute_ranges(m, ctx.calib)
    with pytest.raises(oxiquant.InvalidArgumentError, match="NaN"):
        oxiquant.compute_ranges(m, nan_batch(ctx), batch_size=4)
    assert m.quant_info["stage"] == "ranges computed"
    assert m.quant_info["calibration_samples"] == len(ctx.calib)
    assert {a["name"]: a["range"] for a in m.quant_info["activations"] if a["range"] is not None} == ranges
    # ... and the pipeline goes on from there as if nothing happened.
    oxiquant.adjust_ranges(m)
    oxiquant.normalize_activations(m)
    oxiquant.quantize_normalized_network(m, 8)
    ref = oxiquant.quantize_network(oxiquant.load(small_cnn()), 8, ctx.calib)
    np.testing.assert_array_equal(m.run(ctx.calib)["y"], ref.run(ctx.calib)["y"])


@pytest.mark.parametrize("in_pool", [False, True])
def test_a_rust_panic_becomes_internal_error_and_the_process_lives(in_pool: bool) -> None:
    """The last line of defence: `guard` in the bindings catches a panic (here a deliberate
    one, from a test hook; also from inside a rayon worker) and raises InternalError."""
    from oxiquant import _native

    with pytest.raises(
        oxiquant.InternalError, match=r"internal error in guard self-test: deliberate panic.*please report"
    ):
        _native._guard_selftest(in_pool)
    # Still alive, and the engine's thread pool still works.
    m = oxiquant.load(small_cnn())
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(m.run(x, num_threads=2)["y"], ort_ref(small_cnn(), x), rtol=1e-4, atol=1e-5)


# -- the docs table ------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table() -> str:
    rows = ["| hostile input | what the user sees |", "|---|---|"]
    for c in CASES:
        if c.error is None:
            seen = c.excerpt
        elif c.error is KeyboardInterrupt:
            seen = "the `KeyboardInterrupt` itself; the model keeps its previous ranges"
        else:
            seen = f"{_error_name(c)}: `{c.excerpt}`"
        rows.append(f"| {_cell(c.what)} | {_cell(seen)} |")
    return "\n".join(rows)


def test_the_docs_table_matches_the_cases() -> None:
    text = DOC.read_text()
    table = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    stale = "docs/robustness.md is stale: run PYTHONPATH=tests python tests/engine/test_hostile_inputs.py"
    assert table == render_table(), stale


if __name__ == "__main__":
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + render_table() + "\n" + text[end:])
    print(f"wrote {len(CASES)} rows into {DOC}", file=sys.stderr)
