//! LayerNormalization (its optional Mean and InvStdDev outputs too), RMSNormalization,
//! GroupNormalization (per-group scale and bias in opset 18, per channel from 21) and
//! InstanceNormalization. Statistics in f64, as one pass over each normalized group.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, expect_min_rank, fact_axis, fact_error, optional, required};
use crate::ops::{input, norm_axis, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

/// `t` (float32) broadcast to `target` (numpy rules, `t` of rank at most `target`'s).
fn broadcast_to(t: &Tensor, target: &[usize], what: &str) -> Result<Vec<f32>> {
    let v = t.as_slice::<f32>()?;
    let ts = t.shape();
    let bad = || Error::shape(format!("{what} of shape {ts:?} does not broadcast to {target:?}"));
    if ts.len() > target.len() {
        // Leading ones may be dropped.
        let extra = ts.len() - target.len();
        if ts[..extra].iter().any(|&d| d != 1) {
            return Err(bad());
        }
        let t2 = t.clone().reshape(ts[extra..].to_vec())?;
        return broadcast_to(&t2, target, what);
    }
    let off = target.len() - ts.len();
    for (i, &d) in ts.iter().enumerate() {
        if d != 1 && d != target[off + i] {
            return Err(bad());
        }
    }
    let n: usize = target.iter().product();
    let st = crate::tensor::strides(ts);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; target.len()];
    for _ in 0..n {
        let mut o = 0;
        for (i, &d) in ts.iter().enumerate() {
            if d != 1 {
                o += idx[off + i] * st[i];
            }
        }
        out.push(v[o]);
        for d in (0..target.len()).rev() {
            idx[d] += 1;
            if idx[d] < target[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// Mean and 1/sqrt(var + eps) of each of the `x.len() / n` consecutive groups of `n` values;
/// `rms` takes the mean as 0 (RMSNormalization).
fn group_stats(x: &[f32], n: usize, eps: f32, rms: bool) -> Vec<(f64, f64)> {
    if n == 0 {
        return Vec::new();
    }
    x.chunks(n)
        .map(|g| {
            let mean = if rms {
                0.0
            } else {
                g.iter().map(|&a| a as f64).sum::<f64>() / n as f64
            };
            let var = g.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            // epsilon is added in float32, as the ops' definitions take it.
            (mean, 1.0 / ((var as f32 + eps) as f64).sqrt())
        })
        .collect()
}

fn stash_type(cx: &ParseCtx) -> Result<()> {
    match cx.attrs.int("stash_type", 1)? {
        1 => Ok(()),
        t => Err(cx
            .attrs
            .unsupported(format!("stash_type {t} (only float32 statistics)"))),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub axis: i64,
    pub epsilon: f32,
    /// RMSNormalization (no mean subtracted, no bias).
    pub rms: bool,
    /// Outputs computed: Y, then Mean and InvStdDev when the node has them (LayerNorm).
    pub outputs: usize,
}

impl FromOnnx for LayerNorm {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        stash_type(cx)?;
        let rms = cx.op_type == "RMSNormalization";
        Ok(LayerNorm {
            axis: cx.attrs.int("axis", -1)?,
            epsilon: cx.attrs.float("epsilon", 1e-5)?,
            rms,
            outputs: if rms { 1 } else { cx.outputs.clamp(1, 3) },
        })
    }
}

impl Op for LayerNorm {
    fn op_type(&self) -> &'static str {
        if self.rms {
            "RMSNormalization"
        } else {
            "LayerNormalization"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![
            ("axis".to_string(), AttrValue::Int(self.axis)),
            ("epsilon".to_string(), AttrValue::Float(self.epsilon)),
        ]
    }
    fn num_outputs(&self) -> usize {
        self.outputs
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = self.op_type();
        let x = input(inputs, 0, "X")?;
        let scale = input(inputs, 1, "Scale")?;
        let bias = if self.rms {
            None
        } else {
            inputs.get(2).copied().flatten()
        };
        let s = x.shape();
        let a = norm_axis(self.axis, s.len())?;
        let n: usize = s[a..].iter().product();
        let sc = broadcast_to(scale, &s[a..], &format!("{op}: Scale"))?;
        let b = bias
            .map(|b| broadcast_to(b, &s[a..], &format!("{op}: B")))
            .transpose()?;
        let xv = x.as_slice::<f32>()?;
        let stats = group_stats(xv, n, self.epsilon, self.rms);
        let mut y = Vec::with_capacity(xv.len());
        for (g, &(mean, inv)) in xv.chunks(n.max(1)).zip(&stats) {
            for (j, &v) in g.iter().enumerate() {
                let norm = ((v as f64 - mean) * inv) as f32;
                y.push(norm * sc[j] + b.as_ref().map_or(0.0, |b| b[j]));
            }
        }
        let mut outs = vec![Tensor::from_vec(s.to_vec(), y)?];
        let mut stat_shape = s.to_vec();
        stat_shape[a..].iter_mut().for_each(|d| *d = 1);
        if self.outputs > 1 {
            let m: Vec<f32> = stats.iter().map(|p| p.0 as f32).collect();
            outs.push(Tensor::from_vec(stat_shape.clone(), pad_stats(m, &stat_shape))?);
        }
        if self.outputs > 2 {
            let i: Vec<f32> = stats.iter().map(|p| p.1 as f32).collect();
            outs.push(Tensor::from_vec(stat_shape.clone(), pad_stats(i, &stat_shape))?);
        }
        Ok(outs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "X")?;
        expect_dtype(op, x, "X", &[DType::F32])?;
        expect_dtype(op, required(inputs, 1, op, "Scale")?, "Scale", &[DType::F32])?;
        let mut outs = vec![ValueFact::new(Some(DType::F32), x.shape.clone())];
        let stat = x.shape.as_ref().map(|s| {
            let a = fact_axis(op, self.axis, s.len());
            a.map(|a| {
                let mut t = s.clone();
                t[a..].iter_mut().for_each(|d| *d = DimFact::Known(1));
                t
            })
        });
        let stat = stat.transpose()?;
        for _ in 1..self.outputs {
            outs.push(ValueFact::new(Some(DType::F32), stat.clone()));
        }
        Ok(outs)
    }
}

/// Statistics of an empty tensor: as many as the stat shape holds (possibly 0).
fn pad_stats(mut v: Vec<f32>, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    v.resize(n, f32::NAN);
    v
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupNorm {
    /// `None`: InstanceNormalization (one group per channel).
    pub num_groups: Option<usize>,
    pub epsilon: f32,
    /// Opset 18's GroupNormalization: scale and bias per group (per channel from 21).
    pub per_group_params: bool,
}

impl FromOnnx for GroupNorm {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let epsilon = cx.attrs.float("epsilon", 1e-5)?;
        if cx.op_type == "InstanceNormalization" {
            return Ok(GroupNorm {
                num_groups: None,
                epsilon,
                per_group_params: false,
            });
        }
        if cx.opset >= 21 {
            stash_type(cx)?;
        }
        let g = cx.attrs.int_opt("num_groups")?;
        let g = g.filter(|&g| g >= 1).ok_or_else(|| {
            Error::format(format!(
                "node '{}' (GroupNormalization): num_groups must be a positive int, got {g:?}",
                cx.attrs.node
            ))
        })?;
        Ok(GroupNorm {
            num_groups: Some(g as usize),
            epsilon,
            per_group_params: cx.opset < 21,
        })
    }
}

impl Op for GroupNorm {
    fn op_type(&self) -> &'static str {
        if self.num_groups.is_some() {
            "GroupNormalization"
        } else {
            "InstanceNormalization"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![("epsilon".to_string(), AttrValue::Float(self.epsilon))];
        if let Some(g) = self.num_groups {
            v.push(("num_groups".into(), AttrValue::Int(g as i64)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = self.op_type();
        let x = input(inputs, 0, "X")?;
        let scale = input(inputs, 1, "scale")?.as_slice::<f32>()?;
        let bias = input(inputs, 2, "B")?.as_slice::<f32>()?;
        let s = x.shape();
        if s.len() < 2 {
            return Err(Error::shape(format!("{op}: X must be N x C x ..., got {s:?}")));
        }
        let c = s[1];
        let g = self.num_groups.unwrap_or(c);
        if c % g != 0 && c > 0 {
            return Err(Error::shape(format!("{op}: {c} channels do not split into {g} groups")));
        }
        let params = if self.per_group_params { g } else { c };
        if scale.len() != params || bias.len() != params {
            return Err(Error::shape(format!(
                "{op}: scale and bias must have {params} values, got {} and {}",
                scale.len(),
                bias.len()
            )));
        }
        let spatial: usize = s[2..].iter().product();
        let cg = c / g.max(1);
        let n = cg * spatial;
        let xv = x.as_slice::<f32>()?;
        let stats = group_stats(xv, n, self.epsilon, false);
        let mut y = Vec::with_capacity(xv.len());
        for (gi, (grp, &(mean, inv))) in xv.chunks(n.max(1)).zip(&stats).enumerate() {
            for (j, &v) in grp.iter().enumerate() {
                let ch = (gi % g) * cg + j / spatial.max(1);
                let p = if self.per_group_params { gi % g } else { ch };
                y.push(((v as f64 - mean) * inv) as f32 * scale[p] + bias[p]);
            }
        }
        Ok(vec![Tensor::from_vec(s.to_vec(), y)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "X")?;
        expect_dtype(op, x, "X", &[DType::F32])?;
        expect_min_rank(op, x, "X", 2, "N x C x ...")?;
        for (i, w) in [(1, "scale"), (2, "B")] {
            let p = required(inputs, i, op, w)?;
            expect_dtype(op, p, w, &[DType::F32])?;
            let want = if self.per_group_params {
                self.num_groups.map(DimFact::Known)
            } else {
                Some(x.dim(1))
            };
            if let (Some(DimFact::Known(w0)), Some(n)) = (want, p.numel()) {
                if w0 != n {
                    return Err(fact_error(op, format!("{w} {p} must have {w0} values")));
                }
            }
        }
        if let (Some(g), Some(c)) = (self.num_groups, x.dim(1).known()) {
            if c % g != 0 && c > 0 {
                return Err(fact_error(op, format!("{c} channels do not split into {g} groups")));
            }
        }
        let _ = optional(inputs, 3);
        Ok(vec![ValueFact::new(Some(DType::F32), x.shape.clone())])
    }
}
