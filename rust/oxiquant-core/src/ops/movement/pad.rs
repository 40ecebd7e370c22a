//! Pad: constant, reflect, edge or wrap (opset 19); pads and value as attributes (opset < 11) or inputs.

use super::{ints_input, take_tables};
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, fact_axis, fact_error, in_op, optional, required};
use crate::ops::{input, norm_axis, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{check_alloc, strides, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    /// Opset 19: the (cropped) axis repeats cyclically.
    Wrap,
}

/// Pad with pads/value from attributes (opset < 11) or from inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Pad {
    pub mode: PadMode,
    pub pads: Option<Vec<i64>>,
    pub value: f32,
}

impl PadMode {
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        }
    }
}

impl Pad {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        let r = x.rank();
        let (pads_in, value) = match &self.pads {
            Some(p) => (p.clone(), self.value as f64),
            None => {
                let p = input(inputs, 1, "pads")?.to_i64_vec()?;
                let v = match inputs.get(2).copied().flatten() {
                    // f64 holds every int32 value exactly (and int64 ones up to 2^53).
                    Some(t) if t.len() == 1 => {
                        crate::dispatch_data!(t.data(), v => crate::tensor::CastElement::to_f64(v[0]))
                    }
                    Some(t) => {
                        return Err(Error::shape(format!(
                            "Pad constant_value must be a scalar, got {:?}",
                            t.shape()
                        )))
                    }
                    None => 0.0,
                };
                (p, v)
            }
        };
        let axes: Vec<usize> = match ints_input(inputs, 3, "axes")? {
            Some(a) => a.iter().map(|&v| norm_axis(v, r)).collect::<Result<_>>()?,
            None => (0..r).collect(),
        };
        if pads_in.len() != 2 * axes.len() {
            return Err(Error::shape(format!(
                "Pad: pads {pads_in:?} should have {} values for input {:?}",
                2 * axes.len(),
                x.shape()
            )));
        }
        let mut pads = vec![0i64; 2 * r];
        for (i, &a) in axes.iter().enumerate() {
            pads[a] = pads_in[i];
            pads[a + r] = pads_in[i + axes.len()];
        }
        // The output size, checked before the index tables (one entry per output row) exist.
        let out_shape: Vec<usize> = (0..r)
            .map(|d| {
                (x.shape()[d] as i64)
                    .saturating_add(pads[d])
                    .saturating_add(pads[d + r])
                    .max(0) as usize
            })
            .collect();
        check_alloc(&out_shape, 8)?;
        // ... and the index tables, one Option<usize> per output row of every axis.
        check_alloc(&[out_shape.iter().fold(0usize, |s, &d| s.saturating_add(d))], 16)?;
        let st = strides(x.shape());
        let mut shape = Vec::with_capacity(r);
        let mut tables = Vec::with_capacity(r);
        for d in 0..r {
            let dim = x.shape()[d] as i64;
            let out = dim
                .checked_add(pads[d])
                .and_then(|v| v.checked_add(pads[d + r]))
                .ok_or_else(|| Error::shape(format!("Pad: pads {pads:?} overflow axis {d}")))?;
            if out < 0 || pads[d] < -dim || pads[d + r] < -dim {
                return Err(Error::shape(format!(
                    "Pad: pads {pads:?} remove more than the {dim} elements of axis {d}"
                )));
            }
            if self.mode != PadMode::Constant && dim == 0 && out > 0 {
                return Err(Error::shape(format!(
                    "Pad mode {} cannot pad an empty axis",
                    self.mode.name()
                )));
            }
            if self.mode == PadMode::Reflect
                && (pads[d] >= dim || pads[d + r] >= dim)
                && (pads[d] > 0 || pads[d + r] > 0)
            {
                return Err(Error::shape(format!(
                    "Pad mode reflect: pads {pads:?} must be smaller than axis {d} of size {dim}"
                )));
            }
            // Wrap repeats the axis as cropped by negative pads.
            let lo = (-pads[d]).max(0);
            let kept = dim - lo - (-pads[d + r]).max(0);
            if self.mode == PadMode::Wrap && kept <= 0 && out > 0 {
                return Err(Error::shape(format!(
                    "Pad mode wrap: pads {pads:?} leave nothing of axis {d} to repeat"
                )));
            }
            shape.push(out as usize);
            tables.push(
                (0..out)
                    .map(|o| {
                        let i = o - pads[d];
                        let src = if self.mode == PadMode::Wrap {
                            Some(lo + (o - pads[d].max(0)).rem_euclid(kept.max(1)))
                        } else if (0..dim).contains(&i) {
                            Some(i)
                        } else {
                            match self.mode {
                                PadMode::Constant => None,
                                PadMode::Edge => Some(i.clamp(0, dim - 1)),
                                PadMode::Reflect => Some(if i < 0 { -i } else { 2 * (dim - 1) - i }),
                                PadMode::Wrap => None,
                            }
                        };
                        src.map(|s| s as usize * st[d])
                    })
                    .collect::<Vec<_>>(),
            );
        }
        Ok(vec![take_tables(x, shape, &tables, value)?])
    }
}

