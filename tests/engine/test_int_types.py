"""int16, uint16, uint32 and uint64: each computes in its own width.

Random arrays over the whole range of each type (uint64 values above 2^63 included) against
references that do not share oxiquant's code: Python integers (exact) wrapped to the type's
width, numpy (which wraps the same way), and onnxruntime for Cast."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto

import oxiquant

from op_models import make_case, run_onnxruntime

WIDE = [np.int16, np.uint16, np.uint32, np.uint64]
ALL_INTS = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)


CODES = {
    np.int8: TensorProto.INT8,
    np.uint8: TensorProto.UINT8,
    np.int16: TensorProto.INT16,
    np.uint16: TensorProto.UINT16,
    np.int32: TensorProto.INT32,
    np.uint32: TensorProto.UINT32,
    np.int64: TensorProto.INT64,
    np.uint64: TensorProto.UINT64,
    np.float32: TensorProto.FLOAT,
}


def mk(*args, opset: int = 18, **kw):
    """One node at opset 18 (Add/Sub/Mul/Div take int16 and the unsigned types from 14)."""
    return make_case(*args, opset=opset, **kw)


def run(case) -> np.ndarray:
    return oxiquant.load(case.model).run(case.feeds)["out0"]


def wrap(values: np.ndarray, dtype) -> np.ndarray:
    """Python integers reduced to `dtype`'s width, two's complement."""
    info = np.iinfo(dtype)
    span = 1 << info.bits

    def one(v: int) -> int:
        v %= span
        return v - span if v > info.max else v

    return np.array([one(int(v)) for v in values.ravel()], dtype=dtype).reshape(values.shape)


def as_python(a: np.ndarray) -> np.ndarray:
    return a.astype(object)


@st.composite
def operand_pair(draw, dtypes=WIDE, nonzero_b=False):
    """Two arrays of one integer type, the second of the first's shape or its last axis (a
    broadcast)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(SHAPES)
    a = draw(hnp.arrays(dtype, shape))
    b_shape = shape if draw(st.booleans()) else shape[-1:]
    b = draw(hnp.arrays(dtype, b_shape))
    if nonzero_b:
        b = np.where(b == 0, np.array(1, dtype=dtype), b)
    return a, b


def trunc_div(p: int, q: int) -> int:
    r = abs(p) // abs(q)
    return -r if (p < 0) != (q < 0) else r


def trunc_rem(p: int, q: int) -> int:
    return p - q * trunc_div(p, q)


ARITH = {
    "Add": lambda p, q: p + q,
    "Sub": lambda p, q: p - q,
    "Mul": lambda p, q: p * q,
    "Div": trunc_div,
}


@given(op=st.sampled_from(sorted(ARITH)), ab=operand_pair(nonzero_b=True))
def test_arithmetic_wraps_in_the_types_width(op, ab) -> None:
    a, b = ab
    got = run(mk("arith", op, [a, b]))
    pa, pb = np.broadcast_arrays(as_python(a), as_python(b))
    want = wrap(np.vectorize(ARITH[op], otypes=[object])(pa, pb), a.dtype)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, want)
    if op != "Div":  # numpy wraps Add/Sub/Mul the same way
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(got, {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](a, b))


@given(fmod=st.sampled_from([0, 1]), ab=operand_pair(nonzero_b=True))
def test_mod_takes_the_divisors_sign_or_the_dividends(fmod, ab) -> None:
    a, b = ab
    got = run(mk("mod", "Mod", [a, b], {"fmod": fmod}))
    pa, pb = np.broadcast_arrays(as_python(a), as_python(b))
    rem = trunc_rem if fmod else (lambda p, q: p % q)  # Python's % takes the divisor's sign
    want = wrap(np.vectorize(rem, otypes=[object])(pa, pb), a.dtype)
    np.testing.assert_array_equal(got, want)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, (np.fmod if fmod else np.mod)(a, b))


@given(
    dtype=st.sampled_from([np.uint8, np.uint16, np.uint32, np.uint64]),
    left=st.booleans(),
    data=st.data(),
)
def test_bitshift_within_the_width(dtype, left, data) -> None:
    bits = np.iinfo(dtype).bits
    shape = data.draw(SHAPES)
    a = data.draw(hnp.arrays(np.dtype(dtype), shape))
    s = data.draw(hnp.arrays(np.dtype(dtype), shape, elements=st.integers(0, bits - 1)))
    got = run(mk("shift", "BitShift", [a, s], {"direction": "LEFT" if left else "RIGHT"}))
    pa, ps = as_python(a), as_python(s)
    want = wrap(pa << ps if left else pa >> ps, dtype)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.left_shift(a, s) if left else np.right_shift(a, s))


