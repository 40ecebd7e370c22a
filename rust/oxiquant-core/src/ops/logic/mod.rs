//! Comparisons, boolean logic, bit operations and selection: Equal, Less, Greater,
//! LessOrEqual, GreaterOrEqual, And, Or, Xor, Not, Where, IsNaN, IsInf, BitwiseAnd/Or/Xor/Not,
//! BitShift. Their outputs (but Where's) are
//! bool or integers, so they carry no float activation; the broadcasting helpers here serve every
//! element-wise op whose output type differs from its inputs' or that has more than two inputs.

mod bitwise;
mod compare;
mod is_special;
mod logical;
mod where_op;

pub use bitwise::{Bitwise, BitwiseNot};
pub use compare::Compare;
pub use is_special::{IsInf, IsNaN};
pub use logical::{Logical, Not};
pub use where_op::Where;

use crate::error::Result;
use crate::kernels::elementwise::broadcast_shape;
use crate::ops::facts::{broadcast_dims, expect_dtype, fact_error, required, DimFact, ValueFact};
use crate::tensor::{check_alloc, DType, Element, Tensor};

/// The numpy broadcast of several shapes.
pub(crate) fn broadcast_many(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = broadcast_shape(&out, s)?;
    }
    Ok(out)
}

/// The broadcast of several facts (unknown when one rank is).
pub(crate) fn broadcast_facts(op: &str, facts: &[&ValueFact]) -> Result<Option<Vec<DimFact>>> {
    let mut out: Vec<DimFact> = Vec::new();
    for f in facts {
        match &f.shape {
            Some(s) => out = broadcast_dims(op, &out, s)?,
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Facts of a two-operand op whose operands share a dtype among `types`, which the output
/// has too, their shapes broadcast.
pub(crate) fn binary_facts(op: &str, inputs: &[Option<&ValueFact>], types: &[DType]) -> Result<Vec<ValueFact>> {
    let (a, b) = (required(inputs, 0, op, "A")?, required(inputs, 1, op, "B")?);
    expect_dtype(op, a, "A", types)?;
    expect_dtype(op, b, "B", types)?;
    let dtype = match (a.dtype, b.dtype) {
        (Some(x), Some(y)) if x != y => {
            return Err(fact_error(
                op,
                format!("operands must have the same dtype, got {a} and {b}"),
            ))
        }
        (Some(x), _) | (_, Some(x)) => Some(x),
        _ => None,
    };
    Ok(vec![ValueFact::new(dtype, broadcast_facts(op, &[a, b])?)])
}

/// For each element of `out` (row-major), the offset of the element of an input of
/// `shape` it reads under numpy broadcasting.
pub(crate) fn broadcast_offsets(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let n: usize = crate::tensor::numel(out);
    let r = out.len();
    let lead = r - shape.len();
    let st = crate::tensor::strides(shape);
    // The stride of each output axis in the input (0 where broadcast or absent).
    let step: Vec<usize> = (0..r)
        .map(|d| {
            if d < lead || shape[d - lead] == 1 {
                0
            } else {
                st[d - lead]
            }
        })
        .collect();
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(off);
        // Odometer increment from the last axis.
        for d in (0..r).rev() {
            idx[d] += 1;
            off += step[d];
            if idx[d] < out[d] {
                break;
            }
            off -= step[d] * idx[d];
            idx[d] = 0;
        }
    }
    v
}

/// `f(a[i], b[i])` under broadcasting, any element types in and out.
pub(crate) fn map2<T: Copy, U: Element>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    f: impl Fn(T, T) -> U,
) -> Result<Tensor> {
    let shape = broadcast_many(&[sa, sb])?;
    check_alloc(&shape, std::mem::size_of::<U>())?;
    let v: Vec<U> = if sa == sb {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    } else {
        let (oa, ob) = (broadcast_offsets(sa, &shape), broadcast_offsets(sb, &shape));
        oa.iter().zip(&ob).map(|(&i, &j)| f(a[i], b[j])).collect()
    };
    Tensor::from_vec(shape, v)
}

/// Runs `$body` with `$x`, `$y` bound to the typed slices of two tensors of the same dtype;
/// `$other` when the dtypes differ.
macro_rules! same_dtype2 {
    ($a:expr, $b:expr, $x:ident, $y:ident => $body:expr, $other:expr) => {{
        use $crate::tensor::TensorData as D;
        match ($a.data(), $b.data()) {
            (D::F32($x), D::F32($y)) => $body,
            (D::U8($x), D::U8($y)) => $body,
            (D::I8($x), D::I8($y)) => $body,
            (D::I32($x), D::I32($y)) => $body,
            (D::I64($x), D::I64($y)) => $body,
            (D::Bool($x), D::Bool($y)) => $body,
            (D::I16($x), D::I16($y)) => $body,
            (D::U16($x), D::U16($y)) => $body,
            (D::U32($x), D::U32($y)) => $body,
            (D::U64($x), D::U64($y)) => $body,
            _ => $other,
        }
    }};
}
pub(crate) use same_dtype2;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The odometer's offsets against the multi-index computed on its own for each element.
        #[test]
        fn offsets_match_the_multi_index((sa, sb) in crate::ops::math::broadcastable()) {
            let out = broadcast_many(&[&sa, &sb]).unwrap();
            let got = broadcast_offsets(&sa, &out);
            let st = crate::tensor::strides(&out);
            let lead = out.len() - sa.len();
            for (k, &g) in got.iter().enumerate() {
                let idx: Vec<usize> = st.iter().zip(&out).map(|(&s, &d)| (k / s) % d).collect();
                let mut want = 0;
                for (d, &dim) in sa.iter().enumerate() {
                    want = want * dim + if dim == 1 { 0 } else { idx[d + lead] };
                }
                prop_assert_eq!(g, want);
            }
        }
    }
}
