//! Reshape (shape as an input; 0 copies a dimension unless `allowzero`, -1 is inferred).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_error, in_op, required};
use crate::ops::{attr, input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{numel, DType, Tensor};

/// The output shape of Reshape (0 copies a dimension unless `allowzero`, -1 is inferred).
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                Error::shape(format!(
                    "Reshape shape {spec:?}: 0 at position {i} but input {input:?} has no such dim"
                ))
            })?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(Error::shape(format!("Reshape shape {spec:?} is invalid"))),
        }
    }
    let total = numel(input);
    if let Some(i) = infer {
        let known = numel(&out);
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::shape(format!("cannot reshape {input:?} to {spec:?}")));
        }
        out[i] = total / known;
    }
    if numel(&out) != total {
        return Err(Error::shape(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?}"
        )));
    }
    Ok(out)
}

/// `reshape_target` on what is known of the input (`None`: not even its rank). A `-1` is
/// inferred when the input's dimensions, once those the target names as well are set aside,
/// are known sizes (or one symbol whose factor is 1): `[N, 512, 1, 1]` to `[0, -1]` is
/// `[N, 512]`.
pub(crate) fn reshape_facts(input: Option<&[DimFact]>, spec: &[i64], allowzero: bool) -> Result<Vec<DimFact>> {
    const OP: &str = "Reshape";
    if let Some(known) = input.and_then(|s| s.iter().map(DimFact::known).collect::<Option<Vec<usize>>>()) {
        let out = reshape_target(&known, spec, allowzero).map_err(in_op(OP))?;
        return Ok(out.into_iter().map(DimFact::Known).collect());
    }
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(DimFact::Unknown);
            }
            0 if !allowzero => out.push(match input {
                Some(s) => s.get(i).cloned().ok_or_else(|| {
                    fact_error(
                        OP,
                        format!("shape {spec:?}: 0 at position {i} but the input has rank {}", s.len()),
                    )
                })?,
                None => DimFact::Unknown,
            }),
            d if d >= 0 => out.push(DimFact::Known(d as usize)),
            _ => return Err(fact_error(OP, format!("shape {spec:?} is invalid"))),
        }
    }
    if let (Some(i), Some(s)) = (infer, input) {
        // Set aside the dimensions both sides name, then divide what is left.
        let mut rest: Vec<&DimFact> = s.iter().collect();
        let mut out_known = 1usize;
        let mut out_other = false;
        for d in out.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, d)| d) {
            if let Some(p) = rest.iter().position(|r| *r == d && *d != DimFact::Unknown) {
                rest.swap_remove(p);
            } else if let Some(k) = d.known() {
                out_known = out_known.saturating_mul(k);
            } else {
                out_other = true;
            }
        }
        let in_known = rest
            .iter()
            .filter_map(|d| d.known())
            .fold(1usize, |a, k| a.saturating_mul(k));
        let in_other: Vec<&&DimFact> = rest.iter().filter(|d| d.known().is_none()).collect();
        out[i] = match (in_other.as_slice(), out_other) {
            (_, true) => DimFact::Unknown,
            _ if in_known == 0 || out_known == 0 => DimFact::Unknown,
            ([], false) if in_known.is_multiple_of(out_known) => DimFact::Known(in_known / out_known),
            ([DimFact::Symbol(n)], false) if in_known == out_known => DimFact::Symbol(n.clone()),
            _ => DimFact::Unknown,
        };
    }
    Ok(out)
}

pub fn reshape(allowzero: bool, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let spec = input(inputs, 1, "shape")?.to_i64_vec()?;
    let shape = reshape_target(x.shape(), &spec, allowzero)?;
    Ok(vec![x.clone().reshape(shape)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reshape {
    pub allowzero: bool,
}

impl FromOnnx for Reshape {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        if cx.attrs.has("shape") {
            return Err(cx.attrs.unsupported("shape as an attribute (opset < 5)"));
        }
        Ok(Reshape {
            allowzero: cx.attrs.int("allowzero", 0)? != 0,
        })
    }
}

impl Op for Reshape {
    fn op_type(&self) -> &'static str {
        "Reshape"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.allowzero {
            attr("allowzero", AttrValue::Int(1))
        } else {
            Vec::new()
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        reshape(self.allowzero, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Reshape", "data")?;
        let spec = required(inputs, 1, "Reshape", "shape")?;
        expect_dtype(
            "Reshape",
            spec,
            "shape",
            &[DType::I64, DType::I32, DType::I8, DType::U8, DType::Bool],
        )?;
        // The target shape is a value: known when it is a constant, else only its length.
        let shape = match constant(constants, 1) {
            Some(t) => {
                let spec = t.to_i64_vec().map_err(in_op("Reshape"))?;
                Some(reshape_facts(x.shape.as_deref(), &spec, self.allowzero)?)
            }
            None => spec.numel().map(|k| vec![DimFact::Unknown; k]),
        };
        Ok(vec![ValueFact::new(x.dtype, shape)])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let spec = rest
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| Error::shape("missing required input #1 (shape)"))?
            .to_i64_vec()?;
        let shape = reshape_target(x.shape(), &spec, self.allowzero)?;
        x.reshape(shape)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
