//! CausalConvWithState (opset 27): a depthwise 1-D convolution over `[B, C, L]` that sees
//! only the current and past positions: the input is prefixed with the carried state
//! `past_state` (`[B, C, k - 1]`, zeros when omitted), each channel convolved with its own
//! kernel (`weight` `[C, 1, k]`) plus its bias, optionally followed by SiLU; the new state is
//! the last `k - 1` positions of the prefixed sequence. Sums in f32 in kernel order, SiLU as
//! `y * sigmoid(y)`. A float island for the PTQ.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct CausalConvWithState {
    /// SiLU (alias Swish) after the convolution.
    pub silu: bool,
    /// How the activation was spelled ("silu" or "swish"), for the export.
    pub name: String,
}

impl FromOnnx for CausalConvWithState {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs.string("activation", "none")?;
        let silu = match a.as_str() {
            "none" => false,
            "silu" | "swish" => true,
            other => {
                return Err(cx
                    .attrs
                    .unsupported(format!("activation '{other}' (none, silu or swish)")))
            }
        };
        Ok(CausalConvWithState { silu, name: a })
    }
}

impl Op for CausalConvWithState {
    fn op_type(&self) -> &'static str {
        "CausalConvWithState"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.silu {
            vec![("activation".into(), AttrValue::String(self.name.clone()))]
        } else {
            Vec::new()
        }
    }
    fn num_outputs(&self) -> usize {
        2
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let w = input(inputs, 1, "weight")?;
        let (xs, ws) = (x.shape(), w.shape());
        if xs.len() != 3 || ws.len() != 3 || ws[0] != xs[1] || ws[1] != 1 || ws[2] == 0 {
            return Err(Error::shape(format!(
                "CausalConvWithState: input must be [B, C, L] and weight [C, 1, k] (k >= 1), got {xs:?} and {ws:?}"
            )));
        }
        let (b, c, l, k) = (xs[0], xs[1], xs[2], ws[2]);
        let bias = match inputs.get(2).copied().flatten() {
            Some(t) if t.len() == c => Some(t.as_slice::<f32>()?),
            Some(t) => {
                return Err(Error::shape(format!(
                    "CausalConvWithState: bias must have {c} values, got shape {:?}",
                    t.shape()
                )))
            }
            None => None,
        };
        let past = match inputs.get(3).copied().flatten() {
            Some(t) if t.shape() == [b, c, k - 1] => Some(t.as_slice::<f32>()?),
            Some(t) => {
                return Err(Error::shape(format!(
                    "CausalConvWithState: past_state must be [{b}, {c}, {}], got {:?}",
                    k - 1,
                    t.shape()
                )))
            }
            None => None,
        };
        let (xv, wv) = (x.as_slice::<f32>()?, w.as_slice::<f32>()?);
        let n = l + k - 1;
        let mut y = vec![0f32; b * c * l];
        let mut state = vec![0f32; b * c * (k - 1)];
        let mut padded = vec![0f32; n];
        for p in 0..b * c {
            let ch = p % c;
            match past {
                Some(s) => padded[..k - 1].copy_from_slice(&s[p * (k - 1)..(p + 1) * (k - 1)]),
                None => padded[..k - 1].fill(0.0),
            }
            padded[k - 1..].copy_from_slice(&xv[p * l..(p + 1) * l]);
            let kern = &wv[ch * k..(ch + 1) * k];
            for t in 0..l {
                let mut acc = 0f32;
                for (j, &wj) in kern.iter().enumerate() {
                    acc += wj * padded[t + j];
                }
                if let Some(bv) = bias {
                    acc += bv[ch];
                }
                if self.silu {
                    acc *= 1.0 / (1.0 + (-acc).exp());
                }
                y[p * l + t] = acc;
            }
            state[p * (k - 1)..(p + 1) * (k - 1)].copy_from_slice(&padded[n - (k - 1)..]);
        }
        Ok(vec![
            Tensor::from_vec(xs.to_vec(), y)?,
            Tensor::from_vec(vec![b, c, k - 1], state)?,
        ])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "CausalConvWithState";
        let x = required(inputs, 0, op, "input")?;
        let w = required(inputs, 1, op, "weight")?;
        expect_dtype(op, x, "input", &[DType::F32])?;
        expect_dtype(op, w, "weight", &[DType::F32])?;
        for f in [Some(x), Some(w)].into_iter().chain([optional(inputs, 3)]).flatten() {
            if f.rank().is_some_and(|r| r != 3) {
                return Err(fact_error(
                    op,
                    format!("input, weight and past_state must be 3-D, got {f}"),
                ));
            }
        }
        for i in [2, 3] {
            if let Some(f) = optional(inputs, i) {
                expect_dtype(op, f, "bias and past_state", &[DType::F32])?;
            }
        }
        let k1 = match w.dim(2) {
            DimFact::Known(0) => return Err(fact_error(op, format!("weight {w} has an empty kernel"))),
            DimFact::Known(k) => DimFact::Known(k - 1),
            _ => DimFact::Unknown,
        };
        let y = ValueFact::new(Some(DType::F32), x.shape.clone());
        let state = ValueFact::new(Some(DType::F32), Some(vec![x.dim(0), x.dim(1), k1]));
        Ok(vec![y, state])
    }
}
