"""Every supported op and attribute variant, run as a one-node ONNX model on oxiquant and
compared with onnxruntime (the independent reference) on seeded random inputs.

Each case also goes through `Model.save`: the written file must pass the ONNX checker,
reload to the same outputs, and still match onnxruntime when onnxruntime runs the saved file
(which catches attributes lost on export)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import oxiquant

from op_models import (
    SUPPORTED_OPS,
    Init,
    OpCase,
    assert_outputs_close,
    finish_model,
    make_case,
    rng,
    run_reference,
)

F = TensorProto.FLOAT
I64 = TensorProto.INT64
INT64_MAX = np.iinfo(np.int64).max


def randn(r: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (r.standard_normal(shape) * scale).astype(np.float32)


def i64(*v: int) -> Init:
    return Init(np.array(v, dtype=np.int64))


def scalar_f32(v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


# -- Conv ---------------------------------------------------------------------------------------
def conv_cases() -> list[OpCase]:
    r = rng(1)
    cases = []

    def add(cid, xs, ws, bias=True, w_init=True, opset=11, reference="onnxruntime", **attrs):
        x = randn(r, *xs)
        w = randn(r, *ws, scale=0.5)
        ins = [x, Init(w) if w_init else w]
        if bias:
            b = randn(r, ws[0])
            ins.append(Init(b) if w_init else b)
        cases.append(make_case(f"conv_{cid}", "Conv", ins, attrs, opset, reference=reference))

    # 1-D
    add("1d_basic", (2, 3, 10), (4, 3, 3))
    add("1d_nobias", (1, 3, 10), (4, 3, 3), bias=False)
    add("1d_stride2_dil2_pads", (2, 3, 17), (5, 3, 3), strides=[2], dilations=[2], pads=[1, 2])
    add("1d_same_upper_k4_s2", (1, 2, 11), (3, 2, 4), auto_pad="SAME_UPPER", strides=[2])
    add("1d_same_lower_k4_s2", (1, 2, 11), (3, 2, 4), auto_pad="SAME_LOWER", strides=[2])
    add("1d_valid_s3", (1, 2, 13), (3, 2, 2), auto_pad="VALID", strides=[3])
    add("1d_depthwise", (2, 3, 9), (3, 1, 3), group=3, pads=[1, 1])
    add("1d_group2", (1, 4, 9), (6, 2, 3), group=2)
    # 2-D
    add("2d_basic_nobias", (1, 3, 8, 8), (5, 3, 3, 3), bias=False)
    add("2d_basic_bias", (2, 3, 8, 8), (5, 3, 3, 3))
    add("2d_kernel_shape_attr", (1, 3, 7, 7), (4, 3, 3, 3), kernel_shape=[3, 3])
    add("2d_pads_sym", (1, 3, 8, 8), (4, 3, 3, 3), pads=[1, 1, 1, 1])
    add("2d_pads_asym", (1, 3, 8, 9), (4, 3, 3, 3), pads=[0, 1, 2, 1])
    add("2d_pads_asym_big", (1, 2, 5, 6), (3, 2, 3, 2), pads=[2, 0, 1, 1])
    add("2d_strides_2x2", (2, 3, 9, 9), (4, 3, 3, 3), strides=[2, 2])
    add("2d_strides_2x1_pads", (1, 3, 9, 8), (4, 3, 3, 3), strides=[2, 1], pads=[1, 0, 1, 0])
    add("2d_strides_3x2_rect_kernel", (1, 3, 11, 10), (4, 3, 2, 3), strides=[3, 2])
    add("2d_dilations_2x2", (1, 3, 10, 10), (4, 3, 3, 3), dilations=[2, 2])
    add("2d_dilations_1x3_pads", (1, 3, 9, 12), (4, 3, 3, 3), dilations=[1, 3], pads=[1, 3, 1, 3])
    add(
        "2d_dilation_stride_pads",
        (2, 3, 12, 12),
        (4, 3, 3, 3),
        dilations=[2, 2],
        strides=[2, 2],
        pads=[2, 1, 1, 2],
    )
    add("2d_same_upper_k3_s1", (1, 3, 7, 7), (4, 3, 3, 3), auto_pad="SAME_UPPER")
    add("2d_same_upper_k4_s2", (1, 3, 9, 8), (4, 3, 4, 4), auto_pad="SAME_UPPER", strides=[2, 2])
    add("2d_same_lower_k4_s2", (1, 3, 9, 8), (4, 3, 4, 4), auto_pad="SAME_LOWER", strides=[2, 2])
    add("2d_same_lower_k2_s1", (1, 3, 6, 7), (4, 3, 2, 2), auto_pad="SAME_LOWER")
    # onnxruntime refuses auto_pad SAME with dilations; the ONNX reference implements the spec.
    add(
        "2d_same_upper_dilated",
        (1, 2, 9, 9),
        (3, 2, 3, 3),
        auto_pad="SAME_UPPER",
        dilations=[2, 2],
        reference="onnx",
    )
    add(
        "2d_same_lower_dilated_s2",
        (1, 2, 10, 9),
        (3, 2, 2, 3),
        auto_pad="SAME_LOWER",
        dilations=[2, 3],
        strides=[2, 2],
        reference="onnx",
    )
    add("2d_valid_s2", (1, 3, 10, 9), (4, 3, 3, 3), auto_pad="VALID", strides=[2, 2])
    add("2d_group2", (2, 4, 7, 7), (6, 2, 3, 3), group=2, pads=[1, 1, 1, 1])
    add("2d_group3_strided", (1, 6, 9, 9), (9, 2, 3, 3), group=3, strides=[2, 2])
    add("2d_depthwise", (2, 6, 9, 9), (6, 1, 3, 3), group=6, pads=[1, 1, 1, 1])
    add("2d_depthwise_s2_asym", (1, 5, 10, 11), (5, 1, 3, 3), group=5, strides=[2, 2], pads=[0, 1, 1, 0])
    add("2d_depthwise_dilated", (1, 4, 11, 11), (4, 1, 3, 3), group=4, dilations=[2, 2], pads=[2, 2, 2, 2])
    add("2d_depthwise_mult2", (1, 4, 8, 8), (8, 1, 3, 3), group=4)
    add("2d_depthwise_nobias_5x5", (1, 3, 12, 12), (3, 1, 5, 5), group=3, bias=False, pads=[2, 2, 2, 2])
    add("2d_pointwise", (2, 8, 5, 5), (16, 8, 1, 1))
    add("2d_pointwise_s2", (1, 8, 7, 7), (4, 8, 1, 1), strides=[2, 2])
    add("2d_pointwise_pads", (1, 3, 4, 4), (2, 3, 1, 1), pads=[1, 0, 0, 1])
    add("2d_weights_as_inputs", (1, 3, 6, 6), (4, 3, 3, 3), w_init=False)
    add("2d_kernel_equals_input", (2, 3, 5, 5), (4, 3, 5, 5))
    add("2d_large", (2, 16, 20, 20), (32, 16, 3, 3), pads=[1, 1, 1, 1])
    add("2d_large_pointwise", (1, 64, 14, 14), (96, 64, 1, 1))
    add("2d_opset7", (1, 3, 6, 6), (4, 3, 3, 3), opset=7, pads=[1, 1, 1, 1])
    add("2d_opset22", (1, 3, 6, 6), (4, 3, 3, 3), opset=22, strides=[2, 2])
    return cases


# -- Gemm / MatMul ------------------------------------------------------------------------------
def gemm_cases() -> list[OpCase]:
    r = rng(2)
    cases = []

    def add(cid, m, k, n, c_shape=(None,), opset=13, trans_a=0, trans_b=0, b_init=False, **attrs):
        a = randn(r, *((k, m) if trans_a else (m, k)))
        b = randn(r, *((n, k) if trans_b else (k, n)))
        ins = [a, Init(b) if b_init else b]
        if c_shape != (None,):
            ins.append(randn(r, *c_shape))
        if trans_a:
            attrs["transA"] = 1
        if trans_b:
            attrs["transB"] = 1
        cases.append(make_case(f"gemm_{cid}", "Gemm", ins, attrs, opset))

    add("no_c", 3, 4, 5)
    add("c_vector", 3, 4, 5, (5,))
    add("c_row", 3, 4, 5, (1, 5))
    add("c_col", 3, 4, 5, (3, 1))
    add("c_full", 3, 4, 5, (3, 5))
    add("c_scalar", 3, 4, 5, ())
    add("c_single", 3, 4, 5, (1,))
    add("transA", 3, 4, 5, (5,), trans_a=1)
    add("transB", 3, 4, 5, (5,), trans_b=1)
    add("transA_transB", 3, 4, 5, (3, 5), trans_a=1, trans_b=1)
    add("alpha", 3, 4, 5, (5,), alpha=0.5)
    add("beta", 3, 4, 5, (3, 5), beta=2.0)
    add("beta_zero", 3, 4, 5, (3, 5), beta=0.0)
    add("all_attrs", 4, 6, 3, (1, 3), trans_a=1, trans_b=1, alpha=0.25, beta=0.35)
    add("alpha_no_c", 4, 6, 3, alpha=-1.5)
    add("fc_initializer", 2, 16, 10, (10,), trans_b=1, b_init=True)
    add("opset7", 3, 4, 5, (5,), opset=7)
    add("opset9_transB", 3, 4, 5, (3, 5), opset=9, trans_b=1, alpha=2.0)
    add("large", 64, 128, 96, (96,), trans_b=1)
    add("large_transA", 70, 33, 65, (70, 1), trans_a=1)
    return cases


def matmul_cases() -> list[OpCase]:
    r = rng(3)
    shapes = {
        "1d_1d": ((4,), (4,)),
        "1d_2d": ((4,), (4, 3)),
        "2d_1d": ((3, 4), (4,)),
        "1d_3d": ((4,), (2, 4, 3)),
        "3d_1d": ((2, 3, 4), (4,)),
        "2d": ((3, 4), (4, 5)),
        "2d_row": ((1, 4), (4, 5)),
        "3d": ((2, 3, 4), (2, 4, 5)),
        "3d_2d_bcast": ((2, 3, 4), (4, 5)),
        "2d_3d_bcast": ((3, 4), (2, 4, 5)),
        "4d_3d_bcast": ((2, 1, 3, 4), (5, 4, 6)),
        "4d_bcast_both": ((1, 3, 2, 4), (2, 1, 4, 3)),
        "4d": ((2, 3, 5, 4), (2, 3, 4, 2)),
        "large_batched": ((8, 64, 32), (32, 48)),
        "large_2d": ((100, 70), (70, 90)),
    }
    cases = []
    for cid, (sa, sb) in shapes.items():
        cases.append(make_case(f"matmul_{cid}", "MatMul", [randn(r, *sa), randn(r, *sb)]))
    cases.append(make_case("matmul_weight_init", "MatMul", [randn(r, 2, 3, 8), Init(randn(r, 8, 5))]))
    cases.append(make_case("matmul_opset9", "MatMul", [randn(r, 3, 4), randn(r, 4, 2)], opset=9))
    return cases


# -- Element-wise -------------------------------------------------------------------------------
BINARY_SHAPES = {
    "same": ((3, 4, 5), (3, 4, 5)),
    "vec": ((3, 4, 5), (5,)),
    "col": ((3, 4, 5), (4, 1)),
    "both": ((1, 4, 1), (3, 1, 5)),
    "scalar_rhs": ((2, 3, 4, 5), ()),
    "scalar_lhs": ((), (2, 3)),
    "rank_diff": ((2, 3, 4, 5), (3, 1, 1)),
    "lhs_smaller": ((5,), (2, 3, 4, 5)),
    "large_bcast": ((4, 64, 16, 16), (64, 1, 1)),
    "large_same": ((4, 64, 16, 16), (4, 64, 16, 16)),
}


def binary_cases() -> list[OpCase]:
    r = rng(4)
    cases = []
    for op in ("Add", "Sub", "Mul", "Div"):
        for cid, (sa, sb) in BINARY_SHAPES.items():
            a = randn(r, *sa)
            b = randn(r, *sb)
            if op == "Div":
                # Divisors away from zero so that rounding stays within tolerance.
                b = (np.sign(b) + (b == 0)) * (0.5 + np.abs(b))
                b = b.astype(np.float32)
            cases.append(make_case(f"{op.lower()}_{cid}", op, [a, b]))
        for dt in (np.int64, np.int32):
            a = r.integers(-50, 50, size=(3, 4)).astype(dt)
            b = r.integers(1, 7, size=(4,)).astype(dt) * np.array([1, -1, 1, -1], dtype=dt)
            cases.append(make_case(f"{op.lower()}_{np.dtype(dt).name}_bcast", op, [a, b]))
        cases.append(make_case(f"{op.lower()}_const_rhs", op, [randn(r, 2, 3), Init(randn(r, 3) + 3.0)]))
        cases.append(make_case(f"{op.lower()}_opset7", op, [randn(r, 2, 3, 4), randn(r, 3, 1) + 3.0], opset=7))
    for n, shapes in {
        "one": [(3, 4)],
        "two": [(3, 4), (3, 4)],
        "three_bcast": [(3, 4, 5), (4, 1), (5,)],
        "four_bcast": [(2, 1, 5), (3, 1), (1,), (2, 3, 5)],
    }.items():
        cases.append(make_case(f"sum_{n}", "Sum", [randn(r, *s) for s in shapes]))
    cases.append(make_case("sum_opset8_bcast", "Sum", [randn(r, 3, 4), randn(r, 4)], opset=8))
    return cases


def unary_cases() -> list[OpCase]:
    r = rng(5)
    cases = []
    x = randn(r, 3, 4, 5, scale=3.0)
    big = randn(r, 4, 64, 16, 16, scale=4.0)
    for op, attrs, opset in [
        ("Relu", {}, 13),
        ("Relu", {}, 7),
        ("LeakyRelu", {}, 13),
        ("LeakyRelu", {"alpha": 0.3}, 13),
        ("Sigmoid", {}, 13),
        ("Tanh", {}, 13),
        ("HardSigmoid", {}, 13),
        ("HardSigmoid", {"alpha": 0.5, "beta": 0.3}, 13),
        ("HardSwish", {}, 14),
        ("Exp", {}, 13),
        ("Neg", {}, 13),
        ("Abs", {}, 13),
    ]:
        suffix = "_".join(f"{k}{v}" for k, v in attrs.items())
        cid = f"{op.lower()}{'_' + suffix if suffix else ''}_opset{opset}"
        cases.append(make_case(cid, op, [x], attrs, opset))
    cases.append(make_case("sqrt", "Sqrt", [np.abs(x) + 0.01]))
    cases.append(make_case("sigmoid_extreme", "Sigmoid", [randn(r, 2, 50, scale=40.0)]))
    cases.append(make_case("exp_range", "Exp", [np.linspace(-20, 20, 64, dtype=np.float32).reshape(4, 16)]))
    cases.append(make_case("softplus", "Softplus", [x], opset=7))
    cases.append(make_case("softplus_opset22", "Softplus", [x], opset=22))
    cases.append(make_case("softplus_range", "Softplus", [np.linspace(-90, 90, 181, dtype=np.float32)]))
    for op in ("Relu", "Sigmoid", "Tanh", "HardSwish", "LeakyRelu"):
        cases.append(make_case(f"{op.lower()}_large", op, [big], opset=14))
    # NaN and infinities go through as onnxruntime (and numpy) treat them: NaN stays NaN.
    for op in (
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Exp",
        "Neg",
        "Abs",
        "Sqrt",
        "Softplus",
    ):
        cases.append(make_case(f"{op.lower()}_special_values", op, [SPECIAL_VALUES], opset=14))
    return cases


SPECIAL_VALUES = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 3.5, -3.5, 80.0, -80.0, 1e30, -1e30], np.float32
)


def clip_cases() -> list[OpCase]:
    r = rng(6)
    x = randn(r, 3, 4, 5, scale=2.0)
    cases = []
    # Clip-6: bounds as attributes (the engine accepts opset 7 and newer, where Clip-6 applies).
    for cid, attrs in {
        "min_max": {"min": -0.5, "max": 0.7},
        "min_only": {"min": -0.2},
        "max_only": {"max": 0.1},
        "none": {},
    }.items():
        cases.append(make_case(f"clip6_{cid}_opset7", "Clip", [x], attrs, opset=7))
    cases.append(make_case("clip6_min_max_opset10", "Clip", [x], {"min": -1.0, "max": 1.0}, opset=10))
    # Clip-11/12/13: bounds as optional inputs.
    lo, hi = scalar_f32(-0.6), scalar_f32(0.4)
    for opset in (11, 13):
        cases.append(make_case(f"clip_inputs_min_max_opset{opset}", "Clip", [x, Init(lo), Init(hi)], opset=opset))
        cases.append(make_case(f"clip_inputs_min_only_opset{opset}", "Clip", [x, Init(lo)], opset=opset))
        cases.append(make_case(f"clip_inputs_max_only_opset{opset}", "Clip", [x, None, Init(hi)], opset=opset))
        cases.append(make_case(f"clip_inputs_none_opset{opset}", "Clip", [x], opset=opset))
    cases.append(make_case("clip_runtime_bounds", "Clip", [x, lo, hi]))
    cases.append(make_case("clip_min_greater_than_max", "Clip", [x, Init(hi), Init(lo)]))
    cases.append(make_case("clip_special_values", "Clip", [SPECIAL_VALUES, Init(lo), Init(hi)]))
    cases.append(make_case("clip6_special_values_opset7", "Clip", [SPECIAL_VALUES], {"min": -1.0, "max": 2.0}, 7))
    cases.append(make_case("clip_min_greater_than_max_special", "Clip", [SPECIAL_VALUES, Init(hi), Init(lo)]))
    cases.append(make_case("clip_large", "Clip", [randn(r, 4, 64, 16, 16), Init(lo), Init(hi)]))
    return cases


def softmax_cases() -> list[OpCase]:
    r = rng(7)
    x = randn(r, 2, 3, 4, 5, scale=3.0)
    cases = []
    for opset, axes in ((11, [None, 0, 1, 2, 3, -1, -3]), (13, [None, 0, 1, 2, -1, -2, -4])):
        for axis in axes:
            attrs = {} if axis is None else {"axis": axis}
            name = "default" if axis is None else f"axis{axis}".replace("-", "neg")
            cases.append(make_case(f"softmax{opset}_{name}", "Softmax", [x], attrs, opset))
    cases.append(make_case("softmax13_2d", "Softmax", [randn(r, 6, 10)]))
    cases.append(make_case("softmax13_large_values", "Softmax", [randn(r, 3, 40, scale=200.0)]))
    cases.append(make_case("softmax7_default", "Softmax", [x], opset=7))
    return cases


# -- Pooling, normalization ---------------------------------------------------------------------
def pool_cases() -> list[OpCase]:
    r = rng(8)
    cases = []

    def add(op, cid, shape, opset=12, **attrs):
        cases.append(make_case(f"{op.lower()}_{cid}", op, [randn(r, *shape)], attrs, opset))

    for op in ("MaxPool", "AveragePool"):
        add(op, "2d_k3", (2, 3, 7, 7), kernel_shape=[3, 3])
        add(op, "2d_k2_s2", (1, 3, 8, 8), kernel_shape=[2, 2], strides=[2, 2])
        add(op, "2d_k3_s2_pads", (1, 2, 9, 9), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        add(op, "2d_pads_asym", (1, 2, 6, 7), kernel_shape=[3, 2], pads=[0, 1, 2, 0])
        add(op, "2d_rect_kernel_strides", (1, 2, 9, 10), kernel_shape=[2, 3], strides=[1, 2])
        add(op, "2d_ceil", (1, 2, 8, 8), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
        add(
            op,
            "2d_ceil_pads",
            (1, 2, 7, 8),
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
        )
        add(
            op,
            "2d_ceil_last_window_on_pad",
            (1, 3, 2, 2),
            kernel_shape=[3, 3],
            strides=[3, 3],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
        )
        add(op, "2d_ceil_s3", (1, 1, 10, 11), kernel_shape=[2, 2], strides=[3, 3], ceil_mode=1)
        add(op, "2d_same_upper", (1, 2, 7, 8), kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
        add(op, "2d_same_lower", (1, 2, 7, 8), kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")
        add(op, "2d_same_upper_k2", (1, 2, 5, 6), kernel_shape=[2, 2], auto_pad="SAME_UPPER")
        add(op, "2d_same_lower_k2", (1, 2, 5, 6), kernel_shape=[2, 2], auto_pad="SAME_LOWER")
        add(op, "2d_valid", (1, 2, 9, 8), kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID")
        add(op, "1d_k3", (2, 3, 12), kernel_shape=[3])
        add(op, "1d_s2_pads", (1, 2, 11), kernel_shape=[3], strides=[2], pads=[1, 2])
        add(op, "1d_ceil", (1, 2, 10), kernel_shape=[3], strides=[2], ceil_mode=1)
        add(op, "2d_large", (2, 32, 28, 28), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        add(op, "2d_opset7", (1, 2, 6, 6), opset=7, kernel_shape=[2, 2], strides=[2, 2])
        add(op, "2d_opset22", (1, 2, 7, 7), opset=22, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    for cip in (0, 1):
        a = "AveragePool"
        add(
            a,
            f"2d_pads_cip{cip}",
            (1, 2, 6, 6),
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            count_include_pad=cip,
        )
        add(
            a,
            f"2d_pads_asym_cip{cip}",
            (1, 2, 6, 7),
            kernel_shape=[3, 3],
            pads=[2, 0, 1, 2],
            count_include_pad=cip,
        )
        add(
            a,
            f"2d_ceil_pads_cip{cip}",
            (1, 2, 7, 8),
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
            count_include_pad=cip,
        )
        add(
            a,
            f"2d_ceil_last_window_on_pad_cip{cip}",
            (1, 3, 2, 2),
            kernel_shape=[3, 3],
            strides=[3, 3],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
            count_include_pad=cip,
        )
        add(
            a,
            f"2d_same_upper_cip{cip}",
            (1, 2, 7, 8),
            kernel_shape=[3, 3],
            strides=[2, 2],
            auto_pad="SAME_UPPER",
            count_include_pad=cip,
        )
        add(
            a,
            f"2d_same_lower_cip{cip}",
            (1, 2, 7, 8),
            kernel_shape=[4, 4],
            strides=[2, 2],
            auto_pad="SAME_LOWER",
            count_include_pad=cip,
        )
        add(
            a,
            f"1d_pads_cip{cip}",
            (1, 2, 9),
            kernel_shape=[4],
            strides=[2],
            pads=[2, 1],
            count_include_pad=cip,
        )
        add(
            a,
            f"2d_dilations_pads_cip{cip}",
            (1, 2, 9, 9),
            opset=19,
            kernel_shape=[3, 3],
            dilations=[2, 2],
            pads=[1, 1, 2, 2],
            count_include_pad=cip,
        )
        add(
            a,
            f"2d_dilations_ceil_cip{cip}",
            (1, 2, 10, 10),
            opset=19,
            kernel_shape=[2, 2],
            dilations=[2, 2],
            strides=[2, 2],
            ceil_mode=1,
            count_include_pad=cip,
        )
    add("AveragePool", "2d_dilations", (1, 2, 8, 8), opset=19, kernel_shape=[2, 2], dilations=[2, 3])
    add("AveragePool", "1d_dilations", (1, 2, 12), opset=19, kernel_shape=[3], dilations=[2], strides=[2])
    add("MaxPool", "2d_dilations", (1, 2, 8, 8), kernel_shape=[2, 2], dilations=[2, 2])
    add(
        "MaxPool",
        "2d_dilations_strides_pads",
        (1, 2, 11, 11),
        kernel_shape=[3, 3],
        dilations=[2, 3],
        strides=[2, 2],
        pads=[1, 2, 1, 2],
    )
    add(
        "MaxPool",
        "2d_dilations_ceil",
        (1, 2, 10, 10),
        kernel_shape=[2, 2],
        dilations=[2, 2],
        strides=[2, 2],
        ceil_mode=1,
    )
    add("MaxPool", "1d_dilations", (1, 2, 12), kernel_shape=[3], dilations=[3])
    add("MaxPool", "2d_storage_order0", (1, 2, 6, 6), kernel_shape=[2, 2], storage_order=0)
    add("MaxPool", "2d_opset8", (1, 2, 6, 6), opset=8, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    # Max over windows that are entirely negative must not be clamped by the zero padding.
    cases.append(
        make_case(
            "maxpool_negative_padded",
            "MaxPool",
            [-np.abs(randn(r, 1, 2, 5, 5)) - 1.0],
            {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
            12,
        )
    )
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        cases.append(make_case(f"{op.lower()}_4d", op, [randn(r, 2, 3, 5, 6)]))
        cases.append(make_case(f"{op.lower()}_3d", op, [randn(r, 2, 4, 7)]))
        cases.append(make_case(f"{op.lower()}_large", op, [randn(r, 2, 64, 32, 32)]))
        cases.append(make_case(f"{op.lower()}_1x1", op, [randn(r, 1, 3, 1, 1)], opset=7))
    return cases


def lrn_spec(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> np.ndarray:
    """LRN as the ONNX specification writes it, in float64."""
    c = x.shape[1]
    x64 = x.astype(np.float64)
    square_sum = np.zeros_like(x64)
    for ch in range(c):
        lo = max(0, ch - (size - 1) // 2)
        hi = min(c - 1, ch + int(np.ceil((size - 1) / 2)))
        square_sum[:, ch] = (x64[:, lo : hi + 1] ** 2).sum(axis=1)
    return (x64 / (bias + alpha / size * square_sum) ** beta).astype(np.float32)


def norm_cases() -> list[OpCase]:
    r = rng(9)
    cases = []

    def bn(cid, shape, opset, init=True, **attrs):
        c = shape[1]
        params = [randn(r, c), randn(r, c), randn(r, c), (np.abs(randn(r, c)) + 0.1).astype(np.float32)]
        ins = [randn(r, *shape)] + [Init(p) if init else p for p in params]
        cases.append(make_case(f"batchnorm_{cid}", "BatchNormalization", ins, attrs, opset))

    bn("4d_opset9", (2, 3, 4, 5), 9)
    bn("4d_opset15_eps", (2, 3, 4, 5), 15, epsilon=1e-2)
    bn("2d_opset15", (4, 6), 15)
    bn("3d_opset14", (2, 5, 7), 14)
    bn("params_as_inputs", (1, 4, 3, 3), 15, init=False)
    bn("opset7_spatial", (2, 3, 4, 4), 7, spatial=1, epsilon=1e-3)
    bn("large", (2, 64, 16, 16), 15)
    x = randn(r, 2, 8, 5, 5)
    for cid, attrs in {
        "size3": {"size": 3},
        "size5_alpha": {"size": 5, "alpha": 0.01},
        "size2_even": {"size": 2, "alpha": 0.05},
        "size4_even_beta_bias": {"size": 4, "alpha": 0.1, "beta": 0.5, "bias": 2.0},
        "size1": {"size": 1, "alpha": 0.3},
        "size9_wider_than_c": {"size": 9, "alpha": 0.2, "beta": 0.9},
    }.items():
        # onnxruntime only implements odd sizes (and the ONNX reference evaluator's LRN is wrong
        # for channels past the batch size), so even sizes use the specification's formula.
        ref = (
            "onnxruntime"
            if attrs["size"] % 2
            else (lambda feeds, attrs=attrs: {"out0": lrn_spec(feeds["in0"], **attrs)})
        )
        cases.append(make_case(f"lrn_{cid}", "LRN", [x], attrs, 13, reference=ref))
    cases.append(make_case("lrn_opset7", "LRN", [x], {"size": 3, "alpha": 0.02}, 7))
    return cases


# -- Shape and data movement --------------------------------------------------------------------
def shape_op_cases() -> list[OpCase]:
    r = rng(10)
    x4 = randn(r, 2, 3, 4, 5)
    cases = []
    for opset in (9, 13):
        for axis in (0, 1, 2, 4, -1, -3):
            if opset < 11 and axis < 0:
                continue
            cases.append(
                make_case(f"flatten{opset}_axis{axis}".replace("-", "neg"), "Flatten", [x4], {"axis": axis}, opset)
            )
    cases.append(make_case("flatten13_default", "Flatten", [x4]))
    cases.append(make_case("flatten13_int64", "Flatten", [r.integers(-9, 9, (2, 3, 4))], {"axis": 2}))

    for cid, spec in {
        "keep_and_infer": [0, -1],
        "infer_only": [-1],
        "zero_mid": [2, 0, 20],
        "split": [4, -1, 5],
        "expand_rank": [2, 3, 2, 2, 5],
    }.items():
        cases.append(make_case(f"reshape_{cid}", "Reshape", [x4, i64(*spec)]))
    cases.append(make_case("reshape_allowzero14", "Reshape", [x4, i64(6, -1)], {"allowzero": 1}, 14))
    cases.append(make_case("reshape_runtime_shape", "Reshape", [x4, np.array([3, -1, 2], dtype=np.int64)]))
    cases.append(
        make_case(
            "reshape_allowzero14_empty",
            "Reshape",
            [np.zeros((3, 0, 2), np.float32), i64(0, 4)],
            {"allowzero": 1},
            14,
        )
    )
    cases.append(
        make_case("reshape_keep_zero_dim_empty", "Reshape", [np.zeros((3, 0, 2), np.float32), i64(3, 0, 1, 2)])
    )
    cases.append(make_case("reshape_opset7", "Reshape", [x4, i64(0, 0, 20)], opset=7))

    for cid, perm in {
        "default": None,
        "0231": [0, 2, 3, 1],
        "3102": [3, 1, 0, 2],
        "identity": [0, 1, 2, 3],
    }.items():
        attrs = {} if perm is None else {"perm": perm}
        cases.append(make_case(f"transpose_{cid}", "Transpose", [x4], attrs))
    cases.append(make_case("transpose_2d", "Transpose", [randn(r, 3, 7)]))
    cases.append(make_case("transpose_5d", "Transpose", [randn(r, 2, 3, 1, 4, 2)], {"perm": [4, 0, 3, 2, 1]}))
    cases.append(make_case("transpose_int64", "Transpose", [r.integers(0, 100, (3, 4, 2))], {"perm": [1, 2, 0]}))
    cases.append(make_case("transpose_large", "Transpose", [randn(r, 8, 32, 16, 16)], {"perm": [0, 2, 3, 1]}))

    for axis, shapes in {
        0: [(2, 3, 4), (1, 3, 4)],
        1: [(2, 3, 4), (2, 1, 4), (2, 5, 4)],
        2: [(2, 3, 4), (2, 3, 1)],
        -1: [(2, 3, 4), (2, 3, 2)],
        -3: [(2, 3, 4), (3, 3, 4)],
    }.items():
        cases.append(
            make_case(
                f"concat_axis{axis}".replace("-", "neg"),
                "Concat",
                [randn(r, *s) for s in shapes],
                {"axis": axis},
            )
        )
    cases.append(make_case("concat_1d", "Concat", [randn(r, 3), randn(r, 2)], {"axis": 0}, 11))
    cases.append(make_case("concat_with_initializer", "Concat", [randn(r, 2, 3), Init(randn(r, 2, 2))], {"axis": -1}))
    cases.append(make_case("concat_int64", "Concat", [r.integers(0, 9, (2, 2)), r.integers(0, 9, (1, 2))], {"axis": 0}))
    cases.append(make_case("concat_opset7", "Concat", [randn(r, 2, 3), randn(r, 2, 3)], {"axis": 1}, 7))
    return cases


def slice_cases() -> list[OpCase]:
    r = rng(11)
    x = randn(r, 5, 6, 7)
    cases = []
    # Slice-1: attributes (opset < 10).
    for cid, attrs in {
        "basic": {"starts": [1, 0], "ends": [4, 3], "axes": [0, 2]},
        "neg_starts": {"starts": [-3], "ends": [INT64_MAX], "axes": [1]},
        "neg_ends": {"starts": [0, 1], "ends": [-1, -2]},
        "default_axes": {"starts": [1, 2, 3], "ends": [3, 4, 5]},
        "out_of_bounds": {"starts": [-100, 2], "ends": [100, 1000], "axes": [0, 2]},
    }.items():
        cases.append(make_case(f"slice1_{cid}_opset9", "Slice", [x], attrs, 9))
    # Slice-10/11/13: inputs.
    cases_in = {
        "basic": ([1, 0], [4, 3], [0, 2], None),
        "steps2": ([0, 1], [5, 7], [0, 2], [2, 3]),
        "neg_step_full_reverse": ([-1], [-INT64_MAX], [1], [-1]),
        "neg_step2": ([-1, 5], [0, 1], [2, 0], [-2, -1]),
        "neg_step_oob": ([100], [-100], [0], [-3]),
        "neg_axes": ([1, -4], [-1, 100], [-1, -2], None),
        "neg_starts_ends": ([-4, -5], [-1, -2], [0, 2], [1, 2]),
        "start_oob": ([10], [20], [1], None),
        "empty_range": ([3], [1], [0], None),
        "default_axes_steps": ([1, 1, 1], [-1, -1, -1], None, None),
        "int_max_end": ([2], [INT64_MAX], [2], [1]),
    }
    for cid, (starts, ends, axes, steps) in cases_in.items():
        ins = [x, i64(*starts), i64(*ends)]
        if axes is not None or steps is not None:
            ins.append(i64(*axes) if axes is not None else None)
        if steps is not None:
            ins.append(i64(*steps))
        cases.append(make_case(f"slice13_{cid}", "Slice", ins))
    cases.append(make_case("slice10_basic", "Slice", [x, i64(1), i64(-1), i64(1)], opset=10))
    cases.append(make_case("slice11_steps", "Slice", [x, i64(0), i64(7), i64(2), i64(3)], opset=11))
    cases.append(
        make_case(
            "slice13_runtime_starts",
            "Slice",
            [x, np.array([1, 2], np.int64), np.array([4, 6], np.int64), i64(0, 1)],
        )
    )
    cases.append(
        make_case(
            "slice13_int32_indices",
            "Slice",
            [x, Init(np.array([1], np.int32)), Init(np.array([-1], np.int32)), Init(np.array([2], np.int32))],
        )
    )
    cases.append(
        make_case("slice13_int64_data", "Slice", [r.integers(0, 100, (4, 5)), i64(-1), i64(-5), i64(1), i64(-2)])
    )
    # Outputs of 2^15 elements and more are gathered in parallel: over the batch, or over the
    # channels of a batch of one (a ResNet-20 shortcut's subsampling).
    big = ([0, 0], [32, 32], [2, 3], [2, 2])
    for cid, shape in {"batch": (8, 16, 32, 32), "channels": (1, 128, 32, 32)}.items():
        cases.append(make_case(f"slice13_large_by_{cid}", "Slice", [randn(r, *shape), *(i64(*v) for v in big)]))
    return cases


def pad_cases() -> list[OpCase]:
    r = rng(12)
    x = randn(r, 2, 3, 4, 5)
    cases = []
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    for mode in ("constant", "reflect", "edge"):
        cases.append(make_case(f"pad11_{mode}", "Pad", [x, i64(*pads)], {"mode": mode}, 11))
        cases.append(make_case(f"pad13_{mode}_all_axes", "Pad", [randn(r, 4, 5), i64(1, 2, 3, 1)], {"mode": mode}, 13))
        cases.append(make_case(f"pad18_{mode}_axes", "Pad", [x, i64(2, 1, 1, 3), None, i64(2, -1)], {"mode": mode}, 18))
        cases.append(make_case(f"pad7_{mode}_attr", "Pad", [x], {"mode": mode, "pads": pads}, 7))
        cases.append(make_case(f"pad13_{mode}_1d", "Pad", [randn(r, 6), i64(3, 4)], {"mode": mode}, 13))
    cases.append(make_case("pad11_constant_value", "Pad", [x, i64(*pads), Init(scalar_f32(1.5))], {}, 11))
    cases.append(make_case("pad13_constant_value_runtime", "Pad", [x, i64(*pads), scalar_f32(-2.0)], {}, 13))
    cases.append(make_case("pad2_constant_value_attr_opset10", "Pad", [x], {"pads": pads, "value": 0.25}, 10))
    cases.append(make_case("pad13_negative_crop", "Pad", [x, i64(0, -1, 1, -2, 0, 0, -1, 1)], {}, 13))
    cases.append(make_case("pad13_runtime_pads", "Pad", [x, np.array(pads, np.int64)], {"mode": "edge"}, 13))
    cases.append(
        make_case("pad13_int64_data", "Pad", [r.integers(0, 9, (3, 3)), i64(1, 0, 0, 2), Init(np.array(7))], {}, 13)
    )
    cases.append(make_case("pad13_reflect_max", "Pad", [randn(r, 1, 4), i64(0, 3, 0, 3)], {"mode": "reflect"}, 13))
    # Large outputs, gathered in parallel (see slice_cases), padded rows and planes included.
    large = {
        "channels": ((1, 64, 24, 24), (0, 32, 0, 0, 0, 32, 0, 0), "constant"),
        "batch_and_channels": ((3, 40, 20, 20), (1, 2, 0, 0, 1, 3, 0, 0), "constant"),
        "edge": ((2, 32, 30, 30), (0, 0, 1, 1, 0, 0, 1, 1), "edge"),
    }
    for cid, (shape, p, mode) in large.items():
        cases.append(make_case(f"pad13_large_{cid}", "Pad", [randn(r, *shape), i64(*p)], {"mode": mode}, 13))
    return cases


RESIZE_COORDS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric"]
RESIZE_NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def resize_cases() -> list[OpCase]:
    r = rng(13)
    x = randn(r, 1, 2, 5, 6)
    cases = []

    def scales(*v: float) -> Init:
        return Init(np.array(v, dtype=np.float32))

    empty = Init(np.zeros((0,), np.float32))
    for coord in RESIZE_COORDS:
        for nearest in RESIZE_NEAREST:
            attrs = {"mode": "nearest", "coordinate_transformation_mode": coord, "nearest_mode": nearest}
            cases.append(
                make_case(f"resize13_up_{coord}_{nearest}", "Resize", [x, None, scales(1, 1, 2.5, 1.5)], attrs, 13)
            )
        attrs = {"mode": "nearest", "coordinate_transformation_mode": coord}
        cases.append(make_case(f"resize13_down_{coord}", "Resize", [x, None, scales(1, 1, 0.6, 0.5)], attrs, 13))
        cases.append(
            make_case(
                f"resize13_sizes_up_{coord}",
                "Resize",
                [x, None, None, i64(1, 2, 8, 13)],
                {**attrs, "nearest_mode": "round_prefer_ceil"},
                13,
            )
        )
        cases.append(
            make_case(
                f"resize13_sizes_down_{coord}",
                "Resize",
                [x, None, None, i64(1, 2, 3, 4)],
                {**attrs, "nearest_mode": "floor"},
                13,
            )
        )
        cases.append(make_case(f"resize13_sizes_to_one_{coord}", "Resize", [x, None, None, i64(1, 2, 1, 3)], attrs, 13))
    cases.append(
        make_case(
            "resize19_half_pixel_symmetric_fractional",
            "Resize",
            [randn(r, 1, 1, 7, 9), None, scales(1, 1, 1.3, 0.7)],
            {"coordinate_transformation_mode": "half_pixel_symmetric"},
            19,
        )
    )
    # tf_half_pixel_for_nn exists in Resize-11 (deprecated from 13 on).
    for nearest in RESIZE_NEAREST:
        for sc in ((1, 1, 2.5, 1.5), (1, 1, 0.6, 0.5)):
            attrs = {
                "mode": "nearest",
                "coordinate_transformation_mode": "tf_half_pixel_for_nn",
                "nearest_mode": nearest,
            }
            cases.append(
                make_case(
                    f"resize11_tf_half_pixel_for_nn_{nearest}_{'up' if sc[2] > 1 else 'down'}",
                    "Resize",
                    [x, empty, scales(*sc)],
                    attrs,
                    11,
                )
            )
    cases.append(make_case("resize13_default_attrs", "Resize", [x, None, scales(1, 1, 2, 2)], {}, 13))
    cases.append(make_case("resize13_scale_3", "Resize", [x, None, scales(1, 1, 3, 3)], {"mode": "nearest"}, 13))
    cases.append(make_case("resize13_channel_scale", "Resize", [x, None, scales(1, 2, 1, 1)], {"mode": "nearest"}, 13))
    cases.append(
        make_case(
            "resize13_runtime_scales",
            "Resize",
            [x, None, np.array([1, 1, 2, 0.5], np.float32)],
            {"mode": "nearest", "nearest_mode": "floor"},
            13,
        )
    )
    cases.append(
        make_case(
            "resize11_scales",
            "Resize",
            [x, empty, scales(1, 1, 2, 2)],
            {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
            11,
        )
    )
    cases.append(make_case("resize11_sizes", "Resize", [x, empty, empty, i64(1, 2, 7, 9)], {"mode": "nearest"}, 11))
    cases.append(make_case("resize19_half_pixel", "Resize", [x, None, scales(1, 1, 1.5, 2.5)], {"mode": "nearest"}, 19))
    cases.append(make_case("resize10_up", "Resize", [x, scales(1, 1, 2, 3)], {"mode": "nearest"}, 10))
    cases.append(make_case("resize10_down", "Resize", [x, scales(1, 1, 0.5, 0.5)], {"mode": "nearest"}, 10))
    cases.append(make_case("resize10_fractional", "Resize", [x, scales(1, 1, 1.7, 0.6)], {"mode": "nearest"}, 10))
    # onnxruntime has no int64 Resize kernel.
    cases.append(
        make_case(
            "resize13_int64_data",
            "Resize",
            [r.integers(0, 99, (1, 1, 3, 3)), None, scales(1, 1, 2, 1.5)],
            {"mode": "nearest"},
            13,
            reference="onnx",
        )
    )
    cases.append(make_case("upsample9_fractional", "Upsample", [x, scales(1, 1, 1.5, 2.5)], {"mode": "nearest"}, 9))
    cases.append(make_case("upsample9_scales_input", "Upsample", [x, scales(1, 1, 2, 3)], {"mode": "nearest"}, 9))
    cases.append(
        make_case("upsample7_scales_attr", "Upsample", [x], {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 2.0]}, 7)
    )
    return cases


def squeeze_cases() -> list[OpCase]:
    r = rng(14)
    x = randn(r, 1, 3, 1, 4, 1)
    y = randn(r, 3, 4)
    cases = []
    for cid, axes in {"all": None, "one": [0], "neg": [-1], "two": [2, 0], "mixed_sign": [-3, 4]}.items():
        attrs = {} if axes is None else {"axes": axes}
        cases.append(make_case(f"squeeze11_{cid}", "Squeeze", [x], attrs, 11))
        ins = [x] if axes is None else [x, i64(*axes)]
        cases.append(make_case(f"squeeze13_{cid}", "Squeeze", ins, {}, 13))
    cases.append(make_case("squeeze13_runtime_axes", "Squeeze", [x, np.array([0, 2], np.int64)], {}, 13))
    cases.append(make_case("squeeze7_attr", "Squeeze", [x], {"axes": [0, 2]}, 7))
    for cid, axes in {
        "front": [0],
        "back": [-1],
        "two": [0, 3],
        "unsorted_neg": [-1, 1],
        "three": [0, 2, 4],
    }.items():
        cases.append(make_case(f"unsqueeze11_{cid}", "Unsqueeze", [y], {"axes": axes}, 11))
        cases.append(make_case(f"unsqueeze13_{cid}", "Unsqueeze", [y, i64(*axes)], {}, 13))
    cases.append(make_case("unsqueeze13_scalar", "Unsqueeze", [scalar_f32(2.5), i64(0)], {}, 13))
    cases.append(make_case("unsqueeze7_attr", "Unsqueeze", [y], {"axes": [1]}, 7))
    return cases


def misc_cases() -> list[OpCase]:
    r = rng(15)
    x = randn(r, 2, 3, 4)
    cases = [
        make_case("identity", "Identity", [x]),
        make_case("identity_int64", "Identity", [r.integers(0, 5, (3,))]),
        make_case("dropout7_ratio_attr", "Dropout", [x], {"ratio": 0.3}, 7),
        make_case("dropout10", "Dropout", [x], {"ratio": 0.5}, 10),
        make_case("dropout12_ratio_input", "Dropout", [x, Init(scalar_f32(0.2))], {}, 12),
        make_case("dropout13_default", "Dropout", [x], {}, 13),
        make_case("dropout13_training_false", "Dropout", [x, Init(scalar_f32(0.4)), Init(np.array(False))], {}, 13),
        make_case("dropout13_seed", "Dropout", [x], {"seed": 3}, 13),
    ]
    # Shape (Shape-15 has start/end).
    for cid, attrs in {
        "all": {},
        "start1": {"start": 1},
        "end_neg1": {"end": -1},
        "start_neg2": {"start": -2},
        "start1_end3": {"start": 1, "end": 3},
        "clip_end": {"end": 10},
        "clip_start": {"start": -10},
        "start_gt_end": {"start": 3, "end": 1},
    }.items():
        cases.append(make_case(f"shape15_{cid}", "Shape", [randn(r, 2, 3, 4, 5)], attrs, 15, out_types=[I64]))
    cases.append(make_case("shape13", "Shape", [x], {}, 13, out_types=[I64]))
    cases.append(make_case("shape7_int64_input", "Shape", [r.integers(0, 3, (4, 1))], {}, 7, out_types=[I64]))
    # Gather.
    data = randn(r, 5, 4, 3)
    for cid, (axis, idx) in {
        "axis0": (0, [0, 4, 2]),
        "axis0_negative": (0, [-1, 0, -5]),
        "axis1_2d_neg": (1, [[0, -1], [-2, 3]]),
        "axis_neg1": (-1, [2, -3]),
        "scalar_index": (1, 2),
        "scalar_neg_index": (0, -2),
        "repeat": (2, [1, 1, 0, 2, 2]),
    }.items():
        cases.append(make_case(f"gather_{cid}", "Gather", [data, Init(np.array(idx, np.int64))], {"axis": axis}))
    cases.append(make_case("gather_runtime_indices", "Gather", [data, np.array([[3, -4]], np.int64)], {"axis": 0}))
    cases.append(make_case("gather_int32_indices", "Gather", [data, Init(np.array([1, -1], np.int32))], {"axis": 1}))
    cases.append(
        make_case(
            "gather_int64_data",
            "Gather",
            [r.integers(-9, 9, (4, 6)), Init(np.array([-1, 2], np.int64))],
            {"axis": 1},
        )
    )
    cases.append(make_case("gather_opset7", "Gather", [data, Init(np.array([1, 0], np.int64))], {"axis": 0}, 7))
    # Cast.
    xf = np.concatenate([randn(r, 20, scale=30.0), np.array([0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 100.9], np.float32)])
    for cid, (src, to) in {
        "float_to_int64": (xf, TensorProto.INT64),
        "float_to_int32": (xf, TensorProto.INT32),
        "float_to_int8": (np.clip(xf, -100, 100), TensorProto.INT8),
        "float_to_uint8": (np.abs(np.clip(xf, -200, 200)), TensorProto.UINT8),
        "float_to_bool": (xf, TensorProto.BOOL),
        "float_to_float": (xf, TensorProto.FLOAT),
        "int64_to_float": (r.integers(-(2**20), 2**20, (10,)), TensorProto.FLOAT),
        "int32_to_int64": (r.integers(-1000, 1000, (3, 4)).astype(np.int32), TensorProto.INT64),
        "int64_to_int32": (r.integers(-1000, 1000, (3, 4)), TensorProto.INT32),
        "bool_to_float": (r.integers(0, 2, (3, 4)).astype(bool), TensorProto.FLOAT),
        "uint8_to_float": (r.integers(0, 256, (8,)).astype(np.uint8), TensorProto.FLOAT),
        "int8_to_int64": (r.integers(-128, 128, (8,)).astype(np.int8), TensorProto.INT64),
        "bool_to_int64": (r.integers(0, 2, (5,)).astype(bool), TensorProto.INT64),
    }.items():
        cases.append(make_case(f"cast13_{cid}", "Cast", [src], {"to": to}, 13, out_types=[to]))
    cases.append(make_case("cast9_float_to_int64", "Cast", [xf], {"to": TensorProto.INT64}, 9, out_types=[I64]))
    return cases


def constant_cases() -> list[OpCase]:
    """Constant and ConstantOfShape feed a consumer so the graph has a run-time input."""
    r = rng(16)
    cases = []

    def two_nodes(cid, first, second, x, out_type, opset):
        graph = helper.make_graph(
            [first, second],
            cid,
            [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), list(x.shape))],
            [helper.make_tensor_value_info("y", out_type, None)],
        )
        cases.append(OpCase(cid, finish_model(graph, opset, {"x": x}), {"x": x}))

    x = randn(r, 2, 3)
    xi = r.integers(-5, 5, (2, 3))
    add = helper.make_node("Add", ["x", "c"], ["y"])
    for cid, kw, inp, t, opset in [
        ("constant_tensor", {"value": numpy_helper.from_array(randn(r, 3))}, x, F, 13),
        ("constant_tensor_opset9", {"value": numpy_helper.from_array(randn(r, 2, 3))}, x, F, 9),
        ("constant_value_float", {"value_float": 2.5}, x, F, 13),
        ("constant_value_floats", {"value_floats": [1.0, -2.0, 3.5]}, x, F, 13),
        ("constant_value_int", {"value_int": 7}, xi, I64, 13),
        ("constant_value_ints", {"value_ints": [1, -2, 3]}, xi, I64, 13),
    ]:
        two_nodes(cid, helper.make_node("Constant", [], ["c"], **kw), add, inp, t, opset)
    shape = helper.make_node("Shape", ["x"], ["s"])
    for cid, value, t in [
        ("constantofshape_default", None, F),
        ("constantofshape_float", numpy_helper.from_array(np.array([1.25], np.float32)), F),
        ("constantofshape_int64", numpy_helper.from_array(np.array([-3], np.int64)), I64),
        ("constantofshape_int32", numpy_helper.from_array(np.array([4], np.int32)), TensorProto.INT32),
    ]:
        kw = {} if value is None else {"value": value}
        two_nodes(cid, shape, helper.make_node("ConstantOfShape", ["s"], ["y"], **kw), randn(r, 2, 3, 4), t, 13)
    cases.append(
        make_case(
            "constantofshape_scalar_shape",
            "ConstantOfShape",
            [Init(np.zeros((0,), np.int64))],
            {"value": numpy_helper.from_array(np.array([2.0], np.float32))},
            13,
            out_types=[F],
        )
    )
    cases.append(
        make_case(
            "constantofshape_from_initializer",
            "ConstantOfShape",
            [i64(2, 0, 3)],
            {"value": numpy_helper.from_array(np.array([0.5], np.float32))},
            13,
            out_types=[F],
        )
    )
    return cases


ALL_CASES: list[OpCase] = [
    *conv_cases(),
    *gemm_cases(),
    *matmul_cases(),
    *binary_cases(),
    *unary_cases(),
    *clip_cases(),
    *softmax_cases(),
    *pool_cases(),
    *norm_cases(),
    *shape_op_cases(),
    *slice_cases(),
    *pad_cases(),
    *resize_cases(),
    *squeeze_cases(),
    *misc_cases(),
    *constant_cases(),
]

_ids = [c.id for c in ALL_CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"
# The lists the parametrized tests below read: blocks further down that want those tests to
# run their cases extend these.
_TOP_CASES, _TOP_IDS = ALL_CASES, _ids


def _op_types(case: OpCase) -> set[str]:
    return {n.op_type for n in case.model.graph.node}


def test_every_supported_op_is_covered() -> None:
    covered = set().union(*(_op_types(c) for c in ALL_CASES))
    assert SUPPORTED_OPS <= covered, f"ops without a case: {sorted(SUPPORTED_OPS - covered)}"


@pytest.fixture(scope="module")
def reference_outputs() -> dict[str, dict[str, np.ndarray]]:
    """The reference outputs (onnxruntime's unless a case says otherwise), computed once per case
    and shared by both tests."""
    return {}


def _reference(case: OpCase, cache: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if case.id not in cache:
        cache[case.id] = run_reference(case.model, case.feeds, case.reference)
    return cache[case.id]


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_matches_onnxruntime(case: OpCase, reference_outputs) -> None:
    want = _reference(case, reference_outputs)
    got = oxiquant.load(case.model).run(case.feeds)
    assert_outputs_close(got, want, case.rtol, case.atol, what=case.id)
    # Also without constant folding, so that ops on initializers run in the executor too.
    got = oxiquant.load(case.model, fold_constants=False).run(case.feeds)
    assert_outputs_close(got, want, case.rtol, case.atol, what=f"{case.id} (unfolded)")


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_save_roundtrip(case: OpCase, tmp_path, reference_outputs) -> None:
    for fold in (False, True):
        what = f"{case.id} (saved, fold_constants={fold})"
        model = oxiquant.load(case.model, fold_constants=fold)
        first = model.run(case.feeds)
        path = model.save(tmp_path / f"{case.id}_{fold}.onnx")
        saved_proto = onnx.load(str(path))
        onnx.checker.check_model(saved_proto, full_check=True)
        again = oxiquant.load(path, fold_constants=False).run(case.feeds)
        assert set(again) == set(first), what
        for name, v in first.items():
            np.testing.assert_array_equal(again[name], v, err_msg=f"{what}: '{name}' changed after save/load")
        # The saved file must mean the same thing to the reference (no attribute lost or changed).
        saved = run_reference(saved_proto, case.feeds, case.reference)
        assert_outputs_close(saved, _reference(case, reference_outputs), case.rtol, case.atol, what=what)


# -- Deliberately unsupported variants: refused at load, never computed wrongly ----------------
def _unsupported_cases() -> list[OpCase]:
    r = rng(17)
    x = randn(r, 1, 2, 4, 4)
    s = Init(np.array([1, 1, 2, 2], np.float32))
    return [
        make_case(
            "resize_misspelt_coordinate_mode",
            "Resize",
            [x, None, s],
            {"coordinate_transformation_mode": "tf_half_pixel_for_nearest"},
            13,
        ),
        make_case("resize_unknown_nearest_mode", "Resize", [x, None, s], {"nearest_mode": "nearest_even"}, 13),
        make_case("pad_wrap_opset18", "Pad", [x, i64(0, 0, 1, 1, 0, 0, 1, 1)], {"mode": "wrap"}, 18),
        make_case("maxpool_4d", "MaxPool", [randn(r, 1, 1, 3, 3, 3, 3)], {"kernel_shape": [2, 2, 2, 2]}, 12),
        make_case(
            "conv_3d",
            "Conv",
            [randn(r, 1, 1, 4, 4, 4), Init(randn(r, 1, 1, 2, 2, 2))],
            {"kernel_shape": [2, 2, 2]},
            11,
        ),
    ]


UNSUPPORTED = _unsupported_cases()


@pytest.mark.parametrize("case", UNSUPPORTED, ids=[c.id for c in UNSUPPORTED])
def test_unsupported_variant_is_refused_at_load(case: OpCase) -> None:
    with pytest.raises(oxiquant.UnsupportedOpError) as info:
        oxiquant.load(case.model)
    op = next(iter(_op_types(case)))
    assert op in str(info.value), f"the error should name the op: {info.value}"


def test_dropout_training_mode_is_refused_when_it_would_drop() -> None:
    """Dropout-12+ takes training_mode as an input; when it is true (with a non-zero ratio) the
    engine must refuse rather than return the input unchanged."""
    x = randn(rng(20), 3, 4)
    case = make_case("dropout_training", "Dropout", [x, Init(scalar_f32(0.5)), np.array(True)], {}, 13)
    model = oxiquant.load(case.model)
    with pytest.raises(oxiquant.UnsupportedOpError, match="training_mode"):
        model.run(case.feeds)
    # Inference mode, or training with ratio 0, is the identity.
    for training, ratio in ((False, 0.5), (True, 0.0)):
        feeds = {"in0": x, "in2": np.array(training)}
        case = make_case("dropout_identity", "Dropout", [x, Init(scalar_f32(ratio)), np.array(training)], {}, 13)
        assert_outputs_close(oxiquant.load(case.model).run(feeds), run_reference(case.model, feeds, "onnxruntime"))


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_spec_reference_agrees_with_onnxruntime(size: int) -> None:
    """The formula used as the reference for even LRN sizes, checked where onnxruntime runs."""
    x = randn(rng(19), 2, 6, 3, 3)
    attrs = {"size": size, "alpha": 0.1, "beta": 0.6, "bias": 1.5}
    case = make_case("lrn_ref", "LRN", [x], attrs, 13)
    want = run_reference(case.model, case.feeds, "onnxruntime")["out0"]
    np.testing.assert_allclose(lrn_spec(x, **attrs), want, rtol=1e-5, atol=1e-6)


def test_opset_below_7_is_refused() -> None:
    """Clip-6 with attributes is tested at opsets 7 and 10: opset 6 itself is out of range."""
    case = make_case("clip_opset6", "Clip", [randn(rng(18), 2, 3)], {"min": 0.0, "max": 1.0}, 6)
    with pytest.raises(oxiquant.ModelFormatError, match="opset 6"):
        oxiquant.load(case.model)


# -- Shape and index ops: Split, Expand, Range, Tile, Size, GatherElements, GatherND, ScatterND,
# ScatterElements (and Scatter), DepthToSpace, SpaceToDepth, OneHot, NonZero -------------------
def shape_index_cases() -> list[OpCase]:
    r = rng(40)
    cases: list[OpCase] = []
    x = randn(r, 2, 6, 4)
    xi = r.integers(-50, 50, (3, 4, 5)).astype(np.int64)
    add = cases.append
    # Split: attribute (opset 11), input (13), num_outputs (18, uneven last part), equal parts.
    add(make_case("split_attr", "Split", [x], {"axis": 1, "split": [1, 2, 3]}, 11, n_outputs=3))
    add(make_case("split_equal_11", "Split", [x], {"axis": -1}, 11, n_outputs=2))
    add(make_case("split_input_13", "Split", [x, i64(4, 0, 2)], {"axis": 1}, 13, n_outputs=3))
    add(make_case("split_equal_13", "Split", [xi], {"axis": 0}, 13, n_outputs=3))
    add(make_case("split_num_outputs_18", "Split", [x], {"axis": 1, "num_outputs": 4}, 18, n_outputs=4))
    add(make_case("split_num_outputs_even_18", "Split", [xi], {"axis": 2, "num_outputs": 5}, 18, n_outputs=5))
    # Expand: to a larger rank, keeping dims with 1, to a smaller target.
    add(make_case("expand_rank_up", "Expand", [randn(r, 3, 1), i64(2, 1, 4)], {}, 13))
    add(make_case("expand_smaller_target", "Expand", [randn(r, 2, 1, 3), i64(5, 1)], {}, 13))
    add(make_case("expand_int64", "Expand", [xi[:1], i64(2, 4, 1)], {}, 13))
    add(make_case("expand_bool", "Expand", [np.array([[True], [False]]), i64(2, 3)], {}, 13))
    # Range: float (accumulated), int32, int64, negative delta, empty.
    for cid, vals, dt in [
        ("range_float", (0.5, 7.3, 0.7), np.float32),
        ("range_float_neg", (3.0, -4.0, -0.3), np.float32),
        ("range_int64", (-5, 20, 3), np.int64),
        ("range_int32_neg", (10, -3, -4), np.int32),
        ("range_empty", (5, 1, 2), np.int64),
    ]:
        add(make_case(cid, "Range", [np.array(v, dtype=dt) for v in vals], {}, 11))
    # Tile, Size.
    add(make_case("tile_2d", "Tile", [randn(r, 2, 3), i64(3, 2)], {}, 13))
    add(make_case("tile_zero", "Tile", [xi, i64(1, 0, 2)], {}, 13))
    add(make_case("size_f32", "Size", [x], {}, 13, out_types=[I64]))
    add(make_case("size_empty", "Size", [np.zeros((3, 0), np.float32)], {}, 13, out_types=[I64]))
    # GatherElements / ScatterElements: negative indices and axes, int32 indices.
    idx = r.integers(-6, 6, (2, 3, 4)).astype(np.int64)
    add(make_case("gather_elements_axis1", "GatherElements", [x, idx], {"axis": 1}, 13))
    idx2 = r.integers(-4, 4, (1, 6, 2)).astype(np.int32)
    add(make_case("gather_elements_axis_neg", "GatherElements", [x, idx2], {"axis": -1}, 13))
    data = np.zeros((3, 5), np.float32)
    sidx = np.array([[1, 0, 2, 4], [4, 3, 0, -1]], np.int64)
    upd = randn(r, 2, 4)
    add(make_case("scatter_elements_axis1", "ScatterElements", [data, sidx, upd], {"axis": 1}, 13))
    dup = np.array([[1, 1, 2, 1]], np.int64)
    for red in ("add", "mul"):
        add(
            make_case(
                f"scatter_elements_{red}",
                "ScatterElements",
                [randn(r, 2, 4), dup, randn(r, 1, 4)],
                {"axis": 1, "reduction": red},
                16,
            )
        )
    for red in ("max", "min"):
        add(
            make_case(
                f"scatter_elements_{red}",
                "ScatterElements",
                [randn(r, 2, 4), dup, randn(r, 1, 4)],
                {"axis": 1, "reduction": red},
                18,
            )
        )
    add(
        make_case(
            "scatter_elements_int64_axis0",
            "ScatterElements",
            [xi, r.integers(0, 3, (2, 4, 5)).astype(np.int64) * 0 + np.array([[[0]], [[2]]]), xi[:2] * 7],
            {"axis": 0},
            13,
        )
    )
    # GatherND (batch_dims 0 and 1), ScatterND (reductions).
    gd = randn(r, 3, 4, 5)
    add(make_case("gathernd_k2", "GatherND", [gd, np.array([[0, 1], [2, -1], [1, 3]], np.int64)], {}, 13))
    add(make_case("gathernd_k1_slices", "GatherND", [gd, np.array([[[2]], [[0]]], np.int64)], {}, 13))
    add(
        make_case(
            "gathernd_batch1",
            "GatherND",
            [gd, np.array([[1, 2], [0, 0], [3, 4]], np.int64)],
            {"batch_dims": 1},
            13,
        )
    )
    add(make_case("scatternd_rows", "ScatterND", [gd, np.array([[2], [0]], np.int64), randn(r, 2, 4, 5)], {}, 13))
    add(
        make_case(
            "scatternd_elems_int",
            "ScatterND",
            [xi, np.array([[0, 1, 2], [2, 3, -1]], np.int64), np.array([7, -9], np.int64)],
            {},
            13,
        )
    )
    for red, opset in (("add", 16), ("mul", 16), ("max", 18), ("min", 18)):
        add(
            make_case(
                f"scatternd_{red}",
                "ScatterND",
                [randn(r, 4, 3), np.array([[1], [3], [1]], np.int64), randn(r, 3, 3)],
                {"reduction": red},
                opset,
            )
        )
    # DepthToSpace (DCR, CRD), SpaceToDepth.
    d2s = randn(r, 2, 8, 3, 2)
    add(make_case("depthtospace_dcr", "DepthToSpace", [d2s], {"blocksize": 2}, 13))
    add(make_case("depthtospace_crd", "DepthToSpace", [d2s], {"blocksize": 2, "mode": "CRD"}, 13))
    add(make_case("spacetodepth", "SpaceToDepth", [randn(r, 1, 3, 4, 6)], {"blocksize": 2}, 13))
    # OneHot: axis, negative indices, out of range, float indices and depth.
    oh_idx = np.array([[0, 3, -1], [5, -4, 2]], np.int64)
    oh_vals = Init(np.array([-1.5, 2.0], np.float32))
    add(make_case("onehot_last", "OneHot", [oh_idx, Init(np.array(4, np.int64)), oh_vals], {}, 11, out_types=[F]))
    add(
        make_case(
            "onehot_axis0_float",
            "OneHot",
            [np.array([1.7, -1.2, 3.0], np.float32), Init(np.array([3.0], np.float32)), oh_vals],
            {"axis": 0},
            11,
            out_types=[F],
        )
    )
    add(
        make_case(
            "onehot_int_values",
            "OneHot",
            [oh_idx, Init(np.array(5, np.int64)), Init(np.array([0, 9], np.int64))],
            {"axis": 1},
            11,
            out_types=[I64],
        )
    )
    # NonZero.
    nz = randn(r, 3, 4)
    nz[nz < 0.3] = 0
    add(make_case("nonzero_f32", "NonZero", [nz], {}, 13, out_types=[I64]))
    add(make_case("nonzero_bool_3d", "NonZero", [r.random((2, 3, 2)) > 0.5], {}, 13, out_types=[I64]))
    # Scatter (opset 9 and 10, deprecated for ScatterElements).
    add(make_case("scatter_opset10", "Scatter", [data, sidx, upd], {"axis": 1}, 10))
    return cases


SHAPE_INDEX_CASES = shape_index_cases()
# A new list: the parametrized tests above keep theirs; the coverage test reads this one.
ALL_CASES = [*ALL_CASES, *SHAPE_INDEX_CASES]
_ids = [c.id for c in ALL_CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"


@pytest.mark.parametrize("case", SHAPE_INDEX_CASES, ids=[c.id for c in SHAPE_INDEX_CASES])
def test_shape_index_op_matches_onnxruntime(case: OpCase, reference_outputs) -> None:
    test_matches_onnxruntime(case, reference_outputs)


@pytest.mark.parametrize("case", SHAPE_INDEX_CASES, ids=[c.id for c in SHAPE_INDEX_CASES])
def test_shape_index_op_save_roundtrip(case: OpCase, tmp_path, reference_outputs) -> None:
    test_save_roundtrip(case, tmp_path, reference_outputs)


# -- Reductions: Reduce*, ArgMax/ArgMin, TopK, CumSum --------------------------------------------
REDUCE_OPS = [
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
]


def reduction_cases() -> list[OpCase]:
    r = rng(41)
    cases: list[OpCase] = []
    add = cases.append
    x = randn(r, 2, 3, 4)
    pos = np.abs(randn(r, 3, 4, 2)) + 0.1  # for ReduceLogSum
    for op in REDUCE_OPS:
        name = op[len("Reduce") :].lower()
        data = pos if op == "ReduceLogSum" else x
        input_since = 13 if op == "ReduceSum" else 18
        # Attribute form (opset 11/13), all axes, keepdims 0.
        attr_opset = 11
        add(make_case(f"reduce_{name}_attr_axes", op, [data], {"axes": [1, -1]}, attr_opset))
        add(make_case(f"reduce_{name}_attr_all_nokeep", op, [data], {"keepdims": 0}, attr_opset))
        # Input form, negative axis, no axes, noop with empty axes.
        add(make_case(f"reduce_{name}_input_axes", op, [data, i64(-2)], {"keepdims": 0}, input_since))
        add(make_case(f"reduce_{name}_input_none", op, [data], {}, input_since))
        add(
            make_case(
                f"reduce_{name}_input_noop",
                op,
                [data, Init(np.zeros((0,), np.int64))],
                {"noop_with_empty_axes": 1},
                input_since,
            )
        )
        # An empty reduced axis.
        if op not in ("ReduceLogSum",):
            add(make_case(f"reduce_{name}_empty_axis", op, [np.zeros((2, 0, 3), np.float32)], {"axes": [1]}, 11))
    xi = r.integers(-9, 9, (3, 4, 2)).astype(np.int64)
    for op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean"):
        add(make_case(f"reduce_{op[6:].lower()}_int64", op, [xi], {"axes": [1]}, 11))
        add(make_case(f"reduce_{op[6:].lower()}_int32", op, [xi.astype(np.int32)], {"axes": [0, 2]}, 11))
    # A NaN first in its reduced row propagates; later ones are skipped (onnxruntime's loops).
    nan = x.copy()
    nan[0, 1, 0] = np.nan
    nan[1, 2, 3] = np.nan
    add(make_case("reduce_max_nan", "ReduceMax", [nan], {"axes": [2]}, 13))
    add(make_case("reduce_min_nan", "ReduceMin", [nan], {"axes": [2]}, 13))
    # ArgMax / ArgMin with ties, select_last_index, keepdims.
    ties = r.integers(0, 3, (3, 5)).astype(np.float32)
    for op in ("ArgMax", "ArgMin"):
        low = op.lower()
        add(make_case(f"{low}_axis1", op, [ties], {"axis": 1}, 13, out_types=[I64]))
        add(make_case(f"{low}_axis0_nokeep", op, [ties], {"axis": 0, "keepdims": 0}, 13, out_types=[I64]))
        add(make_case(f"{low}_last_index", op, [ties], {"axis": -1, "select_last_index": 1}, 13, out_types=[I64]))
        add(make_case(f"{low}_int64", op, [xi], {"axis": 1}, 11, out_types=[I64]))
    # TopK: largest/smallest, ties, k as attribute (opset 1..9) and input.
    tk = r.integers(0, 4, (3, 6)).astype(np.float32)
    add(make_case("topk_largest", "TopK", [tk, i64(3)], {}, 11, out_types=[F, I64], n_outputs=2))
    add(
        make_case(
            "topk_smallest_axis0", "TopK", [tk, i64(2)], {"axis": 0, "largest": 0}, 11, out_types=[F, I64], n_outputs=2
        )
    )
    add(make_case("topk_attr_k", "TopK", [randn(r, 2, 5)], {"k": 4}, 9, out_types=[F, I64], n_outputs=2))
    add(make_case("topk_int64_k0", "TopK", [xi, i64(0)], {"axis": 1}, 11, out_types=[I64, I64], n_outputs=2))
    add(make_case("topk_all", "TopK", [randn(r, 4, 3), i64(4)], {"axis": 0}, 11, out_types=[F, I64], n_outputs=2))
    # CumSum: axis input (int32 or int64), exclusive, reverse.
    cs = randn(r, 3, 4)
    for excl in (0, 1):
        for rev in (0, 1):
            add(
                make_case(
                    f"cumsum_e{excl}_r{rev}",
                    "CumSum",
                    [cs, Init(np.array(1, np.int64))],
                    {"exclusive": excl, "reverse": rev},
                    14,
                )
            )
    add(make_case("cumsum_int64_axis0", "CumSum", [xi, Init(np.array(-3, np.int32))], {}, 14))
    return cases


REDUCTION_CASES = reduction_cases()
# A new list: the parametrized tests above keep theirs; the coverage test reads this one.
ALL_CASES = [*ALL_CASES, *REDUCTION_CASES]
_ids = [c.id for c in ALL_CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"


@pytest.mark.parametrize("case", REDUCTION_CASES, ids=[c.id for c in REDUCTION_CASES])
def test_reduction_matches_onnxruntime(case: OpCase, reference_outputs) -> None:
    test_matches_onnxruntime(case, reference_outputs)


@pytest.mark.parametrize("case", REDUCTION_CASES, ids=[c.id for c in REDUCTION_CASES])
def test_reduction_save_roundtrip(case: OpCase, tmp_path, reference_outputs) -> None:
    test_save_roundtrip(case, tmp_path, reference_outputs)


# -- Normalization and softmax variants: LayerNormalization, RMSNormalization, GroupNormalization,
# InstanceNormalization, LogSoftmax, Hardmax ------------------------------------------------------
def norm_variant_cases() -> list[OpCase]:
    r = rng(42)
    cases: list[OpCase] = []
    add = cases.append
    x = randn(r, 2, 3, 4, 5, scale=3.0)
    ln = "LayerNormalization"
    add(make_case("layernorm_last", ln, [x, Init(randn(r, 5)), Init(randn(r, 5))], {}, 17))
    add(make_case("layernorm_axis1_nobias", ln, [x, Init(randn(r, 3, 4, 5))], {"axis": 1, "epsilon": 1e-2}, 17))
    add(make_case("layernorm_axis_neg2_bcast", ln, [x, Init(randn(r, 1, 5)), Init(randn(r, 4, 1))], {"axis": -2}, 17))
    add(
        make_case(
            "layernorm_mean_invstd",
            ln,
            [x, Init(randn(r, 4, 5)), Init(randn(r, 4, 5))],
            {"axis": 2},
            17,
            n_outputs=3,
        )
    )
    add(make_case("rmsnorm_last", "RMSNormalization", [x, Init(randn(r, 5))], {}, 23, reference="onnx"))
    add(
        make_case(
            "rmsnorm_axis1",
            "RMSNormalization",
            [x, Init(randn(r, 3, 4, 5))],
            {"axis": 1, "epsilon": 0.1},
            23,
            reference="onnx",
        )
    )
    gx = randn(r, 2, 6, 3, 3, scale=2.0)
    gn = "GroupNormalization"
    add(make_case("groupnorm_21_g3", gn, [gx, Init(randn(r, 6)), Init(randn(r, 6))], {"num_groups": 3}, 21))
    add(
        make_case(
            "groupnorm_21_g6_eps",
            gn,
            [gx, Init(randn(r, 6)), Init(randn(r, 6))],
            {"num_groups": 6, "epsilon": 1e-2},
            21,
        )
    )
    inorm = "InstanceNormalization"
    add(make_case("instancenorm_4d", inorm, [gx, Init(randn(r, 6)), Init(randn(r, 6))], {}, 13))
    add(
        make_case(
            "instancenorm_3d_eps",
            inorm,
            [randn(r, 2, 3, 7), Init(randn(r, 3)), Init(randn(r, 3))],
            {"epsilon": 0.5},
            13,
        )
    )
    sx = randn(r, 2, 3, 4, scale=4.0)
    for op in ("LogSoftmax", "Hardmax"):
        low = op.lower()
        add(make_case(f"{low}_default_13", op, [sx], {}, 13))
        add(make_case(f"{low}_axis0_13", op, [sx], {"axis": 0}, 13))
        add(make_case(f"{low}_legacy_default_11", op, [sx], {}, 11))
        add(make_case(f"{low}_legacy_axis0_11", op, [sx], {"axis": 0}, 11))
    ties = np.array([[1, 3, 3, 0], [2, 2, 1, 2]], np.float32)
    add(make_case("hardmax_ties", "Hardmax", [ties], {}, 13))
    return cases


NORM_VARIANT_CASES = norm_variant_cases()
# A new list: the parametrized tests above keep theirs; the coverage test reads this one.
ALL_CASES = [*ALL_CASES, *NORM_VARIANT_CASES]
_ids = [c.id for c in ALL_CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"


@pytest.mark.parametrize("case", NORM_VARIANT_CASES, ids=[c.id for c in NORM_VARIANT_CASES])
def test_norm_variant_matches_onnxruntime(case: OpCase, reference_outputs) -> None:
    test_matches_onnxruntime(case, reference_outputs)


@pytest.mark.parametrize("case", NORM_VARIANT_CASES, ids=[c.id for c in NORM_VARIANT_CASES])
def test_norm_variant_save_roundtrip(case: OpCase, tmp_path, reference_outputs) -> None:
    test_save_roundtrip(case, tmp_path, reference_outputs)


def test_groupnorm_opset18_scales_per_group() -> None:
    """GroupNormalization-18 (deprecated, so the ONNX checker refuses it and onnxruntime has no
    kernel for it) takes one scale and bias per group; checked against numpy."""
    r = rng(43)
    x = randn(r, 2, 6, 3, 3, scale=2.0)
    scale, bias = randn(r, 3), randn(r, 3)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-3)
    graph = helper.make_graph(
        [node],
        "gn18",
        [helper.make_tensor_value_info("x", F, list(x.shape))],
        [helper.make_tensor_value_info("y", F, list(x.shape))],
        initializer=[numpy_helper.from_array(scale, "s"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    got = oxiquant.load(model).run({"x": x})["y"]
    g = x.astype(np.float64).reshape(2, 3, -1)
    norm = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-3)
    want = norm * scale[None, :, None] + bias[None, :, None]
    np.testing.assert_allclose(got, want.reshape(x.shape), rtol=1e-4, atol=1e-5)


def test_topk_unsorted_is_refused() -> None:
    """TopK sorted=0 leaves the order to the implementation; onnxruntime's is not reproduced, so
    the engine refuses it rather than return another order."""
    x = randn(rng(44), 3, 10)
    case = make_case("topk_unsorted", "TopK", [x, i64(4)], {"sorted": 0}, 11, out_types=[F, I64], n_outputs=2)
    with pytest.raises(oxiquant.UnsupportedOpError, match="TopK.*sorted"):
        oxiquant.load(case.model)


def _movement_network(op: str) -> onnx.ModelProto:
    """Conv -> `op` -> Conv on each of its outputs (-> Concat): a data-movement op between
    quantized layers, which the integer engine runs on the integers."""
    r = rng(45)
    x = helper.make_tensor_value_info("x", F, ["N", 4, 6, 6])
    inits = [numpy_helper.from_array(randn(r, 8, 4, 3, 3, scale=0.3), "w0")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1])]
    if op == "Split":
        nodes.append(helper.make_node("Split", ["a", "sp"], ["s0", "s1"], axis=1))
        inits.append(numpy_helper.from_array(np.array([3, 5], np.int64), "sp"))
        parts = [("s0", 3), ("s1", 5)]
    elif op == "DepthToSpace":
        nodes.append(helper.make_node("DepthToSpace", ["a"], ["s0"], blocksize=2, mode="CRD"))
        parts = [("s0", 2)]
    elif op == "Tile":
        nodes.append(helper.make_node("Tile", ["a", "reps"], ["s0"]))
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 1], np.int64), "reps"))
        parts = [("s0", 8)]
    else:
        nodes.append(helper.make_node("Expand", ["a", "shp"], ["s0"]))
        inits.append(numpy_helper.from_array(np.array([1, 8, 6, 6], np.int64), "shp"))
        parts = [("s0", 8)]
    outs = []
    for i, (name, c) in enumerate(parts):
        inits.append(numpy_helper.from_array(randn(r, 4, c, 1, 1, scale=0.5), f"w{i + 1}"))
        nodes.append(helper.make_node("Conv", [name, f"w{i + 1}"], [f"c{i}"]))
        outs.append(f"c{i}")
    if len(outs) > 1:
        nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    else:
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, op, [x], [helper.make_tensor_value_info("y", F, None)], initializer=inits)
    return finish_model(graph, 13, {"x": randn(r, 2, 4, 6, 6)})


@pytest.mark.parametrize("op", ["Split", "DepthToSpace", "Tile", "Expand"])
def test_movement_op_runs_on_integers(op: str) -> None:
    """The integer engine passes the integers through a data-movement op (every output of a
    Split) and agrees bit for bit with the fake-quantized graph."""
    proto = _movement_network(op)
    x = randn(rng(46), 8, 4, 6, 6)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, dequantize_outputs=False, progress=False)
    assert q.engine == "int", q.engine_note
    np.testing.assert_array_equal(q.run(x, mode="int")["y"], q.run(x, mode="fake")["y"])
    float_nodes = [n for n in q.quant_info.get("float_nodes", [])]
    assert not any(op in str(n) for n in float_nodes), float_nodes


# -- Comparisons, logic, selection, activations and elementary functions -------------------------
NUMERIC = (np.float32, np.int64, np.int32, np.int8, np.uint8)
B = TensorProto.BOOL


def _ints(r: np.random.Generator, dt, *shape: int, lo: int = -20, hi: int = 20) -> np.ndarray:
    info = np.iinfo(dt)
    return r.integers(max(lo, info.min), min(hi, info.max), size=shape, endpoint=True).astype(dt)


def _values(r: np.random.Generator, dt, *shape: int) -> np.ndarray:
    """Values of `dt` with repeats, so that equality is hit."""
    if dt == np.float32:
        return (r.integers(-4, 4, size=shape) * 0.5).astype(np.float32)
    if dt == np.bool_:
        return r.integers(0, 2, size=shape).astype(bool)
    return _ints(r, dt, *shape, lo=-3, hi=3)


def logic_cases() -> list[OpCase]:
    r = rng(40)
    cases = []
    shapes = {"same": ((3, 4), (3, 4)), "bcast": ((2, 3, 4), (3, 1)), "scalar": ((), (2, 3)), "empty": ((0, 3), (3,))}
    for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        for dt in NUMERIC:
            for sid, (sa, sb) in shapes.items():
                a, b = _values(r, dt, *sa), _values(r, dt, *sb)
                cid = f"{op.lower()}_{np.dtype(dt).name}_{sid}"
                opset = 13 if op in ("Equal", "Less", "Greater") else 16
                cases.append(make_case(cid, op, [a, b], opset=opset, out_types=[B]))
        special = [SPECIAL_VALUES, SPECIAL_VALUES[::-1].copy()]
        cases.append(make_case(f"{op.lower()}_special", op, special, opset=16, out_types=[B]))
        const = [randn(r, 3, 4), Init(randn(r, 4))]
        cases.append(make_case(f"{op.lower()}_const_rhs", op, const, opset=16, out_types=[B]))
    cases.append(make_case("equal_bool", "Equal", [_values(r, np.bool_, 3, 4), _values(r, np.bool_, 4)], out_types=[B]))
    cases.append(make_case("less_opset9", "Less", [randn(r, 3, 4), randn(r, 4)], opset=9, out_types=[B]))
    cases.append(make_case("greater_opset7", "Greater", [randn(r, 3, 4), randn(r, 4)], opset=7, out_types=[B]))
    for op in ("And", "Or", "Xor"):
        for sid, (sa, sb) in shapes.items():
            a, b = _values(r, np.bool_, *sa), _values(r, np.bool_, *sb)
            cases.append(make_case(f"{op.lower()}_{sid}", op, [a, b], opset=7))
    cases.append(make_case("not", "Not", [_values(r, np.bool_, 2, 3, 4)], opset=7))
    cases.append(make_case("not_empty", "Not", [_values(r, np.bool_, 0, 3)]))
    for dt in (*NUMERIC, np.bool_):
        c, x, y = _values(r, np.bool_, 2, 1, 4), _values(r, dt, 3, 1), _values(r, dt, 2, 3, 4)
        out = [helper.np_dtype_to_tensor_dtype(x.dtype)]
        ref = "onnx" if dt == np.bool_ else "onnxruntime"  # onnxruntime has no bool Where
        cid = f"where_{np.dtype(dt).name}_bcast3"
        cases.append(make_case(cid, "Where", [c, x, y], opset=16, out_types=out, reference=ref))
    cond = _values(r, np.bool_, 3, 4)
    cases.append(make_case("where_same", "Where", [cond, randn(r, 3, 4), randn(r, 3, 4)], opset=9, out_types=[F]))
    cases.append(
        make_case("where_const_branches", "Where", [cond, Init(randn(r, 4)), Init(scalar_f32(0))], out_types=[F])
    )
    cases.append(make_case("isnan", "IsNaN", [SPECIAL_VALUES], opset=13, out_types=[B]))
    for attrs in ({}, {"detect_negative": 0}, {"detect_positive": 0}, {"detect_negative": 0, "detect_positive": 0}):
        cid = "isinf" + "".join(f"_{k}{v}" for k, v in attrs.items())
        cases.append(make_case(cid, "IsInf", [SPECIAL_VALUES], attrs, opset=10, out_types=[B]))
    return cases


UNIT_INTERVAL = np.array([-1.0, -0.999, -0.5, -1e-20, 0.0, 0.3, 0.5, 0.999, 1.0, 1.5, -1.5, np.nan], np.float32)


def activation_cases() -> list[OpCase]:
    r = rng(41)
    x = randn(r, 3, 4, 5, scale=3.0)
    cases = []
    for op, attrs, opset in [
        ("Erf", {}, 13),
        ("Gelu", {}, 20),
        ("Gelu", {"approximate": "tanh"}, 20),
        ("Gelu", {"approximate": "none"}, 20),
        ("Elu", {}, 7),
        ("Elu", {"alpha": 0.4}, 13),
        ("Selu", {}, 7),
        ("Selu", {"alpha": 2.0, "gamma": 0.5}, 13),
        ("Celu", {}, 12),
        ("Celu", {"alpha": 2.5}, 12),
        ("Softsign", {}, 13),
        ("Mish", {}, 18),
        ("ThresholdedRelu", {}, 10),
        ("ThresholdedRelu", {"alpha": -0.5}, 10),
        ("Reciprocal", {}, 13),
        ("Ceil", {}, 13),
        ("Sign", {}, 13),
        ("Sin", {}, 7),
        ("Cos", {}, 7),
        ("Tan", {}, 7),
        ("Atan", {}, 7),
        ("Sinh", {}, 9),
        ("Cosh", {}, 9),
        ("Asinh", {}, 9),
    ]:
        suffix = "_".join(f"{k}{v}" for k, v in attrs.items())
        cid = f"{op.lower()}{'_' + suffix if suffix else ''}_opset{opset}"
        cases.append(make_case(cid, op, [x], attrs, opset))
        cases.append(make_case(f"{cid}_special", op, [SPECIAL_VALUES], attrs, opset))
    # Functions of a restricted domain, inside it and at its edges.
    cases.append(make_case("log", "Log", [np.abs(x) + 1e-3]))
    cases.append(make_case("acosh", "Acosh", [np.abs(x) + 1.0], opset=9))
    for op, opset in (("Asin", 7), ("Acos", 7), ("Atanh", 9)):
        cases.append(make_case(op.lower(), op, [np.tanh(x) * np.float32(0.99)], opset=opset))
        cases.append(make_case(f"{op.lower()}_edges", op, [UNIT_INTERVAL], opset=opset))
    for op, opset in (("Log", 13), ("Acosh", 9)):
        cases.append(make_case(f"{op.lower()}_special", op, [SPECIAL_VALUES], opset=opset))
    cases.append(make_case("erf_fine", "Erf", [np.linspace(-6, 6, 241, dtype=np.float32)]))
    cases.append(make_case("gelu_fine", "Gelu", [np.linspace(-12, 12, 241, dtype=np.float32)], opset=20))
    cases.append(make_case("mish_fine", "Mish", [np.linspace(-30, 30, 241, dtype=np.float32)], opset=18))
    # Integer kernels of Abs, Neg, Sign, Relu (wrapping at the type's minimum, as onnxruntime).
    for dt in (np.int8, np.int32, np.int64, np.uint8):
        info = np.iinfo(dt)
        v = np.concatenate([_ints(r, dt, 10), np.array([info.min, info.max, 0], dt)])
        for op, opset in (("Abs", 13), ("Neg", 13), ("Sign", 13), ("Relu", 14)):
            if op in ("Neg", "Relu") and dt == np.uint8:
                continue
            # onnxruntime has no int64 Relu.
            ref = "onnx" if (op, dt) == ("Relu", np.int64) else "onnxruntime"
            cases.append(make_case(f"{op.lower()}_{np.dtype(dt).name}", op, [v], opset=opset, reference=ref))
    # PRelu: the slope broadcast to X (scalar, per channel, full, a trailing vector).
    x4 = randn(r, 2, 3, 4, 5)
    for sid, ss in {"scalar": (), "one": (1,), "channel": (3, 1, 1), "full": (2, 3, 4, 5), "last": (5,)}.items():
        slope = randn(r, *ss, scale=0.3)
        cases.append(make_case(f"prelu_{sid}", "PRelu", [x4, Init(slope)], opset=9))
    cases.append(make_case("prelu_runtime_slope", "PRelu", [x4, randn(r, 3, 1, 1)], opset=16))
    cases.append(make_case("prelu_special", "PRelu", [SPECIAL_VALUES, Init(scalar_f32(0.25))], opset=16))
    return cases


def _numpy_mod(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """numpy's mod (the definition of float fmod=0), without its warnings for NaN results."""
    with np.errstate(all="ignore"):
        return {"out0": np.mod(feeds["in0"], feeds["in1"])}


def arithmetic_cases() -> list[OpCase]:
    r = rng(42)
    cases = []
    # Pow: float, integer and mixed operands.
    base = (np.abs(randn(r, 3, 4)) + 0.1).astype(np.float32)
    cases.append(make_case("pow_float", "Pow", [base, randn(r, 3, 4)], opset=13))
    cases.append(make_case("pow_float_bcast", "Pow", [base, randn(r, 4)], opset=7))
    cases.append(make_case("pow_square_neg_base", "Pow", [randn(r, 3, 4), Init(scalar_f32(2.0))], opset=13))
    cases.append(make_case("pow_float_int32_exp", "Pow", [randn(r, 3, 4), _ints(r, np.int32, 4, lo=-3, hi=3)]))
    cases.append(make_case("pow_float_int64_exp", "Pow", [randn(r, 3, 4), _ints(r, np.int64, 3, 1, lo=0, hi=4)]))
    for dt in (np.int64, np.int32):
        base, exp = _ints(r, dt, 3, 4, lo=-6, hi=6), _ints(r, dt, 4, lo=0, hi=5)
        cases.append(make_case(f"pow_{np.dtype(dt).name}", "Pow", [base, exp]))
    exp = (r.random(4) * 3).astype(np.float32)
    cases.append(make_case("pow_int64_float_exp", "Pow", [_ints(r, np.int64, 3, 4, lo=0, hi=9), exp]))
    cases.append(make_case("pow_special", "Pow", [SPECIAL_VALUES, Init(scalar_f32(0.5))], opset=15))
    # Mod: both conventions, every integer type, floats.
    for dt in (np.int64, np.int32, np.int8, np.uint8):
        a = _ints(r, dt, 3, 4, lo=-30, hi=30)
        b = _ints(r, dt, 4, lo=1, hi=7) * np.array([1, -1, 1, -1] if dt != np.uint8 else [1] * 4).astype(dt)
        for fmod in (0, 1):
            cases.append(make_case(f"mod_{np.dtype(dt).name}_fmod{fmod}", "Mod", [a, b], {"fmod": fmod}, opset=13))
    fa, fb = randn(r, 3, 4, scale=5.0), randn(r, 4, scale=2.0)
    cases.append(make_case("mod_float_fmod1", "Mod", [fa, fb], {"fmod": 1}, opset=10))
    # Float fmod=0 (numpy's mod) is defined from opset 28, which onnxruntime refuses below; the
    # engine computes it at any opset, and the onnx reference too.
    cases.append(make_case("mod_float_fmod0", "Mod", [fa, fb], {"fmod": 0}, opset=13, reference="onnx"))
    edges = np.array([5.0, -5.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 3.0, -3.0, 7.5], np.float32)
    divisors = np.array([np.inf, np.inf, -2.0, 2.0, 2.0, 3.0, 1.0, 0.0, -np.inf, -2.0], np.float32)
    cases.append(make_case("mod_float_edges_fmod1", "Mod", [edges, divisors], {"fmod": 1}))
    cases.append(make_case("mod_float_edges_fmod0", "Mod", [edges, divisors], {"fmod": 0}, reference=_numpy_mod))
    # Min, Max, Mean: variadic, broadcast, integer types, NaN.
    for op in ("Min", "Max", "Mean"):
        for n, shapes in {"one": [(3, 4)], "two_bcast": [(3, 4), (4,)], "three_bcast": [(2, 1, 4), (3, 1), ()]}.items():
            cases.append(make_case(f"{op.lower()}_{n}", op, [randn(r, *s) for s in shapes], opset=13))
        cases.append(make_case(f"{op.lower()}_opset8", op, [randn(r, 3, 4), randn(r, 4)], opset=8))
        cases.append(make_case(f"{op.lower()}_special", op, [SPECIAL_VALUES, SPECIAL_VALUES[::-1].copy()]))
        cases.append(make_case(f"{op.lower()}_const", op, [randn(r, 3, 4), Init(randn(r, 4))]))
    for op in ("Min", "Max"):
        for dt in (np.int64, np.int32, np.int8, np.uint8):
            cases.append(make_case(f"{op.lower()}_{np.dtype(dt).name}", op, [_ints(r, dt, 3, 4), _ints(r, dt, 4)]))
    return cases


def matrix_and_bit_cases() -> list[OpCase]:
    r = rng(44)
    cases = []
    # Trilu: both triangles, diagonals k inside and beyond the matrix, batches, any type.
    for upper in (1, 0):
        for k in (None, 0, 1, -2, 7, -7):
            for shape in ((4, 5), (2, 5, 3)):
                x = randn(r, *shape)
                ins = [x] if k is None else [x, Init(np.array(k, np.int64))]
                kid = "none" if k is None else str(k).replace("-", "neg")
                cid = f"trilu_upper{upper}_k{kid}_{'x'.join(map(str, shape))}"
                cases.append(make_case(cid, "Trilu", ins, {"upper": upper}, opset=14))
    for dt in (np.int64, np.int32, np.uint8, np.bool_):
        ref = "onnx" if dt == np.uint8 else "onnxruntime"  # onnxruntime has no uint8 Trilu
        x = _values(r, dt, 3, 4)
        cases.append(make_case(f"trilu_{np.dtype(dt).name}", "Trilu", [x], {"upper": 0}, opset=14, reference=ref))
    cases.append(make_case("trilu_runtime_k", "Trilu", [randn(r, 4, 4), np.array(-1, np.int64)], opset=14))
    cases.append(make_case("trilu_empty", "Trilu", [randn(r, 0, 3)], opset=14))
    # Einsum: products, transposes, reductions, diagonals, ellipses, implicit outputs.
    for cid, eq, shapes in [
        ("matmul", "ij,jk->ik", [(3, 4), (4, 5)]),
        ("batch_matmul", "bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
        ("attention_scores", "bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
        ("transpose", "ij->ji", [(3, 4)]),
        ("sum_rows", "ij->i", [(3, 4)]),
        ("sum_all", "ij->", [(3, 4)]),
        ("inner", "i,i", [(5,), (5,)]),
        ("outer", "i,j->ij", [(3,), (4,)]),
        ("trace", "ii", [(4, 4)]),
        ("diagonal", "ii->i", [(4, 4)]),
        ("batch_diagonal", "...ii->...i", [(2, 3, 4, 4)]),
        ("ellipsis_matmul_bcast", "...ij,...jk->...ik", [(2, 1, 3, 4), (1, 3, 4, 2)]),
        ("implicit_matmul", "ij,jk", [(3, 4), (4, 2)]),
        ("implicit_order", "ba", [(3, 4)]),
        ("three_operands", "ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
        ("bilinear", "bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
        ("spaces", " ij , jk -> ik ", [(2, 3), (3, 2)]),
    ]:
        cases.append(make_case(f"einsum_{cid}", "Einsum", [randn(r, *s) for s in shapes], {"equation": eq}, opset=12))
    cases.append(
        make_case("einsum_const_weight", "Einsum", [randn(r, 2, 3), Init(randn(r, 3, 4))], {"equation": "bi,io->bo"})
    )
    # Bitwise ops on every integer type the engine has, broadcast.
    for dt in (np.int8, np.uint8, np.int32, np.int64):
        a, b = _ints(r, dt, 3, 4, lo=-100, hi=100), _ints(r, dt, 4, lo=-100, hi=100)
        for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
            cases.append(make_case(f"{op.lower()}_{np.dtype(dt).name}", op, [a, b], opset=18))
        cases.append(make_case(f"bitwisenot_{np.dtype(dt).name}", "BitwiseNot", [a], opset=18))
    shifts = np.array([0, 1, 3, 7, 2, 5], np.uint8)
    for direction in ("LEFT", "RIGHT"):
        x = _ints(r, np.uint8, 6, lo=0, hi=255)
        attrs = {"direction": direction}
        cases.append(make_case(f"bitshift_{direction.lower()}_uint8", "BitShift", [x, shifts], attrs, 11))
        cases.append(
            make_case(
                f"bitshift_{direction.lower()}_uint8_bcast",
                "BitShift",
                [x.reshape(2, 3), Init(np.array([1, 2, 3], np.uint8))],
                {"direction": direction},
                11,
            )
        )
    # CastLike: to the type of a second input, whose values and shape do not matter.
    x = randn(r, 3, 4, scale=3.0)
    for dt in (np.int64, np.int32, np.int8, np.uint8, np.bool_, np.float32):
        like, out = np.zeros((2,), dt), [helper.np_dtype_to_tensor_dtype(np.dtype(dt))]
        cid = f"castlike_float_to_{np.dtype(dt).name}"
        cases.append(make_case(cid, "CastLike", [np.abs(x), like], opset=15, out_types=out))
    ints = _ints(r, np.int64, 3, 4)
    cases.append(make_case("castlike_int64_to_float", "CastLike", [ints, Init(scalar_f32(0))], opset=15, out_types=[F]))
    i32 = _ints(r, np.int32, 5)
    cases.append(make_case("castlike_opset19", "CastLike", [i32, randn(r, 1)], opset=19, out_types=[F]))
    # Add/Sub/Mul/Div on int8 and uint8 (from opset 14) wrap around, as onnxruntime.
    for dt in (np.int8, np.uint8):
        for op in ("Add", "Sub", "Mul", "Div"):
            a, b = _ints(r, dt, 3, 4, lo=-128, hi=255), _ints(r, dt, 4, lo=1, hi=127)
            cases.append(make_case(f"{op.lower()}_{np.dtype(dt).name}_bcast", op, [a, b], opset=14))
    return cases


# The cases join the top tests' lists (so that those tests run them: matched against the
# reference, and saved and reloaded) and ALL_CASES, which the coverage test reads.
MATH_CASES = [*logic_cases(), *activation_cases(), *arithmetic_cases(), *matrix_and_bit_cases()]
_TOP_CASES.extend(MATH_CASES)
_TOP_IDS.extend(c.id for c in MATH_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *MATH_CASES]


@pytest.mark.parametrize(
    "equation",
    ["ij,jk->ikk", "ij,jk->iz", "i.j->ij", "......i->i", "ij->"],
)
def test_einsum_malformed_equation_is_refused(equation: str) -> None:
    x = randn(rng(45), 2, 3)
    node = helper.make_node("Einsum", ["x"], ["y"], equation=equation)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if equation == "ij->":
        # Well-formed: the sum of every element, as numpy.
        np.testing.assert_allclose(oxiquant.load(model).run({"x": x})["y"], np.einsum(equation, x), rtol=1e-5)
        return
    with pytest.raises((oxiquant.UnsupportedOpError, oxiquant.ShapeError)):
        oxiquant.load(model).run({"x": x})


def test_gelu_approximation_other_than_none_or_tanh_is_refused() -> None:
    case = make_case("gelu_bad", "Gelu", [randn(rng(43), 2, 3)], {"approximate": "none"}, 20)
    case.model.graph.node[0].attribute[0].s = b"erf"
    with pytest.raises(oxiquant.UnsupportedOpError, match="approximate"):
        oxiquant.load(case.model)


def _cnn_with_middle(kind: str) -> onnx.ModelProto:
    """small_cnn (opset 20) with `kind` after its first Relu: an element-wise op, or a
    comparison feeding a Where, or a PRelu, Min or Pow with a constant."""
    import ptq_graphs

    proto = ptq_graphs.small_cnn(middle="Sigmoid")
    nodes = list(proto.graph.node)
    i = next(k for k, n in enumerate(nodes) if n.name == "middle")
    const = {
        "thr": np.array(0.3, np.float32),
        "zero": np.array(0.0, np.float32),
        "slope": np.array([0.1, 0.2, 0.3, 0.4], np.float32).reshape(4, 1, 1),
        "cap": np.array(1.5, np.float32),
        "two": np.array(2.0, np.float32),
    }
    if kind == "Where":
        new = [
            helper.make_node("Greater", ["r1", "thr"], ["cond"], name="greater"),
            helper.make_node("Where", ["cond", "r1", "zero"], ["mid"], name="middle"),
        ]
    elif kind in ("PRelu", "Min", "Pow"):
        operand = {"PRelu": "slope", "Min": "cap", "Pow": "two"}[kind]
        new = [helper.make_node(kind, ["r1", operand], ["mid"], name="middle")]
    else:
        new = [helper.make_node(kind, ["r1"], ["mid"], name="middle")]
    nodes[i : i + 1] = new
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in const.items())
    proto.opset_import[0].version = 20
    return proto


@pytest.mark.parametrize("kind", ["Gelu", "Erf", "Elu", "Mish", "Sin", "Where", "PRelu", "Min", "Pow"])
def test_math_op_quantizes_as_a_float_island(kind: str) -> None:
    """The ops run in float between quantized layers: listed as float nodes, the quantized
    model close to onnxruntime's float one, the integer engine equal to the fake-quantized
    run, and the QDQ export equal to it in onnxruntime."""
    import ptq_graphs

    proto = _cnn_with_middle(kind)
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(3), n=32)
    ref = run_reference(proto, {"x": x}, "onnxruntime")["y"]
    np.testing.assert_allclose(oxiquant.load(proto).run({"x": x})["y"], ref, rtol=1e-4, atol=1e-5)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, progress=False)
    assert ("middle", kind) in [(n, o) for n, o, _ in q.quant_info["float_nodes"]]
    y = q.run(x)["y"]
    noise = float(np.mean((y.astype(np.float64) - ref) ** 2))
    assert noise == 0 or 10 * np.log10(float(np.mean(ref.astype(np.float64) ** 2)) / noise) > 25
    np.testing.assert_array_equal(q.run(x, mode="int")["y"], q.run(x, mode="fake")["y"])
    qdq = run_reference(q.to_onnx(), {"x": x}, "onnxruntime")["y"]
    np.testing.assert_allclose(qdq, y, rtol=1e-5, atol=1e-6 * np.abs(y).max())


# -- Layers of ops-nn: ConvTranspose, ... (compared as ALL_CASES are, by the tests above) -------
def conv_transpose_cases() -> list[OpCase]:
    r = rng(101)
    cases = []

    def add(cid, xs, ws, bias=True, w_init=True, opset=11, **attrs):
        x = randn(r, *xs)
        w = randn(r, *ws, scale=0.5)
        ins = [x, Init(w) if w_init else w]
        if bias:
            b = randn(r, ws[1] * attrs.get("group", 1))
            ins.append(Init(b) if w_init else b)
        cases.append(make_case(f"convtranspose_{cid}", "ConvTranspose", ins, attrs, opset))

    add("2d_basic", (2, 3, 5, 6), (3, 4, 3, 3))
    add("2d_no_bias", (1, 2, 4, 4), (2, 3, 3, 3), bias=False)
    add("2d_runtime_weights", (1, 2, 4, 4), (2, 3, 3, 3), w_init=False)
    add("2d_stride2", (1, 4, 5, 5), (4, 2, 3, 3), strides=[2, 2])
    add("2d_stride2_k4_pad1", (2, 8, 6, 7), (8, 4, 4, 4), strides=[2, 2], pads=[1, 1, 1, 1])
    add("2d_asym_pads", (1, 2, 5, 5), (2, 3, 3, 2), strides=[2, 3], pads=[0, 1, 2, 1])
    add("2d_dilations", (1, 2, 5, 4), (2, 2, 3, 3), dilations=[2, 3])
    add("2d_output_padding", (1, 3, 4, 4), (3, 2, 3, 3), strides=[3, 2], output_padding=[2, 1])
    add("2d_group2", (2, 4, 5, 5), (4, 3, 3, 3), group=2, strides=[2, 2])
    add("2d_depthwise", (1, 6, 7, 7), (6, 1, 4, 4), group=6, strides=[2, 2], pads=[1, 1, 1, 1])
    add("2d_output_shape", (1, 2, 4, 5), (2, 3, 3, 3), strides=[2, 2], output_shape=[8, 10])
    add("2d_output_shape_smaller", (1, 2, 4, 5), (2, 3, 3, 3), strides=[2, 2], output_shape=[6, 7])
    add("2d_output_shape_upper", (1, 2, 4, 5), (2, 3, 3, 3), strides=[2, 2], output_shape=[8, 9], auto_pad="SAME_UPPER")
    add("2d_same_upper", (1, 2, 3, 4), (2, 3, 3, 3), strides=[2, 2], auto_pad="SAME_UPPER")
    add("2d_same_lower", (1, 2, 3, 4), (2, 3, 3, 3), strides=[2, 2], auto_pad="SAME_LOWER")
    add("2d_valid", (1, 2, 3, 4), (2, 3, 2, 3), strides=[2, 1], auto_pad="VALID")
    add("2d_kernel_shape", (1, 2, 3, 3), (2, 2, 3, 2), kernel_shape=[3, 2])
    add("2d_1x1", (2, 5, 4, 4), (5, 3, 1, 1))
    add("2d_wide", (1, 16, 20, 20), (16, 8, 2, 2), strides=[2, 2])
    add("2d_opset1", (1, 2, 3, 3), (2, 2, 3, 3), opset=7)
    add("2d_empty_batch", (0, 2, 3, 3), (2, 2, 3, 3))
    add("1d", (2, 3, 7), (3, 2, 3), strides=[2], pads=[1, 0])
    add("1d_output_padding", (1, 2, 5), (2, 2, 4), strides=[3], output_padding=[1], dilations=[2])
    add("3d", (1, 2, 3, 4, 3), (2, 2, 2, 3, 2), strides=[2, 1, 2], pads=[1, 0, 0, 0, 1, 1])
    add("3d_group", (1, 4, 3, 3, 3), (4, 1, 2, 2, 2), group=2, output_padding=[1, 0, 1], strides=[2, 2, 2])
    return cases


def resize_interpolation_cases() -> list[OpCase]:
    r = rng(102)
    x = randn(r, 1, 2, 5, 6)
    cases = []

    def f32(*v: float) -> Init:
        return Init(np.array(v, dtype=np.float32))

    def add(cid, ins, opset=13, **attrs):
        cases.append(make_case(f"resize{opset}_{cid}", "Resize", [x, *ins], attrs, opset))

    for mode in ("linear", "cubic"):
        for coord in RESIZE_COORDS:
            opset = 19 if coord == "half_pixel_symmetric" else 13
            attrs = {"mode": mode, "coordinate_transformation_mode": coord}
            add(f"{mode}_up_{coord}", [None, f32(1, 1, 2.5, 1.5)], opset, **attrs)
            add(f"{mode}_down_{coord}", [None, f32(1, 1, 0.6, 0.5)], opset, **attrs)
            add(f"{mode}_sizes_{coord}", [None, None, i64(1, 2, 8, 4)], opset, **attrs)
        add(
            f"{mode}_tf_crop",
            [f32(0, 0, 0.2, -0.3, 1, 1, 0.9, 1.2), f32(1, 1, 1.6, 1.4)],
            13,
            mode=mode,
            coordinate_transformation_mode="tf_crop_and_resize",
            extrapolation_value=-2.5,
        )
        add(
            f"{mode}_tf_crop_sizes",
            [f32(0, 0, 0.4, 0.1, 1, 1, 0.6, 0.9), None, i64(1, 2, 3, 7)],
            13,
            mode=mode,
            coordinate_transformation_mode="tf_crop_and_resize",
        )
        add(f"{mode}_axes", [None, f32(1.7, 0.6)], 18, mode=mode, axes=[3, 2])
        add(f"{mode}_axes_negative", [None, None, i64(9)], 18, mode=mode, axes=[-2])
        for policy in ("not_larger", "not_smaller"):
            add(
                f"{mode}_{policy}", [None, None, i64(7, 9)], 18, mode=mode, axes=[2, 3], keep_aspect_ratio_policy=policy
            )
        for coord in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            add(
                f"{mode}_antialias_{coord}",
                [None, f32(1, 1, 0.6, 0.35)],
                18,
                mode=mode,
                antialias=1,
                coordinate_transformation_mode=coord,
            )
        add(f"{mode}_antialias_up", [None, f32(1, 1, 1.5, 0.5)], 18, mode=mode, antialias=1)
        add(f"{mode}_runtime_scales", [None, np.array([1, 1, 1.3, 2.2], np.float32)], 13, mode=mode)
    add("cubic_a", [None, f32(1, 1, 1.8, 0.7)], 13, mode="cubic", cubic_coeff_a=-0.5)
    add("cubic_exclude_outside", [None, f32(1, 1, 1.8, 0.7)], 13, mode="cubic", exclude_outside=1)
    add(
        "cubic_exclude_outside_crop",
        [f32(0, 0, -0.2, 0.1, 1, 1, 1.1, 0.8), f32(1, 1, 2, 1.5)],
        13,
        mode="cubic",
        exclude_outside=1,
        coordinate_transformation_mode="tf_crop_and_resize",
        extrapolation_value=3.0,
    )
    add(
        "nearest_tf_crop",
        [f32(0, 0, 0.1, -0.2, 1, 1, 0.8, 1.1), f32(1, 1, 1.5, 2)],
        13,
        mode="nearest",
        coordinate_transformation_mode="tf_crop_and_resize",
        extrapolation_value=7.0,
    )
    add("nearest_axes", [None, f32(2.0)], 18, mode="nearest", axes=[3])
    add("linear_11_roi_ignored", [f32(0, 0, 0, 0, 1, 1, 1, 1), f32(1, 1, 1.5, 2)], 11, mode="linear")
    cases.append(
        make_case(
            "resize13_linear_5d",
            "Resize",
            [randn(r, 1, 2, 3, 4, 3), None, f32(1, 1, 1.5, 0.5, 2)],
            {"mode": "linear"},
            13,
        )
    )
    cases.append(make_case("resize10_linear", "Resize", [x, f32(1, 1, 1.6, 0.7)], {"mode": "linear"}, 10))
    cases.append(make_case("upsample9_linear", "Upsample", [x, f32(1, 1, 2, 3)], {"mode": "linear"}, 9))
    cases.append(make_case("upsample7_linear", "Upsample", [x], {"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]}, 7))
    return cases


def recurrent_cases() -> list[OpCase]:
    r = rng(103)
    cases = []

    def add(
        cid,
        op,
        seq=4,
        batch=3,
        inp=5,
        h=3,
        direction="forward",
        bias=True,
        lens=None,
        state=False,
        peep=False,
        layout=0,
        w_init=True,
        opset=14,
        reference="onnxruntime",
        **attrs,
    ):
        g = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
        dirs = 2 if direction == "bidirectional" else 1
        x = randn(r, *((seq, batch, inp) if layout == 0 else (batch, seq, inp)))
        w = randn(r, dirs, g * h, inp, scale=0.5)
        rr = randn(r, dirs, g * h, h, scale=0.5)
        ins = [x, Init(w) if w_init else w, Init(rr) if w_init else rr]
        ins.append(Init(randn(r, dirs, 2 * g * h)) if bias else None)
        ins.append(None if lens is None else np.array(lens, np.int32))
        states = (dirs, batch, h) if layout == 0 else (batch, dirs, h)
        ins.append(randn(r, *states) if state else None)
        if op == "LSTM":
            ins.append(randn(r, *states) if state else None)
            ins.append(Init(randn(r, dirs, 3 * h)) if peep else None)
        if layout:
            attrs["layout"] = layout
        n_out = 3 if op == "LSTM" else 2
        cases.append(
            make_case(
                f"{op.lower()}_{cid}",
                op,
                ins,
                {"hidden_size": h, "direction": direction, **attrs},
                opset,
                n_outputs=n_out,
                reference=reference,
            )
        )

    for op in ("LSTM", "GRU", "RNN"):
        add("forward", op)
        add("reverse", op, direction="reverse")
        add("bidirectional", op, direction="bidirectional", state=True)
        add("no_bias", op, bias=False)
        add("initial_state", op, state=True)
        add("seq_lens", op, lens=[4, 2, 3], state=True)
        add("seq_lens_reverse", op, direction="reverse", lens=[1, 4, 3])
        add("seq_lens_bidirectional", op, direction="bidirectional", lens=[3, 1, 4], state=True)
        add("runtime_weights", op, w_init=False)
        add("batch1_long", op, seq=9, batch=1, h=6, inp=2)
        add("opset7", op, opset=7)
        add("layout1", op, layout=1, state=True, direction="bidirectional", reference="onnx")
    add("peepholes", "LSTM", peep=True, state=True)
    add("peepholes_bidirectional", "LSTM", peep=True, state=True, direction="bidirectional", lens=[2, 4, 1])
    add("activations_default", "LSTM", activations=["Sigmoid", "Tanh", "Tanh"])
    add("linear_before_reset", "GRU", linear_before_reset=1, state=True)
    add("linear_before_reset_bidirectional", "GRU", linear_before_reset=1, direction="bidirectional", lens=[4, 1, 2])
    add("activations_default", "RNN", activations=["Tanh", "Tanh"], direction="bidirectional")
    return cases


def test_lstm_with_omitted_y_output() -> None:
    """Y_h only, Y omitted by an empty output name (as the onnx node tests write it)."""
    r = rng(104)
    x, w, rr = randn(r, 3, 2, 4), randn(r, 1, 12, 4), randn(r, 1, 12, 3)
    node = helper.make_node("LSTM", ["x", "w", "r"], ["", "y_h"], hidden_size=3)
    graph = helper.make_graph(
        [node],
        "lstm_y_h",
        [helper.make_tensor_value_info("x", F, [3, 2, 4])],
        [helper.make_tensor_value_info("y_h", F, [1, 2, 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(rr, "r")],
    )
    model = finish_model(graph, 14)
    want = run_reference(model, {"x": x}, "onnxruntime")
    assert_outputs_close(oxiquant.load(model).run({"x": x}), want)


def lp_pool_cases() -> list[OpCase]:
    r = rng(105)
    x = randn(r, 2, 3, 7, 6)
    cases = [
        make_case("lppool_2d", "LpPool", [x], {"kernel_shape": [3, 2]}, 11),
        make_case("lppool_2d_p1", "LpPool", [x], {"kernel_shape": [2, 2], "p": 1}, 11),
        make_case(
            "lppool_2d_p3_strides_pads",
            "LpPool",
            [x],
            {"kernel_shape": [3, 3], "p": 3, "strides": [2, 1], "pads": [1, 0, 2, 1]},
            11,
        ),
        make_case(
            "lppool_2d_same_upper",
            "LpPool",
            [x],
            {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
            11,
        ),
        make_case(
            "lppool_2d_dilations_ceil",
            "LpPool",
            [x],
            {"kernel_shape": [2, 2], "dilations": [2, 1], "ceil_mode": 1, "strides": [2, 2]},
            18,
        ),
        make_case("lppool_1d", "LpPool", [randn(r, 2, 3, 9)], {"kernel_shape": [3], "strides": [2]}, 11),
        make_case("globallppool", "GlobalLpPool", [x], {}, 11),
        make_case("globallppool_p3", "GlobalLpPool", [x], {"p": 3}, 11),
        make_case("globallppool_1d", "GlobalLpPool", [randn(r, 2, 3, 5)], {"p": 1}, 11),
    ]
    return cases


NN_CASES = [*conv_transpose_cases(), *resize_interpolation_cases(), *recurrent_cases(), *lp_pool_cases()]
# Run by test_matches_onnxruntime and test_save_roundtrip (pytest reads the list when it collects).
_TOP_CASES.extend(NN_CASES)
_TOP_IDS.extend(c.id for c in NN_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *NN_CASES]


def pool_3d_cases() -> list[OpCase]:
    r = rng(201)
    x = randn(r, 2, 3, 6, 7, 5)
    cases = []
    for op in ("MaxPool", "AveragePool"):
        low = op.lower()
        cases += [
            make_case(f"{low}_3d", op, [x], {"kernel_shape": [2, 3, 2]}, 11),
            make_case(
                f"{low}_3d_strides_pads",
                op,
                [x],
                {"kernel_shape": [3, 2, 3], "strides": [2, 1, 2], "pads": [1, 0, 1, 2, 1, 0]},
                11,
            ),
            make_case(
                f"{low}_3d_same_lower_ceil",
                op,
                [x],
                {"kernel_shape": [2, 2, 3], "strides": [2, 3, 2], "auto_pad": "SAME_LOWER", "ceil_mode": 1},
                11,
            ),
            make_case(
                f"{low}_3d_dilations_ceil",
                op,
                [x],
                {"kernel_shape": [2, 2, 2], "dilations": [2, 1, 2], "strides": [2, 2, 1], "ceil_mode": 1},
                19,
            ),
        ]
    cases.append(
        make_case(
            "averagepool_3d_count_include_pad",
            "AveragePool",
            [x],
            {"kernel_shape": [3, 3, 2], "pads": [1, 2, 0, 2, 1, 1], "count_include_pad": 1, "strides": [2, 2, 2]},
            11,
        )
    )
    return cases


# -- Losses, cumulative products, normalization, cropping and selection, generators ---------------
def loss_cases() -> list[OpCase]:
    r = rng(106)
    x2, t2 = randn(r, 4, 5), r.integers(0, 5, size=(4,)).astype(np.int64)
    x4, t4 = randn(r, 2, 3, 4, 5), r.integers(0, 3, size=(2, 4, 5)).astype(np.int64)
    t4_ignored = t4.copy()
    t4_ignored[0, 1, :] = 1
    w3, w5 = np.abs(randn(r, 3)) + 0.1, np.abs(randn(r, 5)) + 0.1
    cases = []
    for op, opset in (("NegativeLogLikelihoodLoss", 13), ("SoftmaxCrossEntropyLoss", 13)):
        tag = "nll" if op.startswith("Neg") else "sce"
        for red in ("none", "sum", "mean"):
            cases.append(make_case(f"{tag}_2d_{red}", op, [x2, t2], {"reduction": red}, opset))
            cases.append(make_case(f"{tag}_4d_weight_{red}", op, [x4, t4, w3], {"reduction": red}, opset))
            cases.append(
                make_case(
                    f"{tag}_4d_ignore_{red}",
                    op,
                    [x4, t4_ignored, w3],
                    {"reduction": red, "ignore_index": 1},
                    opset,
                )
            )
        cases.append(make_case(f"{tag}_int32_target", op, [x2, t2.astype(np.int32), w5], {}, 12))
    cases.append(
        make_case(
            "sce_log_prob",
            "SoftmaxCrossEntropyLoss",
            [x4, t4],
            {"reduction": "mean", "ignore_index": 2},
            13,
            n_outputs=2,
        )
    )
    return cases


SPATIAL_CASES = [*pool_3d_cases()]
_TOP_CASES.extend(SPATIAL_CASES)
_TOP_IDS.extend(c.id for c in SPATIAL_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *SPATIAL_CASES]


def loss_norm_extra_cases() -> list[OpCase]:
    r = rng(107)
    x = randn(r, 2, 3, 4)
    xz = x.copy()
    xz[1, :, 2] = 0.0
    ints = r.integers(-5, 6, size=(3, 4)).astype(np.int64)
    ax = Init(np.array(1, dtype=np.int64))
    cases = [
        make_case("cumprod", "CumProd", [x, ax], {}, 26),
        make_case("cumprod_exclusive_reverse", "CumProd", [x, ax], {"exclusive": 1, "reverse": 1}, 26),
        make_case("cumprod_int64_neg_axis", "CumProd", [ints, Init(np.array(-1, dtype=np.int64))], {}, 26),
        make_case("lpnorm_l2", "LpNormalization", [x], {}, 13),
        make_case("lpnorm_l1_axis1_zero", "LpNormalization", [xz], {"axis": 1, "p": 1}, 13),
        make_case("shrink_hard", "Shrink", [x], {"lambd": 0.5}, 9),
        make_case("shrink_soft", "Shrink", [x], {"lambd": 0.3, "bias": 0.3}, 9),
        make_case("det_2d", "Det", [randn(r, 3, 3)], {}, 11),
        make_case("det_batched", "Det", [randn(r, 2, 3, 4, 4)], {}, 11),
        make_case("eyelike", "EyeLike", [x[0]], {"k": 1}, 9),
        make_case("eyelike_int_dtype", "EyeLike", [ints], {"k": -1, "dtype": TensorProto.FLOAT}, 9, out_types=[F]),
        make_case("compress_axis", "Compress", [x, Init(np.array([True, False, True]))], {"axis": 1}, 11),
        make_case("compress_neg_axis_short", "Compress", [x, Init(np.array([False, True]))], {"axis": -1}, 11),
        make_case("compress_flat", "Compress", [ints, np.array([True, False, False, True, True])], {}, 11),
        make_case(
            "reversesequence_time",
            "ReverseSequence",
            [randn(r, 4, 3, 2), Init(np.array([4, 1, 3], dtype=np.int64))],
            {"time_axis": 0, "batch_axis": 1},
            10,
        ),
        make_case(
            "reversesequence_batch",
            "ReverseSequence",
            [ints, Init(np.array([2, 0, 4], dtype=np.int64))],
            {"time_axis": 1, "batch_axis": 0},
            10,
        ),
        make_case(
            "centercroppad_crop_pad",
            "CenterCropPad",
            [randn(r, 5, 4, 3), i64(3, 7)],
            {"axes": [0, -2]},
            18,
            reference="onnx",
        ),
        make_case("centercroppad_all", "CenterCropPad", [ints, i64(2, 7)], {}, 18, reference="onnx"),
    ]
    for op in ("HannWindow", "HammingWindow", "BlackmanWindow"):
        for periodic in (0, 1):
            cases.append(
                make_case(
                    f"{op.lower()}_p{periodic}",
                    op,
                    [Init(np.array(10, dtype=np.int64))],
                    {"periodic": periodic},
                    17,
                    out_types=[F],
                )
            )
    u = np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4], [1, 0, 0]], dtype=np.float32)
    for sorted_ in (0, 1):
        cases.append(
            make_case(
                f"unique_flat_sorted{sorted_}",
                "Unique",
                [np.array([2, 1, 1, 3, 4, 3], dtype=np.float32)],
                {"sorted": sorted_},
                11,
                out_types=[F, I64, I64, I64],
                n_outputs=4,
            )
        )
        cases.append(
            make_case(
                f"unique_axis0_sorted{sorted_}",
                "Unique",
                [u],
                {"sorted": sorted_, "axis": 0},
                11,
                out_types=[F, I64, I64, I64],
                n_outputs=4,
            )
        )
    cases.append(
        make_case(
            "unique_neg_axis", "Unique", [u.T.copy()], {"axis": -1}, 11, out_types=[F, I64, I64, I64], n_outputs=4
        )
    )
    cases.append(make_case("unique_values_only", "Unique", [np.array([3, 1, 3], dtype=np.float32)], {}, 11))
    return cases


LOSS_CASES = [*loss_cases(), *loss_norm_extra_cases()]
_TOP_CASES.extend(LOSS_CASES)
_TOP_IDS.extend(c.id for c in LOSS_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *LOSS_CASES]


# -- Attention (opset 23): 4-D heads with a causal mask, 3-D with head counts and a bool mask ----
def attention_cases() -> list[OpCase]:
    r = rng(301)
    q4, k4, v4 = randn(r, 2, 3, 4, 8), randn(r, 2, 3, 6, 8), randn(r, 2, 3, 6, 5)
    q3, k3, v3 = randn(r, 2, 4, 12), randn(r, 2, 6, 6), randn(r, 2, 6, 6)
    mask = r.random((4, 6)) > 0.3
    mask[:, 0] = True  # no fully masked row
    return [
        make_case("attention_4d_causal", "Attention", [q4, k4, v4], {"is_causal": 1}, 23),
        make_case("attention_4d_scale_softcap", "Attention", [q4, k4, v4], {"scale": 0.2, "softcap": 3.0}, 23),
        make_case(
            "attention_3d_gqa_bool_mask",
            "Attention",
            [q3, k3, v3, mask],
            {"q_num_heads": 4, "kv_num_heads": 2},
            23,
        ),
    ]


ATTENTION_CASES = attention_cases()
_TOP_CASES.extend(ATTENTION_CASES)
_TOP_IDS.extend(c.id for c in ATTENTION_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *ATTENTION_CASES]


# -- Element types: BitCast (opset 26), uint16/uint32/uint64 arithmetic and Clip on int16 ----------
def element_type_cases() -> list[OpCase]:
    r = rng(401)
    u32 = r.integers(0, 2**32, (3, 4), dtype=np.uint32)
    u64 = r.integers(2**63, 2**64 - 1, (2, 3), dtype=np.uint64, endpoint=True)
    u, f, i = TensorProto.UINT32, TensorProto.FLOAT, TensorProto.INT64
    return [
        make_case("bitcast_float32_to_uint32", "BitCast", [randn(r, 2, 3)], {"to": u}, 26, [u]),
        make_case("bitcast_uint32_to_float32", "BitCast", [u32 & 0x3FFFFFFF], {"to": f}, 26, [f]),
        make_case("bitcast_uint64_to_int64", "BitCast", [u64], {"to": i}, 26, [i]),
        make_case("sub_uint64_wraps", "Sub", [u64[:1], u64], opset=14),
        make_case("div_uint32", "Div", [u32, np.maximum(u32[::-1], 1)], opset=14),
        make_case(
            "clip_int64_bounds",
            "Clip",
            [r.integers(-(2**62), 2**62, (5,)), np.array(-(2**60)), np.array(2**55 + 1)],
            opset=13,
        ),
    ]


ELEMENT_TYPE_CASES = element_type_cases()
_TOP_CASES.extend(ELEMENT_TYPE_CASES)
_TOP_IDS.extend(c.id for c in ELEMENT_TYPE_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *ELEMENT_TYPE_CASES]


# -- Detection, dynamically quantized models and the op tail ------------------------------------
def misc_cases() -> list[OpCase]:
    r = rng(401)
    U8, I32 = TensorProto.UINT8, TensorProto.INT32
    cases = []

    def boxes(n_batch: int, n: int) -> np.ndarray:
        xy = r.random((n_batch, n, 2)).astype(np.float32) * 8
        wh = r.random((n_batch, n, 2)).astype(np.float32) * 4 + 0.5
        return np.concatenate([xy, xy + wh], axis=-1)  # [y1, x1, y2, x2]

    b = boxes(2, 12)
    s = r.random((2, 3, 12)).astype(np.float32)
    for cid, ins, attrs in (
        ("nms_two_batches_three_classes", [b, s, i64(4), Init(np.array([0.3], np.float32))], {}),
        (
            "nms_score_threshold",
            [b, s, i64(12), Init(np.array([0.5], np.float32)), Init(np.array([0.4], np.float32))],
            {},
        ),
        ("nms_flipped_corners", [b[..., [2, 3, 0, 1]].copy(), s, i64(3), Init(np.array([0.2], np.float32))], {}),
        ("nms_center_point_box", [b, s, i64(5), Init(np.array([0.25], np.float32))], {"center_point_box": 1}),
        ("nms_no_max_output", [b, s], {}),
        ("nms_zero_iou", [b, s, i64(6), Init(np.array([0.0], np.float32))], {}),
    ):
        cases.append(make_case(cid, "NonMaxSuppression", ins, attrs, 11, out_types=[I64]))

    x = randn(r, 3, 4, 5)
    cases.append(
        make_case("dynamicquantizelinear_3d", "DynamicQuantizeLinear", [x], {}, 11, out_types=[U8, F, U8], n_outputs=3)
    )
    cases.append(
        make_case(
            "dynamicquantizelinear_positive",
            "DynamicQuantizeLinear",
            [np.abs(x) + 0.5],
            {},
            11,
            out_types=[U8, F, U8],
            n_outputs=3,
        )
    )
    a_u8 = r.integers(0, 256, (2, 3, 7), dtype=np.uint8)
    b_u8 = r.integers(0, 256, (7, 5), dtype=np.uint8)
    # int8 weights within 7 bits: onnxruntime's uint8 x int8 kernel on AVX2 adds products in
    # pairs saturated to int16 (vpmaddubsw), so only such operands have its exact products.
    b_i8 = r.integers(-58, 59, (7, 5), dtype=np.int8)
    cases += [
        make_case("matmulinteger_u8_no_zero_points", "MatMulInteger", [a_u8, Init(b_u8)], {}, 10, out_types=[I32]),
        make_case(
            "matmulinteger_u8_zero_points",
            "MatMulInteger",
            [a_u8, Init(b_u8), np.array(131, np.uint8), Init(np.array(7, np.uint8))],
            {},
            10,
            out_types=[I32],
        ),
        make_case(
            "matmulinteger_u8_s8_per_column",
            "MatMulInteger",
            [a_u8, Init(b_i8), np.array(120, np.uint8), Init(r.integers(-5, 5, 5, dtype=np.int8))],
            {},
            10,
            out_types=[I32],
        ),
        make_case(
            "matmulinteger_s8_s8_2d",
            "MatMulInteger",
            [
                r.integers(-128, 128, (4, 7), dtype=np.int8),
                Init(b_i8),
                np.array(-3, np.int8),
                Init(np.array(2, np.int8)),
            ],
            {},
            10,
            out_types=[I32],
        ),
    ]
    x_u8 = r.integers(0, 256, (2, 4, 7, 6), dtype=np.uint8)
    w_u8 = r.integers(0, 256, (6, 2, 3, 3), dtype=np.uint8)
    cases += [
        make_case(
            "convinteger_pads_strides",
            "ConvInteger",
            [x_u8, Init(w_u8), np.array(128, np.uint8), Init(np.array(120, np.uint8))],
            {"pads": [1, 0, 1, 2], "strides": [2, 1], "group": 2},
            10,
            out_types=[I32],
        ),
        make_case(
            "convinteger_dilations_no_zero_points",
            "ConvInteger",
            [x_u8, Init(w_u8[:, :, :2, :2].copy())],
            {"dilations": [2, 2], "group": 2},
            10,
            out_types=[I32],
        ),
        make_case(
            "convinteger_1d_auto_pad",
            "ConvInteger",
            [x_u8[:, :, 0], Init(w_u8[:, :, 0]), np.array(3, np.uint8)],
            {"auto_pad": "SAME_UPPER", "group": 2},
            10,
            out_types=[I32],
        ),
    ]
    tokens = r.integers(0, 6, (3, 9)).astype(np.int32)
    pool = [1, 2, 4, 1, 2, 2, 3, 5, 0, 4, 4]  # unigrams 1, 2, 4; bigrams (1,2) (2,3) (5,0) (4,4)
    tf_attrs = {
        "min_gram_length": 1,
        "max_gram_length": 2,
        "max_skip_count": 2,
        "ngram_counts": [0, 3],
        "ngram_indexes": [0, 1, 2, 3, 4, 5, 6],
        "pool_int64s": pool,
    }
    weights = [0.5, 1.5, 2.0, 1.0, 3.0, 0.25, 2.5]
    for mode in ("TF", "IDF", "TFIDF"):
        cases.append(
            make_case(f"tfidf_{mode.lower()}_batch", "TfIdfVectorizer", [tokens], {**tf_attrs, "mode": mode}, 9, [F])
        )
        cases.append(
            make_case(
                f"tfidf_{mode.lower()}_weights_1d",
                "TfIdfVectorizer",
                [tokens[0].astype(np.int64)],
                {**tf_attrs, "mode": mode, "weights": weights, "min_gram_length": 2},
                9,
                [F],
            )
        )
    b8 = TensorProto.BOOL
    xd = randn(r, 2, 3, 4)
    cases += [
        make_case("dropout_mask", "Dropout", [xd], {}, 13, out_types=[F, b8], n_outputs=2),
        make_case(
            "dropout_training_zero_ratio_mask",
            "Dropout",
            [xd, Init(np.array(0.0, np.float32)), Init(np.array(True))],
            {"seed": 3},
            13,
            out_types=[F, b8],
            n_outputs=2,
        ),
        make_case(
            "dropout_mask_ratio_opset12",
            "Dropout",
            [xd, Init(np.array(0.3, np.float32))],
            {},
            12,
            out_types=[F, b8],
            n_outputs=2,
        ),
    ]
    xp = randn(r, 2, 3, 7, 8)
    for cid, xin, attrs in (
        ("2d_pads_strides", xp, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
        ("2d_column_major", xp, {"kernel_shape": [2, 3], "strides": [1, 2], "storage_order": 1}),
        ("2d_dilations_ceil", xp, {"kernel_shape": [2, 2], "dilations": [2, 1], "ceil_mode": 1, "strides": [2, 2]}),
        ("1d", xp[:, :, 0], {"kernel_shape": [3], "pads": [1, 0]}),
        ("3d", randn(r, 1, 2, 4, 5, 6), {"kernel_shape": [2, 2, 3], "strides": [2, 1, 2]}),
        ("2d_ties", np.round(xp), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}),
    ):
        cases.append(make_case(f"maxpool_indices_{cid}", "MaxPool", [xin], attrs, 12, out_types=[F, I64], n_outputs=2))
    xb = randn(r, 4, 3, 5, 2)
    stats = [Init(randn(r, 3)), Init(randn(r, 3)), Init(randn(r, 3)), Init(np.abs(randn(r, 3)) + 0.5)]
    cases += [
        make_case(
            "batchnorm_training_running_stats",
            "BatchNormalization",
            [xb, *stats],
            {"training_mode": 1, "momentum": 0.7, "epsilon": 1e-3},
            15,
            n_outputs=3,
            rtol=1e-3,
        ),
        make_case(
            "batchnorm_training_3d", "BatchNormalization", [xb[:, :, 0], *stats], {"training_mode": 1}, 15, n_outputs=3
        ),
    ]
    cache = randn(r, 2, 3, 6, 4)
    upd = randn(r, 2, 3, 2, 4)
    cases += [
        make_case("tensorscatter_linear", "TensorScatter", [cache, upd, Init(np.array([1, 4], np.int64))], {}, 24),
        make_case(
            "tensorscatter_circular",
            "TensorScatter",
            [cache, upd, np.array([5, 2], np.int64)],
            {"mode": "circular"},
            24,
        ),
        make_case("tensorscatter_no_indices_axis1", "TensorScatter", [cache, cache[:, :2].copy()], {"axis": 1}, 24),
        make_case(
            "tensorscatter_int64",
            "TensorScatter",
            [np.arange(24, dtype=np.int64).reshape(2, 4, 3), np.full((2, 1, 3), -1, np.int64)],
            {"axis": 1},
            24,
        ),
    ]
    i32 = np.int32
    cases.append(
        make_case(
            "melweightmatrix",
            "MelWeightMatrix",
            [
                Init(np.array(8, i32)),
                Init(np.array(64, i32)),
                Init(np.array(16000, i32)),
                Init(np.array(60.0, np.float32)),
                Init(np.array(7000.0, np.float32)),
            ],
            {},
            17,
            out_types=[F],
        )
    )
    cases.append(
        make_case(
            "melweightmatrix_fed",
            "MelWeightMatrix",
            [
                np.array(5, np.int64),
                np.array(31, np.int64),
                np.array(8000, np.int64),
                np.array(0.0, np.float32),
                np.array(3500.0, np.float32),
            ],
            {},
            17,
            out_types=[F],
        )
    )
    xc = randn(r, 2, 3, 7)
    wc = Init(randn(r, 3, 1, 4))
    cases += [
        make_case("causalconv_basic", "CausalConvWithState", [xc, wc], {}, 27, n_outputs=2),
        make_case(
            "causalconv_bias_past_silu",
            "CausalConvWithState",
            [xc, wc, Init(randn(r, 3)), randn(r, 2, 3, 3)],
            {"activation": "silu"},
            27,
            n_outputs=2,
        ),
        make_case(
            "causalconv_decode_step_swish",
            "CausalConvWithState",
            [xc[:, :, :1].copy(), wc, None, randn(r, 2, 3, 3)],
            {"activation": "swish"},
            27,
            n_outputs=2,
        ),
        make_case("causalconv_kernel_one", "CausalConvWithState", [xc, Init(randn(r, 3, 1, 1))], {}, 27, n_outputs=2),
    ]
    b_, t_, hq, hk, dk, dv = 2, 5, 4, 2, 3, 4
    q, k, v = randn(r, b_, t_, hq * dk), randn(r, b_, t_, hk * dk), randn(r, b_, t_, hk * dv)
    k = k / np.linalg.norm(k.reshape(b_, t_, hk, dk), axis=-1).repeat(dk, axis=-1).reshape(k.shape)
    past = randn(r, b_, hk, dk, dv, scale=0.3)
    decay_head = -np.abs(randn(r, b_, t_, hk))
    decay_key = -np.abs(randn(r, b_, t_, hk * dk))
    beta_head = (1 / (1 + np.exp(-randn(r, b_, t_, hk)))).astype(np.float32)
    beta_one = (1 / (1 + np.exp(-randn(r, b_, t_, 1)))).astype(np.float32)
    heads = {"q_num_heads": hq, "kv_num_heads": hk}
    for cid, ins, attrs in (
        ("linear", [q, k, v], {"update_rule": "linear"}),
        ("gated_per_key_past", [q, k, v, past, decay_key], {"update_rule": "gated"}),
        ("delta_beta_one", [q, k, v, None, None, beta_one], {"update_rule": "delta"}),
        ("gated_delta_gqa", [q, k, v, None, decay_head, beta_head], {}),
        ("gated_delta_past_scale", [q, k, v, past, decay_head, beta_one], {"scale": 0.4}),
        (
            "gated_delta_mqa_decode",
            [q[:, :1], k[:, :1, :dk], v[:, :1, :dv], past[:, :1], decay_head[:, :1, :1], beta_one[:, :1]],
            {"kv_num_heads": 1},
        ),
    ):
        cases.append(
            make_case(f"linearattention_{cid}", "LinearAttention", ins, {**heads, **attrs}, 27, n_outputs=2, rtol=1e-4)
        )
    return cases


MISC_CASES = misc_cases()
_TOP_CASES.extend(MISC_CASES)
_TOP_IDS.extend(c.id for c in MISC_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *MISC_CASES]


def test_dropout_mask_before_opset_12_is_refused() -> None:
    """In opsets 10 and 11 onnxruntime writes Dropout's mask all false, the ONNX definition all
    true: the engine does not produce it there."""
    x = np.ones((2, 3), np.float32)
    case = make_case("dropout_mask_opset10", "Dropout", [x], {}, 10, out_types=[F, TensorProto.BOOL], n_outputs=2)
    with pytest.raises(oxiquant.UnsupportedOpError, match="Dropout"):
        oxiquant.load(case.model)


# -- Sampling and geometry: GridSample, AffineGrid, Col2Im, DeformConv, RotaryEmbedding,
# MaxUnpool, Swish, MeanVarianceNormalization, Pad wrap ------------------------------------------
def _grid(r: np.random.Generator, *shape: int, reach: float = 1.3) -> np.ndarray:
    """Normalized sampling points, some outside [-1, 1] (where the padding modes differ)."""
    return r.uniform(-reach, reach, size=shape).astype(np.float32)


def geo_cases() -> list[OpCase]:
    r = rng(2201)
    cases = []
    x4, g4 = randn(r, 2, 3, 5, 6), _grid(r, 2, 4, 7, 2)
    for mode in ("linear", "nearest", "cubic"):
        for pad in ("zeros", "border", "reflection"):
            for align in (0, 1):
                attrs = {"mode": mode, "padding_mode": pad, "align_corners": align}
                cases.append(make_case(f"gridsample_{mode}_{pad}_a{align}", "GridSample", [x4, g4], attrs, 20))
    for mode in ("bilinear", "bicubic", "nearest"):
        attrs = {"mode": mode, "padding_mode": "reflection"}
        cases.append(make_case(f"gridsample16_{mode}", "GridSample", [x4, g4], attrs, 16))
    x5, g5 = randn(r, 1, 2, 3, 4, 5), _grid(r, 1, 2, 3, 4, 3)
    for mode in ("linear", "nearest"):
        for pad in ("zeros", "border", "reflection"):
            attrs = {"mode": mode, "padding_mode": pad, "align_corners": int(pad == "border")}
            cases.append(make_case(f"gridsample_3d_{mode}_{pad}", "GridSample", [x5, g5], attrs, 20))
    # The grid a constant (an affine warp of an image).
    cases.append(make_case("gridsample_const_grid", "GridSample", [x4, Init(g4)], {"mode": "linear"}, 22))
    for align in (0, 1):
        cases.append(
            make_case(
                f"affinegrid_2d_a{align}",
                "AffineGrid",
                [randn(r, 2, 2, 3), i64(2, 3, 4, 5)],
                {"align_corners": align},
                20,
            )
        )
        cases.append(
            make_case(
                f"affinegrid_3d_a{align}",
                "AffineGrid",
                [randn(r, 2, 3, 4), i64(2, 1, 3, 4, 5)],
                {"align_corners": align},
                20,
            )
        )
    for cid, image, block, attrs in [
        ("col2im_plain", (5, 5), (2, 2), {}),
        ("col2im_strided_padded", (6, 7), (3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
        ("col2im_dilated", (7, 6), (2, 3), {"dilations": [2, 1], "strides": [1, 2]}),
        ("col2im_1d", (9,), (3,), {"strides": [2]}),
        ("col2im_3d", (3, 4, 3), (2, 2, 1), {}),
    ]:
        st, dil = attrs.get("strides", [1] * len(image)), attrs.get("dilations", [1] * len(image))
        pads = attrs.get("pads", [0] * 2 * len(image))
        n_blocks = int(
            np.prod(
                [
                    (image[d] + pads[d] + pads[d + len(image)] - dil[d] * (block[d] - 1) - 1) // st[d] + 1
                    for d in range(len(image))
                ]
            )
        )
        x = randn(r, 2, 3 * int(np.prod(block)), n_blocks)
        cases.append(make_case(cid, "Col2Im", [x, i64(*image), i64(*block)], attrs, 18))
    for cid, attrs, offset_scale, extras in [
        ("deformconv_plain", {}, 1.5, False),
        ("deformconv_mask_bias", {}, 2.5, True),
        ("deformconv_groups", {"group": 2, "offset_group": 2}, 1.0, True),
        ("deformconv_strided", {"strides": [2, 1], "pads": [1, 1, 1, 0], "dilations": [1, 2]}, 2.0, False),
    ]:
        g, og = attrs.get("group", 1), attrs.get("offset_group", 1)
        st, dil = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
        pads = attrs.get("pads", [0, 0, 0, 0])
        x, w = randn(r, 2, 4, 6, 5), randn(r, 4, 4 // g, 3, 2)
        oh = (6 + pads[0] + pads[2] - dil[0] * 2 - 1) // st[0] + 1
        ow = (5 + pads[1] + pads[3] - dil[1] * 1 - 1) // st[1] + 1
        off = randn(r, 2, og * 2 * 6, oh, ow, scale=offset_scale)
        inputs = [x, Init(w), off]
        if extras:
            inputs += [Init(randn(r, 4)), r.uniform(0, 1, size=(2, og * 6, oh, ow)).astype(np.float32)]
        cases.append(make_case(cid, "DeformConv", inputs, attrs, 19))
    # RotaryEmbedding: caches of angles as a model computes them.
    b, heads, seq, head = 2, 3, 5, 8

    def caches(rows: int, half: int) -> tuple[np.ndarray, np.ndarray]:
        ang = r.uniform(0, 6.3, size=(rows, half)).astype(np.float32)
        return np.cos(ang), np.sin(ang)

    pos = r.integers(0, 12, size=(b, seq)).astype(np.int64)
    for interleaved in (0, 1):
        for rot in (0, 4):
            half = (rot or head) // 2
            attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot}
            cos, sin = caches(12, half)
            cid = f"rotary_4d_pos_i{interleaved}_r{rot}"
            cases.append(make_case(cid, "RotaryEmbedding", [randn(r, b, heads, seq, head), cos, sin, pos], attrs, 23))
            cos3, sin3 = (c.reshape(b, seq, half) for c in caches(b * seq, half))
            attrs3 = {**attrs, "num_heads": heads}
            cid = f"rotary_3d_nopos_i{interleaved}_r{rot}"
            cases.append(make_case(cid, "RotaryEmbedding", [randn(r, b, seq, heads * head), cos3, sin3], attrs3, 23))
    cos, sin = caches(12, head // 2)
    # Caches of head_size / 2 columns with a partial rotary_embedding_dim (the specification
    # allows both widths): the op reads the first dim / 2, as onnxruntime does given only those.
    narrow = make_case(
        "rotary_narrow",
        "RotaryEmbedding",
        [randn(r, b, heads, seq, head), cos[:, :2], sin[:, :2], pos],
        {"rotary_embedding_dim": 4},
        23,
    )

    def on_narrow_caches(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cut = {**feeds, "in1": feeds["in1"][:, :2].copy(), "in2": feeds["in2"][:, :2].copy()}
        return run_reference(narrow.model, cut, "onnxruntime")

    cases.append(
        make_case(
            "rotary_wide_caches",
            "RotaryEmbedding",
            [narrow.feeds["in0"], cos, sin, pos],
            {"rotary_embedding_dim": 4},
            23,
            reference=on_narrow_caches,
        )
    )
    cases.append(
        make_case(
            "rotary_const_caches", "RotaryEmbedding", [randn(r, b, heads, seq, head), Init(cos), Init(sin), pos], {}, 23
        )
    )
    # MaxUnpool of what MaxPool kept: distinct flat indices into the whole output.
    xu = randn(r, 2, 3, 3, 4)
    out_len = 2 * 3 * 6 * 8
    idx = np.sort(r.choice(out_len, size=xu.size, replace=False)).reshape(xu.shape).astype(np.int64)
    cases.append(
        make_case("maxunpool_default_shape", "MaxUnpool", [xu, idx], {"kernel_shape": [2, 2], "strides": [2, 2]}, 11)
    )
    # A larger output_shape: the indices still address the default [2, 3, 6, 8] output, held in
    # its corner (onnx's reference and its node case; onnxruntime scatters into output_shape's
    # own layout instead, so onnx's reference is the one compared here).
    idx2 = r.choice(out_len, size=xu.size, replace=False).reshape(xu.shape).astype(np.int64)
    cases.append(
        make_case(
            "maxunpool_output_shape",
            "MaxUnpool",
            [xu, idx2, i64(2, 3, 7, 9)],
            {"kernel_shape": [2, 2], "strides": [2, 2]},
            11,
            reference="onnx",
        )
    )
    for alpha in (1.0, 0.35):
        cases.append(make_case(f"swish_{alpha}", "Swish", [randn(r, 3, 4, 5, scale=3.0)], {"alpha": alpha}, 24))
    xm = randn(r, 2, 3, 4, 5, scale=2.0) + 1.0
    # (the default axes, [0, 2, 3], are the node case test_mvn: onnx shape inference fails on them here)
    cases.append(make_case("mvn_nchw", "MeanVarianceNormalization", [xm], {"axes": [0, 2, 3]}, 13))
    cases.append(make_case("mvn_axes", "MeanVarianceNormalization", [xm], {"axes": [1, -1]}, 13))
    cases.append(make_case("mvn_opset9", "MeanVarianceNormalization", [xm], {"axes": [2, 3]}, 9))
    xp = randn(r, 2, 3, 4)
    cases.append(make_case("pad_wrap", "Pad", [xp, i64(0, 2, 3, 0, 5, 1)], {"mode": "wrap"}, 19))
    x3 = randn(r, 1, 2, 4, 5, 6)
    cases.append(make_case("lppool_3d", "LpPool", [x3], {"kernel_shape": [2, 2, 2]}, 18))
    attrs = {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [1, 0, 1, 0, 1, 1], "p": 3}
    cases.append(make_case("lppool_3d_strided_padded", "LpPool", [x3], attrs, 18))
    ip = r.integers(-50, 50, size=(3, 4)).astype(np.int32)
    cases.append(make_case("pad_wrap_int32", "Pad", [ip, i64(1, 6, 2, 0)], {"mode": "wrap"}, 21))
    return cases


GEO_CASES = geo_cases()
_TOP_CASES.extend(GEO_CASES)
_TOP_IDS.extend(c.id for c in GEO_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *GEO_CASES]


def _cnn_with_geo_middle(kind: str) -> onnx.ModelProto:
    """small_cnn with `kind` after its first Relu (r1 [N, 4, 8, 8]): GridSample sampling r1 at a
    grid computed from r1 itself (an activation), Swish, or MeanVarianceNormalization."""
    import ptq_graphs

    proto = ptq_graphs.small_cnn(middle="Sigmoid")
    nodes = list(proto.graph.node)
    i = next(k for k, n in enumerate(nodes) if n.name == "middle")
    inits = []
    if kind == "GridSample":
        inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("s0", [0]), ("s1", [2]), ("ax", [1]))]
        new = [
            helper.make_node("Slice", ["r1", "s0", "s1", "ax"], ["two"], name="pick"),
            helper.make_node("Transpose", ["two"], ["grid_raw"], perm=[0, 2, 3, 1], name="to_grid"),
            helper.make_node("Tanh", ["grid_raw"], ["grid"], name="squash"),
            helper.make_node("GridSample", ["r1", "grid"], ["mid"], name="middle", padding_mode="border"),
        ]
    elif kind == "Swish":
        new = [helper.make_node("Swish", ["r1"], ["mid"], name="middle", alpha=0.8)]
    else:
        new = [helper.make_node(kind, ["r1"], ["mid"], name="middle", axes=[2, 3])]
    nodes[i : i + 1] = new
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(inits)
    proto.opset_import[0].version = 24
    return proto


@pytest.mark.parametrize("kind", ["GridSample", "Swish", "MeanVarianceNormalization"])
def test_geo_op_quantizes_as_a_float_island(kind: str) -> None:
    """Sampling and normalization run in float between quantized layers (GridSample reading two
    activations): listed as float nodes, close to onnxruntime's float model, the integer engine
    equal to the fake-quantized run, the QDQ export equal to it in onnxruntime."""
    import ptq_graphs

    proto = _cnn_with_geo_middle(kind)
    x = ptq_graphs.calibration_data(proto, np.random.default_rng(5), n=32)
    ref = run_reference(proto, {"x": x}, "onnxruntime")["y"]
    np.testing.assert_allclose(oxiquant.load(proto).run({"x": x})["y"], ref, rtol=1e-4, atol=1e-5)
    q = oxiquant.quantize_network(oxiquant.load(proto), 8, x, progress=False)
    assert ("middle", kind) in [(n, o) for n, o, _ in q.quant_info["float_nodes"]]
    y = q.run(x)["y"]
    noise = float(np.mean((y.astype(np.float64) - ref) ** 2))
    assert noise == 0 or 10 * np.log10(float(np.mean(ref.astype(np.float64) ** 2)) / noise) > 25
    np.testing.assert_array_equal(q.run(x, mode="int")["y"], q.run(x, mode="fake")["y"])
    qdq = run_reference(q.to_onnx(), {"x": x}, "onnxruntime")["y"]
    np.testing.assert_allclose(qdq, y, rtol=1e-5, atol=1e-6 * np.abs(y).max())


# -- Control flow: one self-contained case each (the thorough ones are in test_control_flow.py) --
def control_flow_cases() -> list[OpCase]:
    r = rng(613)
    F, B, I64 = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT64
    vi = helper.make_tensor_value_info

    def constant_branch(name: str, value: np.ndarray) -> onnx.GraphProto:
        c = helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(value))
        return helper.make_graph([c], name, [], [vi("v", F, list(value.shape))])

    then_b = constant_branch("then", randn(r, 2, 3))
    else_b = constant_branch("else", randn(r, 2, 3))
    # Loop body: (iteration, condition, carried) -> (condition, carried + iteration, scanned).
    loop_body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Cast", ["i"], ["i_f"], to=F),
            helper.make_node("Add", ["acc", "i_f"], ["acc_out"]),
            helper.make_node("Mul", ["acc_out", "acc_out"], ["sq"]),
        ],
        "loop_body",
        [vi("i", I64, []), vi("cond_in", B, []), vi("acc", F, [3])],
        [vi("cond_out", B, []), vi("acc_out", F, [3]), vi("sq", F, [3])],
    )
    # Scan body: a running sum and its tanh per step.
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["s", "x"], ["s_out"]), helper.make_node("Tanh", ["s_out"], ["y"])],
        "scan_body",
        [vi("s", F, [4]), vi("x", F, [4])],
        [vi("s_out", F, [4]), vi("y", F, [4])],
    )
    return [
        make_case("if_true", "If", [np.array(True)], {"then_branch": then_b, "else_branch": else_b}, 13, [F]),
        make_case("if_false", "If", [np.array(False)], {"then_branch": then_b, "else_branch": else_b}, 13, [F]),
        make_case(
            "loop_trip_count",
            "Loop",
            [np.array(4, np.int64), np.array(True), randn(r, 3)],
            {"body": loop_body},
            13,
            [F, F],
            n_outputs=2,
        ),
        make_case(
            "scan_running_sum",
            "Scan",
            [randn(r, 4), randn(r, 5, 4)],
            {"body": scan_body, "num_scan_inputs": 1},
            11,
            [F, F],
            n_outputs=2,
        ),
    ]


CONTROL_FLOW_CASES = control_flow_cases()
_TOP_CASES.extend(CONTROL_FLOW_CASES)
_TOP_IDS.extend(c.id for c in CONTROL_FLOW_CASES)
assert len(_TOP_IDS) == len(set(_TOP_IDS)), "duplicate case ids"
ALL_CASES = [*ALL_CASES, *CONTROL_FLOW_CASES]