impl Pad {
    fn facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Pad";
        let x = required(inputs, 0, op, "data")?;
        let ints = |i: usize| -> Result<Option<Vec<i64>>> {
            constant(constants, i)
                .map(|t| t.to_i64_vec())
                .transpose()
                .map_err(in_op(op))
        };
        let pads_in = match &self.pads {
            Some(p) => Some(p.clone()),
            None => {
                required(inputs, 1, op, "pads")?;
                if let Some(v) = optional(inputs, 2) {
                    if v.numel().is_some_and(|n| n != 1) {
                        return Err(fact_error(
                            op,
                            format!("constant_value must be a scalar, got {}", v.shape_string()),
                        ));
                    }
                }
                ints(1)?
            }
        };
        let Some(s) = &x.shape else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let r = s.len();
        let axes: Option<Vec<usize>> = match optional(inputs, 3) {
            None => Some((0..r).collect()),
            Some(_) => ints(3)?
                .map(|a| a.iter().map(|&v| fact_axis(op, v, r)).collect::<Result<_>>())
                .transpose()?,
        };
        let (Some(pads_in), Some(axes)) = (pads_in, axes) else {
            // Pads or axes computed by the graph: only the rank is known.
            return Ok(vec![ValueFact::new(x.dtype, Some(vec![DimFact::Unknown; r]))]);
        };
        if pads_in.len() != 2 * axes.len() {
            return Err(fact_error(
                op,
                format!(
                    "pads {pads_in:?} should have {} values for input {}",
                    2 * axes.len(),
                    x.shape_string()
                ),
            ));
        }
        let mut pads = vec![0i64; 2 * r];
        for (i, &a) in axes.iter().enumerate() {
            pads[a] = pads_in[i];
            pads[a + r] = pads_in[i + axes.len()];
        }
        let mut shape = Vec::with_capacity(r);
        for (d, dim) in s.iter().enumerate() {
            let (b, e) = (pads[d], pads[d + r]);
            let Some(n) = dim.known() else {
                // A free size keeps its name when nothing is added or removed.
                shape.push(if b == 0 && e == 0 {
                    dim.clone()
                } else {
                    DimFact::Unknown
                });
                continue;
            };
            let n = n as i64;
            let out = n
                .checked_add(b)
                .and_then(|v| v.checked_add(e))
                .ok_or_else(|| fact_error(op, format!("pads {pads:?} overflow axis {d}")))?;
            if out < 0 || b < -n || e < -n {
                return Err(fact_error(
                    op,
                    format!("pads {pads:?} remove more than the {n} elements of axis {d}"),
                ));
            }
            if self.mode != PadMode::Constant && n == 0 && out > 0 {
                return Err(fact_error(
                    op,
                    format!("mode {} cannot pad an empty axis", self.mode.name()),
                ));
            }
            if self.mode == PadMode::Reflect && (b >= n || e >= n) && (b > 0 || e > 0) {
                return Err(fact_error(
                    op,
                    format!("mode reflect: pads {pads:?} must be smaller than axis {d} of size {n}"),
                ));
            }
            shape.push(DimFact::Known(out as usize));
        }
        Ok(vec![ValueFact::new(x.dtype, Some(shape))])
    }

    /// Whether padding keeps a scaled input scaled (zero padding, or reflect/edge).
    fn keeps_scale(&self, n: &NodeFacts) -> bool {
        self.mode != PadMode::Constant || (self.value == 0.0 && (n.input(2).is_empty() || n.is_zero_constant(2)))
    }
}

impl FromOnnx for Pad {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let mode = match a.string("mode", "constant")?.as_str() {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" if cx.opset >= 19 => PadMode::Wrap,
            other => return Err(a.unsupported(format!("mode '{other}'"))),
        };
        let pads = if cx.opset < 11 {
            a.ints_opt("pads")?.or(a.ints_opt("paddings")?)
        } else {
            None
        };
        Ok(Pad {
            mode,
            pads,
            value: a.float("value", 0.0)?,
        })
    }
}

impl Op for Pad {
    fn op_type(&self) -> &'static str {
        "Pad"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if self.mode != PadMode::Constant {
            v.push(("mode".to_string(), AttrValue::String(self.mode.name().into())));
        }
        if let Some(pads) = &self.pads {
            v.push(("pads".into(), AttrValue::Ints(pads.clone())));
            if self.value != 0.0 {
                v.push(("value".into(), AttrValue::Float(self.value)));
            }
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        self.facts(inputs, constants)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
    fn ptq_class(&self, n: &NodeFacts) -> Class {
        if self.keeps_scale(n) {
            Class::Seamless
        } else {
            Class::FloatIsland("Pad with a non-zero constant".into())
        }
    }
    fn sign_rule(&self, n: &NodeFacts) -> SignRule {
        if self.keeps_scale(n) {
            SignRule::FollowsInputs
        } else {
            SignRule::Unknown
        }
    }
}
