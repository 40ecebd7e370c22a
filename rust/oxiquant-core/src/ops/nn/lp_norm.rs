//! LpNormalization: `x` divided by its L1 or L2 norm along one axis (float32); a zero norm
//! gives zeros.

use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_axis, float_like, required};
use crate::ops::{input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct LpNorm {
    pub axis: i64,
    /// 1 or 2.
    pub p: i64,
}

impl FromOnnx for LpNorm {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let p = cx.attrs.int("p", 2)?;
        if p != 1 && p != 2 {
            return Err(cx.attrs.unsupported(format!("p={p} (only 1 and 2 are defined)")));
        }
        Ok(LpNorm {
            axis: cx.attrs.int("axis", -1)?,
            p,
        })
    }
}

impl Op for LpNorm {
    fn op_type(&self) -> &'static str {
        "LpNormalization"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![
            ("axis".to_string(), AttrValue::Int(self.axis)),
            ("p".to_string(), AttrValue::Int(self.p)),
        ]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let s = x.shape();
        let a = norm_axis(self.axis, s.len())?;
        let (len, inner) = (s[a], s[a + 1..].iter().product::<usize>());
        let mut y = x.clone();
        if len == 0 || inner == 0 {
            return Ok(vec![y]);
        }
        let v = y.as_mut_slice::<f32>()?;
        for blk in v.chunks_mut(len * inner) {
            for i in 0..inner {
                let norm = if self.p == 1 {
                    (0..len).map(|k| f64::from(blk[k * inner + i].abs())).sum::<f64>()
                } else {
                    (0..len)
                        .map(|k| f64::from(blk[k * inner + i]).powi(2))
                        .sum::<f64>()
                        .sqrt()
                };
                for k in 0..len {
                    let e = &mut blk[k * inner + i];
                    *e = if norm == 0.0 {
                        0.0
                    } else {
                        (f64::from(*e) / norm) as f32
                    };
                }
            }
        }
        Ok(vec![y])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        if let Some(r) = required(inputs, 0, "LpNormalization", "input")?.rank() {
            fact_axis("LpNormalization", self.axis, r)?;
        }
        float_like("LpNormalization", inputs, "input")
    }
}
