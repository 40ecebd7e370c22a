//! Trilu: keeps the upper (or lower) triangle of the last two axes, from diagonal `k` on,
//! zeroing the rest; any element type.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_min_rank, fact_error, required};
use crate::ops::{attr, input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{Element, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Trilu {
    pub upper: bool,
}

impl FromOnnx for Trilu {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Trilu {
            upper: cx.attrs.int("upper", 1)? != 0,
        })
    }
}

/// Zeroes, in each `rows x cols` matrix of `v`, the elements outside the triangle.
fn mask<T: Element>(v: &[T], rows: usize, cols: usize, upper: bool, k: i64) -> Vec<T> {
    let mut out = v.to_vec();
    if rows == 0 || cols == 0 {
        return out;
    }
    for (e, o) in out.iter_mut().enumerate() {
        let (i, j) = (((e / cols) % rows) as i64, (e % cols) as i64);
        let keep = if upper { j - i >= k } else { j - i <= k };
        if !keep {
            *o = T::zero();
        }
    }
    out
}

impl Op for Trilu {
    fn op_type(&self) -> &'static str {
        "Trilu"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.upper {
            Vec::new()
        } else {
            attr("upper", AttrValue::Int(0))
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let k = match inputs.get(1).copied().flatten() {
            None => 0,
            Some(t) if t.len() == 1 => t.to_i64_vec()?[0],
            Some(t) => {
                return Err(Error::shape(format!(
                    "Trilu: k must be one integer, got {} {:?}",
                    t.dtype(),
                    t.shape()
                )))
            }
        };
        let r = x.rank();
        if r < 2 {
            return Err(Error::shape(format!(
                "Trilu needs an input of rank >= 2, got {:?}",
                x.shape()
            )));
        }
        let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
        let up = self.upper;
        let data = crate::dispatch_data!(x.data(), v => Element::wrap(mask(v, rows, cols, up, k)));
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Trilu", "input")?;
        expect_min_rank("Trilu", x, "input", 2, "of rank >= 2")?;
        if let Some(k) = inputs.get(1).copied().flatten() {
            if k.numel().is_some_and(|n| n != 1) {
                return Err(fact_error("Trilu", format!("k must be one integer, got {k}")));
            }
        }
        Ok(vec![x.clone()])
    }
}
