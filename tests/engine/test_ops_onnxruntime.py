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
        make_case("pad_wrap", "Pad", [x, i64(0, 0, 1, 1, 0, 0, 1, 1)], {"mode": "wrap"}, 19),
        make_case("maxpool_3d", "MaxPool", [randn(r, 1, 1, 4, 4, 4)], {"kernel_shape": [2, 2, 2]}, 12),
        make_case("averagepool_3d", "AveragePool", [randn(r, 1, 1, 4, 4, 4)], {"kernel_shape": [2, 2, 2]}, 12),
        make_case(
            "conv_3d",
            "Conv",
            [randn(r, 1, 1, 4, 4, 4), Init(randn(r, 1, 1, 2, 2, 2))],
            {"kernel_shape": [2, 2, 2]},
            11,
        ),
        make_case(
            "batchnorm_training",
            "BatchNormalization",
            [randn(r, 2, 3), *(Init(np.ones(3, np.float32)) for _ in range(4))],
            {"training_mode": 1},
            15,
            n_outputs=3,
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
ALL_CASES.extend(NN_CASES)
_ids.extend(c.id for c in NN_CASES)
assert len(_ids) == len(set(_ids)), "duplicate case ids"
