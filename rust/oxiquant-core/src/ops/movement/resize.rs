//! Resize and Upsample with nearest-neighbour sampling.

use super::take_tables;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, fact_error, in_op, optional, required};
use crate::ops::{input, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{check_alloc, strides, Tensor};

/// Resize / Upsample with nearest-neighbour sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub coord_mode: String,
    pub nearest_mode: String,
    /// Scales given as an attribute (Upsample-7).
    pub scales: Option<Vec<f32>>,
    /// Index of the `scales` input (1 for Upsample-9 and Resize-10, 2 for Resize-11+).
    pub scales_input: usize,
    /// Exported as the legacy `Upsample` op it was read from.
    pub upsample: bool,
}

impl Resize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let r = x.rank();
        let scales_t = inputs
            .get(self.scales_input)
            .copied()
            .flatten()
            .filter(|t| !t.is_empty());
        let sizes_t = if self.scales_input == 2 {
            inputs.get(3).copied().flatten().filter(|t| !t.is_empty())
        } else {
            None
        };
        let (scales, out_shape): (Vec<f32>, Vec<usize>) = if let Some(sz) = sizes_t {
            let s = sz.to_i64_vec()?;
            if s.len() != r || s.iter().any(|&v| v < 0) {
                return Err(Error::shape(format!(
                    "Resize sizes {s:?} do not fit input {:?}",
                    x.shape()
                )));
            }
            let out: Vec<usize> = s.iter().map(|&v| v as usize).collect();
            (
                out.iter()
                    .zip(x.shape())
                    .map(|(&o, &i)| o as f32 / i.max(1) as f32)
                    .collect(),
                out,
            )
        } else {
            let sc = match (&self.scales, scales_t) {
                (Some(s), _) => s.clone(),
                (None, Some(t)) => t.as_slice::<f32>()?.to_vec(),
                (None, None) => return Err(Error::shape("Resize needs scales or sizes".to_string())),
            };
            if sc.len() != r || sc.iter().any(|&v| v.is_nan() || v <= 0.0 || v.is_infinite()) {
                return Err(Error::shape(format!(
                    "Resize scales {sc:?} do not fit input {:?}",
                    x.shape()
                )));
            }
            let out = x
                .shape()
                .iter()
                .zip(&sc)
                .map(|(&i, &s)| (i as f32 * s).floor() as usize)
                .collect();
            (sc, out)
        };
        if let Some(d) = (0..r).find(|&d| x.shape()[d] == 0 && out_shape[d] > 0) {
            return Err(Error::shape(format!(
                "Resize: axis {d} of input {:?} is empty, it cannot be resized to {} elements",
                x.shape(),
                out_shape[d]
            )));
        }
        check_alloc(&out_shape, 8)?;
        check_alloc(&[out_shape.iter().fold(0usize, |s, &d| s.saturating_add(d))], 16)?;
        let st = strides(x.shape());
        let tables: Vec<Vec<Option<usize>>> = (0..r)
            .map(|d| {
                let (len_in, len_out, scale) = (x.shape()[d], out_shape[d], scales[d]);
                if scale == 1.0 && len_out == len_in {
                    // An axis that is not resized is copied as is (as onnxruntime does), even
                    // where a mode's formula would shift it (tf_half_pixel_for_nn with ceil).
                    return (0..len_out).map(|o| Some(o * st[d])).collect();
                }
                (0..len_out)
                    .map(|o| {
                        let xo = o as f32;
                        let orig = match self.coord_mode.as_str() {
                            "asymmetric" => xo / scale,
                            "align_corners" if len_out > 1 => xo * (len_in as f32 - 1.0) / (len_out as f32 - 1.0),
                            "align_corners" => 0.0,
                            "pytorch_half_pixel" if len_out > 1 => (xo + 0.5) / scale - 0.5,
                            "pytorch_half_pixel" => 0.0,
                            "tf_half_pixel_for_nn" => (xo + 0.5) / scale,
                            "half_pixel_symmetric" => {
                                // Centres the sampled grid when the scaled width is fractional.
                                // The last step in f64, as onnxruntime does, so that exact
                                // integers stay exact for floor/ceil.
                                let adjustment = len_out as f32 / (len_in as f32 * scale);
                                let offset = len_in as f32 / 2.0 * (1.0 - adjustment);
                                (offset as f64 + (xo as f64 + 0.5) / scale as f64 - 0.5) as f32
                            }
                            // half_pixel (other modes are refused when the node is read)
                            _ => (xo + 0.5) / scale - 0.5,
                        };
                        let idx = match self.nearest_mode.as_str() {
                            "floor" => orig.floor(),
                            "ceil" => orig.ceil(),
                            "round_prefer_ceil" => (orig + 0.5).floor(),
                            // Resize-10 and Upsample, which predate nearest_mode: onnxruntime's
                            // rule, the reference for these versions (the spec names none).
                            "simple" if scale < 1.0 => orig.ceil(),
                            "simple" => orig.floor(),
                            // round_prefer_floor (other modes are refused when the node is read)
                            _ => {
                                // round_prefer_floor: halves go down
                                if orig.fract() == 0.5 {
                                    orig.floor()
                                } else {
                                    orig.round()
                                }
                            }
                        };
                        let i = (idx.max(0.0) as usize).min(len_in.saturating_sub(1));
                        Some(i * st[d])
                    })
                    .collect()
            })
            .collect();
        Ok(vec![take_tables(x, out_shape, &tables, 0.0)?])
    }
}