BITWISE = {"BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor}


@given(op=st.sampled_from(sorted(BITWISE)), ab=operand_pair())
def test_bitwise_ops(op, ab) -> None:
    a, b = ab
    np.testing.assert_array_equal(run(mk("bits", op, [a, b])), BITWISE[op](a, b))
    np.testing.assert_array_equal(run(mk("not", "BitwiseNot", [a])), np.invert(a))


COMPARE = {
    "Equal": np.equal,
    "Less": np.less,
    "Greater": np.greater,
    "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal,
    "Min": np.minimum,
    "Max": np.maximum,
}


@given(op=st.sampled_from(sorted(COMPARE)), ab=operand_pair())
def test_comparisons_and_min_max_are_exact(op, ab) -> None:
    """uint64 above 2^63 and neighbours that float64 would merge compare exactly."""
    a, b = ab
    got = run(mk("cmp", op, [a, b], out_types=[TensorProto.BOOL] if op not in ("Min", "Max") else None))
    np.testing.assert_array_equal(got, COMPARE[op](a, b))


def test_uint64_neighbours_above_2_63() -> None:
    """Values float64 cannot tell apart, which a computation widened through it would merge."""
    a = np.array([2**64 - 1, 2**63 + 1, 2**63, 2**53 + 1], dtype=np.uint64)
    b = np.array([2**64 - 2, 2**63, 2**63 + 1, 2**53], dtype=np.uint64)
    np.testing.assert_array_equal(run(mk("gt", "Greater", [a, b], out_types=[TensorProto.BOOL])), a > b)
    np.testing.assert_array_equal(run(mk("sub", "Sub", [a, b])), a - b)
    np.testing.assert_array_equal(run(mk("div", "Div", [a, np.full(4, 3, np.uint64)])), a // 3)


@given(
    src=st.sampled_from(ALL_INTS),
    dst=st.sampled_from(ALL_INTS),
    data=st.data(),
)
def test_integer_casts_wrap_like_numpy_and_onnxruntime(src, dst, data) -> None:
    if src not in WIDE and dst not in WIDE:
        dst = WIDE[ALL_INTS.index(src) % 4]
    a = data.draw(hnp.arrays(np.dtype(src), data.draw(SHAPES)))
    to = CODES[dst]
    case = mk("cast", "Cast", [a], {"to": to}, out_types=[to])
    got = run(case)
    assert got.dtype == np.dtype(dst)
    np.testing.assert_array_equal(got, a.astype(dst))
    np.testing.assert_array_equal(got, run_onnxruntime(case.model, case.feeds)["out0"])


@given(dst=st.sampled_from(WIDE), data=st.data())
def test_float_to_int_casts_truncate_toward_zero(dst, data) -> None:
    """Within the target's range (outside it ONNX leaves the result undefined)."""
    info = np.iinfo(dst)
    # float32 bounds, exact: the largest float32 below the type's max + 1, and its min.
    hi = float(np.nextafter(np.float32(min(info.max + 1, 2**60)), np.float32(0)))
    lo = float(np.float32(max(info.min, -(2**60))))
    x = data.draw(hnp.arrays(np.float32, data.draw(SHAPES), elements=st.floats(lo, hi, width=32, allow_nan=False)))
    case = mk("cast", "Cast", [x], {"to": CODES[dst]}, out_types=[CODES[dst]])
    got = run(case)
    np.testing.assert_array_equal(got, np.trunc(x.astype(np.float64)).astype(dst))
    np.testing.assert_array_equal(got, run_onnxruntime(case.model, case.feeds)["out0"])


@given(src=st.sampled_from(WIDE), data=st.data())
def test_int_to_float_casts_round_to_nearest(src, data) -> None:
    a = data.draw(hnp.arrays(np.dtype(src), data.draw(SHAPES)))
    case = mk("cast", "Cast", [a], {"to": TensorProto.FLOAT}, out_types=[TensorProto.FLOAT])
    got = run(case)
    np.testing.assert_array_equal(got, a.astype(np.float32))
    np.testing.assert_array_equal(got, run_onnxruntime(case.model, case.feeds)["out0"])


SAME_WIDTH = {
    np.int16: [np.uint16],
    np.uint16: [np.int16],
    np.uint32: [np.int32, np.float32],
    np.uint64: [np.int64],
}


@given(src=st.sampled_from(WIDE), data=st.data())
def test_bitcast_is_numpy_view(src, data) -> None:
    dst = data.draw(st.sampled_from(SAME_WIDTH[src]))
    a = data.draw(hnp.arrays(np.dtype(src), data.draw(SHAPES)))
    got = run(mk("bitcast", "BitCast", [a], {"to": CODES[dst]}, opset=26, out_types=[CODES[dst]]))
    np.testing.assert_array_equal(got.view(src), a)
    assert got.dtype == np.dtype(dst)


def test_bitcast_refuses_another_width() -> None:
    a = np.arange(4, dtype=np.uint16)
    case = mk("bitcast", "BitCast", [a], {"to": TensorProto.INT16}, opset=26, out_types=[TensorProto.INT16])
    case.model.graph.node[0].attribute[0].i = TensorProto.UINT32
    case.model.graph.output[0].type.tensor_type.elem_type = TensorProto.UINT32
    with pytest.raises(oxiquant.OxiquantError, match="widths must match"):
        oxiquant.load(case.model).run(case.feeds)


@pytest.mark.parametrize("dtype", WIDE)
def test_data_movement_keeps_every_bit(dtype) -> None:
    """Transpose, Concat, Gather, Slice, Where, Expand, Pad on the extremes of each type."""
    info = np.iinfo(dtype)
    a = np.array([[info.max, info.min, info.max - 1], [1, info.max // 3 + 7, 0]], dtype=dtype)
    cond = np.array([[True, False, True]])
    cases = [
        (mk("t", "Transpose", [a]), a.T),
        (mk("c", "Concat", [a, a[::-1].copy()], {"axis": 0}), np.concatenate([a, a[::-1]])),
        (mk("g", "Gather", [a, np.array([2, 0], np.int64)], {"axis": 1}), a[:, [2, 0]]),
        (
            mk("s", "Slice", [a, np.array([1], np.int64), np.array([3], np.int64), np.array([1], np.int64)]),
            a[:, 1:3],
        ),
        (mk("w", "Where", [cond, a, a[::-1].copy()], out_types=[CODES[dtype]]), np.where(cond, a, a[::-1])),
        (mk("e", "Expand", [a[:1], np.array([3, 3], np.int64)]), np.broadcast_to(a[:1], (3, 3))),
        (
            mk("p", "Pad", [a, np.array([0, 1, 0, 1], np.int64), np.array(info.max, dtype)]),
            np.pad(a, ((0, 0), (1, 1)), constant_values=info.max) if info.bits < 64 else None,
        ),
    ]
    for case, want in cases:
        if want is None:  # Pad's constant goes through float64: exact to 2^53 only
            continue
        got = run(case)
        assert got.dtype == np.dtype(dtype), case.id
        np.testing.assert_array_equal(got, want, err_msg=case.id)
        try:
            ort = run_onnxruntime(case.model, case.feeds)["out0"]
        except Exception as e:  # onnxruntime lacks e.g. Where on uint16: numpy alone then
            assert "NOT_IMPLEMENTED" in str(e), e
            continue
        np.testing.assert_array_equal(got, ort, err_msg=case.id)


@given(dtype=st.sampled_from(ALL_INTS), bounds=st.sampled_from(["both", "min", "max"]), data=st.data())
def test_clip_on_integers_is_exact(dtype, bounds, data) -> None:
    """Bounds of the input's type, compared in it (min > max gives max, as onnxruntime)."""
    a = data.draw(hnp.arrays(np.dtype(dtype), data.draw(SHAPES)))
    lo, hi = (np.array(data.draw(hnp.from_dtype(np.dtype(dtype))), dtype=dtype) for _ in range(2))
    inputs = [a, lo if bounds != "max" else None, hi if bounds != "min" else None]
    got = run(mk("clip", "Clip", inputs, opset=13))
    want = a
    if bounds != "max":
        want = np.maximum(want, lo)
    if bounds != "min":
        want = np.minimum(want, hi)
    np.testing.assert_array_equal(got, want)
