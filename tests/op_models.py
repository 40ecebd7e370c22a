"""Helpers to build single-op ONNX models and run them on onnxruntime, shared by the op tests.

A case is one node (or a few) in a graph whose inputs are either fed at run time (graph
inputs) or stored as initializers; `OpCase.feeds` holds the arrays for the graph inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The op types oxiquant runs (rust/oxiquant-core/src/ops/mod.rs, Op::parse).
SUPPORTED_OPS = frozenset(
    """Conv Gemm MatMul Add Sub Mul Div Sum Relu LeakyRelu Clip Sigmoid Tanh HardSigmoid HardSwish Exp Neg Abs
    Sqrt Softmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization LRN Flatten Reshape
    Transpose Concat Slice Pad Squeeze Unsqueeze Identity Dropout Resize Upsample Constant ConstantOfShape
    Shape Gather Cast Softplus
    Split Expand Range Tile Size GatherElements GatherND ScatterND ScatterElements Scatter DepthToSpace
    SpaceToDepth OneHot NonZero
    ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
    ReduceSumSquare ArgMax ArgMin TopK CumSum
    LayerNormalization RMSNormalization GroupNormalization InstanceNormalization LogSoftmax Hardmax""".split()
)
# Comparisons, logic, selection, activations and elementary functions.
SUPPORTED_OPS = SUPPORTED_OPS | frozenset(
    """Equal Less Greater LessOrEqual GreaterOrEqual Not And Or Xor Where IsNaN IsInf Erf Gelu Elu Selu Celu
    PRelu Softsign Mish ThresholdedRelu Pow Reciprocal Ceil Sign Mod Min Max Mean Log Sin Cos Tan Asin Acos Atan
    Sinh Cosh Asinh Acosh Atanh Trilu Einsum BitwiseAnd BitwiseOr BitwiseXor BitwiseNot BitShift CastLike""".split()
)
# Transposed convolution, recurrent layers, Lp pooling.
SUPPORTED_OPS = SUPPORTED_OPS | frozenset("""ConvTranspose LSTM GRU RNN LpPool GlobalLpPool""".split())
# Attention (opsets 23-25).
SUPPORTED_OPS = SUPPORTED_OPS | frozenset({"Attention"})
# Losses and the ops of the loss/normalization coverage work.
SUPPORTED_OPS = SUPPORTED_OPS | frozenset(
    """NegativeLogLikelihoodLoss SoftmaxCrossEntropyLoss CumProd LpNormalization CenterCropPad Unique EyeLike
    Shrink ReverseSequence Compress Det HannWindow HammingWindow BlackmanWindow""".split()
)
# Element types: BitCast (the int16/uint16/uint32/uint64 work).
SUPPORTED_OPS = SUPPORTED_OPS | frozenset({"BitCast"})
# Detection, dynamically quantized models and the op tail.
SUPPORTED_OPS = SUPPORTED_OPS | frozenset(
    """NonMaxSuppression DynamicQuantizeLinear MatMulInteger ConvInteger TfIdfVectorizer TensorScatter
    MelWeightMatrix CausalConvWithState LinearAttention""".split()
)
# Sampling and geometry (issue 22).
SUPPORTED_OPS = SUPPORTED_OPS | frozenset(
    """GridSample AffineGrid Col2Im DeformConv RotaryEmbedding MaxUnpool Swish MeanVarianceNormalization""".split()
)
# Control flow (bodies run by the engine's own executor).
SUPPORTED_OPS = SUPPORTED_OPS | frozenset({"If", "Loop", "Scan"})

# Tolerances of the fp32 comparisons.
RTOL = 1e-4
ATOL = 1e-5

SEED = 20240611


def rng(salt: int = 0) -> np.random.Generator:
    """A seeded generator; `salt` keeps cases independent of each other's draw order."""
    return np.random.default_rng(SEED + salt)


class Init:
    """Marks an array that is stored as an initializer instead of fed as a graph input."""

    def __init__(self, value: Any, dtype: Any = None) -> None:
        self.value = np.asarray(value, dtype=dtype)


Operand = Union[np.ndarray, Init, None]

# Which independent implementation gives the expected outputs: "onnxruntime" (the default),
# "onnx" (onnx.reference.ReferenceEvaluator, for variants onnxruntime does not implement), or a
# function of the feeds written from the ONNX specification.
Reference = Union[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]