impl Resize {
    /// The output's facts: the input's dtype; the sizes when given (Resize-11+), else each
    /// dimension times its scale, rounded down (known when the sizes or scales are
    /// constants or attributes; a free dimension keeps its name under a scale of 1).
    fn facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "X")?;
        let rank = x.rank();
        let unknown_dims = |r: Option<usize>| vec![ValueFact::new(x.dtype, r.map(|r| vec![DimFact::Unknown; r]))];
        if self.scales_input == 2 {
            if let Some(f) = optional(inputs, 3) {
                match constant(constants, 3) {
                    Some(t) if !t.is_empty() => {
                        let s = t.to_i64_vec().map_err(in_op(op))?;
                        if rank.is_some_and(|r| s.len() != r) || s.iter().any(|&v| v < 0) {
                            return Err(fact_error(op, format!("sizes {s:?} do not fit input {x}")));
                        }
                        let shape = s.iter().map(|&v| DimFact::Known(v as usize)).collect();
                        return Ok(vec![ValueFact::new(x.dtype, Some(shape))]);
                    }
                    // Empty sizes: the scales apply.
                    Some(_) => {}
                    None if f.numel() == Some(0) => {}
                    None => return Ok(unknown_dims(rank.or(f.numel()))),
                }
            }
        }
        let scales: Vec<f32> = match &self.scales {
            Some(s) => s.clone(),
            None => match (
                optional(inputs, self.scales_input),
                constant(constants, self.scales_input),
            ) {
                (_, Some(t)) if !t.is_empty() => t.as_slice::<f32>().map_err(in_op(op))?.to_vec(),
                (Some(f), None) if f.numel() != Some(0) => return Ok(unknown_dims(rank.or(f.numel()))),
                _ => return Err(fact_error(op, "needs scales or sizes")),
            },
        };
        let Some(s) = &x.shape else {
            return Ok(unknown_dims(Some(scales.len())));
        };
        if scales.len() != s.len() || scales.iter().any(|&v| v.is_nan() || v <= 0.0 || v.is_infinite()) {
            return Err(fact_error(op, format!("scales {scales:?} do not fit input {x}")));
        }
        let shape = s
            .iter()
            .zip(&scales)
            .map(|(d, &sc)| match d.known() {
                // As `run` computes it.
                Some(i) => DimFact::Known((i as f32 * sc).floor() as usize),
                None if sc == 1.0 => d.clone(),
                None => DimFact::Unknown,
            })
            .collect();
        Ok(vec![ValueFact::new(x.dtype, Some(shape))])
    }
}

impl FromOnnx for Resize {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let mode = a.string("mode", "nearest")?;
        if mode != "nearest" {
            return Err(a.unsupported(format!("mode '{mode}' (only nearest is supported)")));
        }
        let upsample = cx.op_type == "Upsample";
        let legacy = upsample || cx.opset < 11;
        a.ignore(&["cubic_coeff_a", "exclude_outside", "extrapolation_value"]);
        if a.int("antialias", 0)? != 0 || a.has("axes") || a.string("keep_aspect_ratio_policy", "stretch")? != "stretch"
        {
            return Err(a.unsupported("antialias, axes and keep_aspect_ratio_policy are not supported"));
        }
        let coord = if legacy {
            "asymmetric".to_string()
        } else {
            a.string("coordinate_transformation_mode", "half_pixel")?
        };
        let nearest = if legacy {
            "simple".to_string()
        } else {
            a.string("nearest_mode", "round_prefer_floor")?
        };
        if coord == "tf_crop_and_resize" {
            return Err(a.unsupported("coordinate_transformation_mode tf_crop_and_resize"));
        }
        const COORD_MODES: [&str; 6] = [
            "half_pixel",
            "half_pixel_symmetric",
            "pytorch_half_pixel",
            "align_corners",
            "asymmetric",
            "tf_half_pixel_for_nn",
        ];
        if !COORD_MODES.contains(&coord.as_str()) {
            return Err(a.unsupported(format!("coordinate_transformation_mode '{coord}'")));
        }
        const NEAREST_MODES: [&str; 4] = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
        if !legacy && !NEAREST_MODES.contains(&nearest.as_str()) {
            return Err(a.unsupported(format!("nearest_mode '{nearest}'")));
        }
        Ok(Resize {
            coord_mode: coord,
            nearest_mode: nearest,
            scales: a.floats_opt("scales")?,
            scales_input: if legacy { 1 } else { 2 },
            upsample,
        })
    }
}

impl Op for Resize {
    fn op_type(&self) -> &'static str {
        if self.upsample {
            "Upsample"
        } else {
            "Resize"
        }
    }
    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if let Some(s) = &self.scales {
            v.push(("scales".to_string(), AttrValue::Floats(s.clone())));
        }
        if opset >= 11 && !self.upsample && self.scales.is_none() {
            v.push((
                "coordinate_transformation_mode".into(),
                AttrValue::String(self.coord_mode.clone()),
            ));
            v.push(("nearest_mode".into(), AttrValue::String(self.nearest_mode.clone())));
        }
        v.push(("mode".into(), AttrValue::String("nearest".into())));
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        self.facts(inputs, constants)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Seamless
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::FollowsInputs
    }
}
