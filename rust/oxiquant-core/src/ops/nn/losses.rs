//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (the log-softmax of the scores over
//! the class axis 1 followed by the former; its second output is that log-softmax).
//! Input `[N, C, d1, ..., dk]`, target `[N, d1, ..., dk]` of class indices, optional
//! per-class weight `[C]`; reduction `none` (the target's shape), `sum` or `mean` (the sum
//! divided by the sum of the weights taken, a target equal to `ignore_index` taking none).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, expect_min_rank, fact_error, optional, required, unify_dim, DimFact};
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    None,
    Sum,
    Mean,
}

impl Reduction {
    fn name(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    /// SoftmaxCrossEntropyLoss; NegativeLogLikelihoodLoss otherwise.
    pub softmax: bool,
    pub reduction: Reduction,
    pub ignore_index: Option<i64>,
    /// SoftmaxCrossEntropyLoss's second output (the log-softmax) is produced.
    pub log_prob: bool,
}

impl FromOnnx for Loss {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let reduction = match cx.attrs.string("reduction", "mean")?.as_str() {
            "none" => Reduction::None,
            "sum" => Reduction::Sum,
            "mean" => Reduction::Mean,
            other => {
                return Err(cx
                    .attrs
                    .unsupported(format!("reduction '{other}' (expected none, sum or mean)")))
            }
        };
        let softmax = cx.op_type == "SoftmaxCrossEntropyLoss";
        Ok(Loss {
            softmax,
            reduction,
            ignore_index: cx.attrs.int_opt("ignore_index")?,
            log_prob: softmax && cx.outputs > 1,
        })
    }
}

impl Loss {
    fn name(&self) -> &'static str {
        if self.softmax {
            "SoftmaxCrossEntropyLoss"
        } else {
            "NegativeLogLikelihoodLoss"
        }
    }
}

/// `x` with a log-softmax over axis 1 of `[N, C, inner]`.
fn log_softmax_axis1(x: &mut [f32], c: usize, inner: usize) {
    if c == 0 || inner == 0 {
        return;
    }
    for blk in x.chunks_mut(c * inner) {
        for i in 0..inner {
            let mx = (0..c).map(|k| blk[k * inner + i]).fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..c).map(|k| (blk[k * inner + i] - mx).exp()).sum();
            let ls = sum.ln();
            for k in 0..c {
                blk[k * inner + i] = blk[k * inner + i] - mx - ls;
            }
        }
    }
}

impl Op for Loss {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if self.reduction != Reduction::Mean {
            v.push(("reduction".to_string(), AttrValue::String(self.reduction.name().into())));
        }
        if let Some(i) = self.ignore_index {
            v.push(("ignore_index".to_string(), AttrValue::Int(i)));
        }
        v
    }
    fn num_outputs(&self) -> usize {
        if self.log_prob {
            2
        } else {
            1
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = self.name();
        let x = input(inputs, 0, "input")?;
        let t = input(inputs, 1, "target")?;
        let w = inputs.get(2).copied().flatten();
        let s = x.shape().to_vec();
        let target_shape: Vec<usize> = s.first().into_iter().chain(s.iter().skip(2)).copied().collect();
        if s.len() < 2 || t.shape() != target_shape.as_slice() {
            return Err(Error::shape(format!(
                "{op}: input must be [N, C, d...] and target [N, d...], got {:?} and {:?}",
                s,
                t.shape()
            )));
        }
        if !matches!(t.dtype(), DType::I32 | DType::I64) {
            return Err(Error::shape(format!(
                "{op}: target must be int32 or int64, got {}",
                t.dtype()
            )));
        }
        let c = s[1];
        let inner: usize = s[2..].iter().product();
        let weight = match w {
            Some(w) if w.shape() != [c] => {
                return Err(Error::shape(format!(
                    "{op}: weight must be [C] = [{c}], got {:?}",
                    w.shape()
                )))
            }
            Some(w) => Some(w.as_slice::<f32>()?),
            None => None,
        };
        let mut lp = x.clone();
        if self.softmax {
            log_softmax_axis1(lp.as_mut_slice::<f32>()?, c, inner);
        }
        let lpv = lp.as_slice::<f32>()?;
        let tv = t.to_i64_vec()?;
        let mut loss = vec![0f32; tv.len()];
        let (mut total, mut wsum) = (0f64, 0f64);
        for (j, (&k, l)) in tv.iter().zip(loss.iter_mut()).enumerate() {
            if Some(k) == self.ignore_index {
                continue;
            }
            let cls = usize::try_from(k)
                .ok()
                .filter(|&k| k < c)
                .ok_or_else(|| Error::shape(format!("{op}: target value {k} is outside the classes [0, {c})")))?;
            let (n, i) = (j / inner.max(1), j % inner.max(1));
            let wk = weight.map_or(1.0, |w| w[cls]);
            *l = -lpv[(n * c + cls) * inner + i] * wk;
            total += f64::from(*l);
            wsum += f64::from(wk);
        }
        let out = match self.reduction {
            Reduction::None => Tensor::from_vec(target_shape, loss)?,
            Reduction::Sum => Tensor::scalar(total as f32),
            Reduction::Mean => Tensor::scalar((total / wsum) as f32),
        };
        let mut outs = vec![out];
        if self.log_prob {
            outs.push(lp);
        }
        Ok(outs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.name();
        let x = required(inputs, 0, op, "input")?;
        let t = required(inputs, 1, op, "target")?;
        expect_dtype(op, x, "input", &[DType::F32])?;
        expect_dtype(op, t, "target", &[DType::I32, DType::I64])?;
        expect_min_rank(op, x, "input", 2, "[N, C, d...]")?;
        let mut target: Option<Vec<DimFact>> = None;
        match (&x.shape, &t.shape) {
            (Some(xs), Some(ts)) => {
                if ts.len() + 1 != xs.len() {
                    return Err(fact_error(
                        op,
                        format!(
                            "target must be [N, d...] of input {}, got {}",
                            x.shape_string(),
                            t.shape_string()
                        ),
                    ));
                }
                let mut dims = Vec::with_capacity(ts.len());
                for (j, td) in ts.iter().enumerate() {
                    let xd = &xs[if j == 0 { 0 } else { j + 1 }];
                    dims.push(unify_dim(op, xd, td, || {
                        format!("target {} does not fit input {}", t.shape_string(), x.shape_string())
                    })?);
                }
                target = Some(dims);
            }
            (Some(xs), None) => {
                target = Some(
                    xs.iter()
                        .enumerate()
                        .filter(|(j, _)| *j != 1)
                        .map(|(_, d)| d.clone())
                        .collect(),
                );
            }
            (None, Some(ts)) => target = Some(ts.clone()),
            (None, None) => {}
        }
        if let Some(w) = optional(inputs, 2) {
            expect_dtype(op, w, "weight", &[DType::F32])?;
            if let Some(ws) = &w.shape {
                if ws.len() != 1 {
                    return Err(fact_error(op, format!("weight must be [C], got {}", w.shape_string())));
                }
                unify_dim(op, &ws[0], &x.dim(1), || {
                    format!("weight {} does not fit input {}", w.shape_string(), x.shape_string())
                })?;
            }
        }
        let loss_shape = match self.reduction {
            Reduction::None => target,
            _ => Some(Vec::new()),
        };
        let mut out = vec![ValueFact::new(Some(DType::F32), loss_shape)];
        if self.log_prob {
            out.push(ValueFact::new(Some(DType::F32), x.shape.clone()));
        }
        Ok(out)
    }
    fn carries_activation(&self) -> bool {
        // A loss, not an activation of the network.
        false
    }
}