@dataclass
class OpCase:
    id: str
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    rtol: float = RTOL
    atol: float = ATOL
    reference: Reference = "onnxruntime"


def elem_type(arr: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype)


def make_case(
    case_id: str,
    op_type: str,
    inputs: list[Operand],
    attrs: Optional[dict[str, Any]] = None,
    opset: int = 13,
    out_types: Optional[list[int]] = None,
    n_outputs: int = 1,
    rtol: float = RTOL,
    atol: float = ATOL,
    reference: Reference = "onnxruntime",
) -> OpCase:
    """One `op_type` node. `inputs[i]` is an array (graph input `in{i}`), `Init(array)`
    (initializer `in{i}`) or None (an omitted optional input, written as "")."""
    names: list[str] = []
    graph_inputs = []
    inits = []
    feeds: dict[str, np.ndarray] = {}
    for i, v in enumerate(inputs):
        if v is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if isinstance(v, Init):
            inits.append(numpy_helper.from_array(v.value, name))
        else:
            arr = np.asarray(v)
            feeds[name] = arr
            graph_inputs.append(helper.make_tensor_value_info(name, elem_type(arr), list(arr.shape)))
    while names and names[-1] == "":
        names.pop()
    outs = [f"out{i}" for i in range(n_outputs)]
    if out_types is None:
        first = next((np.asarray(v.value if isinstance(v, Init) else v) for v in inputs if v is not None), None)
        t = elem_type(first) if first is not None else TensorProto.FLOAT
        out_types = [t] * n_outputs
    node = helper.make_node(op_type, names, outs, name=f"{op_type}_node", **(attrs or {}))
    graph = helper.make_graph(
        [node],
        case_id,
        graph_inputs,
        [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, out_types)],
        initializer=inits,
    )
    model = finish_model(graph, opset, feeds, reference)
    return OpCase(case_id, model, feeds, rtol, atol, reference)


def finish_model(
    graph: onnx.GraphProto,
    opset: int,
    feeds: Optional[dict[str, np.ndarray]] = None,
    reference: Reference = "onnxruntime",
) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="oxiquant-tests")
    # IR version 3 (the minimum for opsets 7 and 8) requires every graph output to carry a
    # shape; IR 8 does not, and onnxruntime reads it with any opset.
    model.ir_version = max(helper.find_min_ir_version_for(opsets), 8)
    # The checker wants a shape (possibly of unknown dims) on every graph output: ONNX shape
    # inference provides it, or, where it cannot (e.g. Reshape to a run-time shape), the rank
    # of onnxruntime's result with unknown dims.
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    if not outputs_have_shapes(model):
        ranks = {k: v.ndim for k, v in run_reference(model, feeds or {}, reference).items()}
        for o in model.graph.output:
            if not o.type.tensor_type.HasField("shape"):
                o.CopyFrom(helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, [None] * ranks[o.name]))
    onnx.checker.check_model(model, full_check=True)
    return model


def outputs_have_shapes(model: onnx.ModelProto) -> bool:
    return all(o.type.tensor_type.HasField("shape") for o in model.graph.output)


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # No graph rewrites: the reference is the op as written, not a fused variant of it.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: Reference) -> dict[str, np.ndarray]:
    if callable(reference):
        return reference(feeds)
    if reference == "onnx":
        from onnx.reference import ReferenceEvaluator

        names = [o.name for o in model.graph.output]
        return dict(zip(names, ReferenceEvaluator(model).run(names, feeds)))
    assert reference == "onnxruntime", reference
    return run_onnxruntime(model, feeds)


def assert_outputs_close(
    got: dict[str, np.ndarray],
    want: dict[str, np.ndarray],
    rtol: float = RTOL,
    atol: float = ATOL,
    what: str = "",
) -> None:
    assert set(got) == set(want), f"{what}: outputs {sorted(got)} != expected {sorted(want)}"
    for name, w in want.items():
        g = got[name]
        w = np.asarray(w)
        assert g.dtype == w.dtype, f"{what}: output '{name}' has dtype {g.dtype}, expected {w.dtype}"
        assert g.shape == w.shape, f"{what}: output '{name}' has shape {g.shape}, expected {w.shape}"
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{what}: output '{name}'")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what}: output '{name}'")
