//! ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
//! ReduceLogSumExp and ReduceSumSquare: axes as an attribute (before opset 18, ReduceSum
//! before 13) or as an input, `keepdims`, `noop_with_empty_axes`.

use super::{axes_set, for_each_reduced};
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, in_op, optional, required};
use crate::ops::{input, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl ReduceKind {
    fn from_op(op: &str) -> Option<ReduceKind> {
        Some(match op {
            "ReduceMean" => ReduceKind::Mean,
            "ReduceSum" => ReduceKind::Sum,
            "ReduceMax" => ReduceKind::Max,
            "ReduceMin" => ReduceKind::Min,
            "ReduceProd" => ReduceKind::Prod,
            "ReduceL1" => ReduceKind::L1,
            "ReduceL2" => ReduceKind::L2,
            "ReduceLogSum" => ReduceKind::LogSum,
            "ReduceLogSumExp" => ReduceKind::LogSumExp,
            "ReduceSumSquare" => ReduceKind::SumSquare,
            _ => return None,
        })
    }
    pub fn op_type(self) -> &'static str {
        match self {
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
            ReduceKind::SumSquare => "ReduceSumSquare",
        }
    }
    /// The first opset taking the axes as an input.
    fn axes_input_since(self) -> i64 {
        if self == ReduceKind::Sum {
            13
        } else {
            18
        }
    }
    /// The element types it is computed in.
    fn dtypes(self) -> &'static [DType] {
        match self {
            ReduceKind::Max | ReduceKind::Min => {
                &[DType::F32, DType::I32, DType::I64, DType::U8, DType::I8, DType::Bool]
            }
            ReduceKind::Sum | ReduceKind::Prod | ReduceKind::SumSquare | ReduceKind::L1 | ReduceKind::Mean => {
                &[DType::F32, DType::I32, DType::I64]
            }
            _ => &[DType::F32],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reduce {
    pub kind: ReduceKind,
    /// The axes attribute (opsets before the input form); `None`: all axes.
    pub axes: Option<Vec<i64>>,
    /// The axes come as the second input.
    pub axes_input: bool,
    pub keepdims: bool,
    pub noop_with_empty_axes: bool,
}

impl FromOnnx for Reduce {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let kind = ReduceKind::from_op(cx.op_type)
            .ok_or_else(|| cx.attrs.unsupported(format!("{} is not a reduction", cx.op_type)))?;
        let axes_input = cx.opset >= kind.axes_input_since();
        Ok(Reduce {
            kind,
            axes: if axes_input { None } else { cx.attrs.ints_opt("axes")? },
            axes_input,
            keepdims: cx.attrs.int("keepdims", 1)? != 0,
            noop_with_empty_axes: axes_input && cx.attrs.int("noop_with_empty_axes", 0)? != 0,
        })
    }
}

/// The reduced values of `v` (a tensor of `shape`, reduced along `mask`) into `n_out`
/// outputs, in f64.
fn reduce_f64(kind: ReduceKind, v: &[f64], shape: &[usize], mask: &[bool], n_out: usize) -> Vec<f64> {
    use ReduceKind::*;
    let init = match kind {
        Max | LogSumExp => f64::NEG_INFINITY,
        Min => f64::INFINITY,
        Prod => 1.0,
        _ => 0.0,
    };
    let mut acc = vec![init; n_out];
    let mut count = vec![0usize; n_out];
    match kind {
        Max | Min => {
            // The first element seeds, a later one replaces it only when it compares better
            // (a NaN met later is skipped, one met first stays), as onnxruntime's loops do.
            for_each_reduced(shape, mask, |i, o| {
                let x = v[i];
                if count[o] == 0 || (kind == Max && x > acc[o]) || (kind == Min && x < acc[o]) {
                    acc[o] = x;
                }
                count[o] += 1;
            });
        }
        LogSumExp => {
            for_each_reduced(shape, mask, |i, o| {
                if v[i] > acc[o] || v[i].is_nan() {
                    acc[o] = v[i];
                }
            });
            let mx = acc.clone();
            let mut sum = vec![0f64; n_out];
            for_each_reduced(shape, mask, |i, o| {
                let m = if mx[o].is_finite() { mx[o] } else { 0.0 };
                sum[o] += (v[i] - m).exp();
            });
            for o in 0..n_out {
                let m = if mx[o].is_finite() { mx[o] } else { 0.0 };
                acc[o] = sum[o].ln() + m;
            }
        }
        _ => {
            for_each_reduced(shape, mask, |i, o| {
                let x = v[i];
                count[o] += 1;
                acc[o] = match kind {
                    Prod => acc[o] * x,
                    L1 => acc[o] + x.abs(),
                    L2 | SumSquare => acc[o] + x * x,
                    _ => acc[o] + x,
                };
            });
            for o in 0..n_out {
                acc[o] = match kind {
                    // The mean of nothing is 0, as onnxruntime gives it.
                    Mean if count[o] == 0 => 0.0,
                    Mean => acc[o] / count[o] as f64,
                    L2 => acc[o].sqrt(),
                    LogSum => acc[o].ln(),
                    _ => acc[o],
                };
            }
        }
    }
    acc
}

/// The same on integers (wrapping as the element type would), Mean truncating.
fn reduce_i64(kind: ReduceKind, v: &[i64], shape: &[usize], mask: &[bool], n_out: usize, lo: i64, hi: i64) -> Vec<i64> {
    use ReduceKind::*;
    let init = match kind {
        Max => lo,
        Min => hi,
        Prod => 1,
        _ => 0,
    };
    let mut acc = vec![init; n_out];
    let mut count = vec![0i64; n_out];
    for_each_reduced(shape, mask, |i, o| {
        let x = v[i];
        count[o] += 1;
        acc[o] = match kind {
            Max => acc[o].max(x),
            Min => acc[o].min(x),
            Prod => acc[o].wrapping_mul(x),
            L1 => acc[o].wrapping_add(x.wrapping_abs()),
            SumSquare => acc[o].wrapping_add(x.wrapping_mul(x)),
            _ => acc[o].wrapping_add(x),
        };
    });
    if kind == Mean {
        for o in 0..n_out {
            acc[o] = if count[o] == 0 { 0 } else { acc[o] / count[o] };
        }
    }
    acc
}

impl Reduce {
    /// The axes to reduce: `None` for all of them, `Some([])` for none (noop).
    fn axes_of(&self, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>> {
        let axes = if self.axes_input {
            crate::ops::movement::ints_input(inputs, 1, "axes")?
        } else {
            self.axes.clone()
        };
        Ok(match axes {
            Some(a) if !a.is_empty() => Some(a),
            _ if self.noop_with_empty_axes => Some(Vec::new()),
            _ => None,
        })
    }

    fn out_shape(&self, shape: &[usize], mask: &[bool]) -> Vec<usize> {
        shape
            .iter()
            .zip(mask)
            .filter_map(|(&d, &m)| match (m, self.keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect()
    }
}

impl Op for Reduce {
    fn op_type(&self) -> &'static str {
        self.kind.op_type()
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if let Some(a) = &self.axes {
            v.push(("axes".to_string(), AttrValue::Ints(a.clone())));
        }
        if !self.keepdims {
            v.push(("keepdims".into(), AttrValue::Int(0)));
        }
        if self.noop_with_empty_axes {
            v.push(("noop_with_empty_axes".into(), AttrValue::Int(1)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = self.op_type();
        let x = input(inputs, 0, "data")?;
        let shape = x.shape();
        let r = shape.len();
        let mask: Vec<bool> = match self.axes_of(inputs)? {
            None => vec![true; r],
            Some(a) => {
                let set = axes_set(&a, r, op)?;
                (0..r).map(|d| set.contains(&d)).collect()
            }
        };
        let out_shape = self.out_shape(shape, &mask);
        let n_out: usize = shape.iter().zip(&mask).map(|(&d, &m)| if m { 1 } else { d }).product();
        let k = self.kind;
        if !k.dtypes().contains(&x.dtype()) {
            return Err(Error::shape(format!("{op}: {} input is not supported", x.dtype())));
        }
        let data = match x.data() {
            TensorData::F32(v) => {
                let v: Vec<f64> = v.iter().map(|&a| a as f64).collect();
                TensorData::F32(
                    reduce_f64(k, &v, shape, &mask, n_out)
                        .iter()
                        .map(|&a| a as f32)
                        .collect(),
                )
            }
            TensorData::Bool(v) => {
                let v: Vec<i64> = v.iter().map(|&a| a as i64).collect();
                TensorData::Bool(
                    reduce_i64(k, &v, shape, &mask, n_out, 0, 1)
                        .iter()
                        .map(|&a| a != 0)
                        .collect(),
                )
            }
            TensorData::I64(v) => TensorData::I64(reduce_i64(k, v, shape, &mask, n_out, i64::MIN, i64::MAX)),
            d => {
                let v = x.to_i64_vec()?;
                let (lo, hi) = match d {
                    TensorData::U8(_) => (0, u8::MAX as i64),
                    TensorData::I8(_) => (i8::MIN as i64, i8::MAX as i64),
                    _ => (i32::MIN as i64, i32::MAX as i64),
                };
                let out = reduce_i64(k, &v, shape, &mask, n_out, lo, hi);
                match d {
                    TensorData::U8(_) => TensorData::U8(out.iter().map(|&a| a as u8).collect()),
                    TensorData::I8(_) => TensorData::I8(out.iter().map(|&a| a as i8).collect()),
                    _ => TensorData::I32(out.iter().map(|&a| a as i32).collect()),
                }
            }
        };
        Ok(vec![Tensor::new(out_shape, data)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "data")?;
        expect_dtype(op, x, "data", self.kind.dtypes())?;
        let axes: Option<Option<Vec<i64>>> = if self.axes_input && optional(inputs, 1).is_some() {
            match constant(constants, 1) {
                Some(t) => {
                    let a = t.to_i64_vec().map_err(in_op(op))?;
                    Some(match a {
                        a if !a.is_empty() => Some(a),
                        _ if self.noop_with_empty_axes => Some(Vec::new()),
                        _ => None,
                    })
                }
                None => None,
            }
        } else {
            Some(self.axes_of(&[])?)
        };
        let Some(s) = &x.shape else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let r = s.len();
        let shape = match axes {
            Some(None) => Some(if self.keepdims {
                vec![DimFact::Known(1); r]
            } else {
                Vec::new()
            }),
            Some(Some(a)) => {
                let set = axes_set(&a, r, op).map_err(in_op(op))?;
                let mask: Vec<bool> = (0..r).map(|d| set.contains(&d)).collect();
                Some(
                    s.iter()
                        .zip(&mask)
                        .filter_map(|(d, &m)| match (m, self.keepdims) {
                            (false, _) => Some(d.clone()),
                            (true, true) => Some(DimFact::Known(1)),
                            (true, false) => None,
                        })
                        .collect(),
                )
            }
            // Axes computed by the graph: with keepdims the rank stays.
            None if self.keepdims => Some(vec![DimFact::Unknown; r]),
            None => None,
        };
        Ok(vec![ValueFact::new(x.dtype, shape)])
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        match self.kind {
            ReduceKind::L1 | ReduceKind::L2 | ReduceKind::SumSquare => SignRule::NonNegative,
            ReduceKind::Max | ReduceKind::Min | ReduceKind::Mean | ReduceKind::Sum | ReduceKind::Prod => {
                SignRule::FollowsInputs
            }
            _ => SignRule::Unknown,
        }
    }
    fn needs_round(&self) -> bool {
        self.kind == ReduceKind::Mean
    }
}
