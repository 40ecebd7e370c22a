//! DepthToSpace (DCR and CRD orders) and SpaceToDepth: a reshape, a transpose and a reshape.

use super::transpose::transpose;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_min_rank, fact_error, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct DepthToSpace {
    pub blocksize: usize,
    /// CRD (column, row, depth) order; DCR otherwise.
    pub crd: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpaceToDepth {
    pub blocksize: usize,
    /// Channel-block-pixel order of the output channels (`mode="CRD"`, opset 28), the inverse
    /// of DepthToSpace's CRD; otherwise block-pixel first (DCR, every older opset).
    pub crd: bool,
}

fn blocksize(cx: &ParseCtx) -> Result<usize> {
    match cx.attrs.int_opt("blocksize")? {
        Some(b) if b >= 1 => Ok(b as usize),
        other => Err(Error::format(format!(
            "node '{}' ({}): blocksize must be a positive int, got {other:?}",
            cx.attrs.node, cx.op_type
        ))),
    }
}

fn nchw(x: &Tensor, what: &str) -> Result<[usize; 4]> {
    match x.shape() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        s => Err(Error::shape(format!("{what}: input must be NCHW, got {s:?}"))),
    }
}

/// Whether `mode` is "CRD" (else "DCR", the default).
fn mode(cx: &ParseCtx) -> Result<bool> {
    match cx.attrs.string("mode", "DCR")?.as_str() {
        "DCR" => Ok(false),
        "CRD" => Ok(true),
        m => Err(cx.attrs.unsupported(format!("mode '{m}'"))),
    }
}

impl FromOnnx for DepthToSpace {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let crd = mode(cx)?;
        Ok(DepthToSpace {
            blocksize: blocksize(cx)?,
            crd,
        })
    }
}

impl FromOnnx for SpaceToDepth {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(SpaceToDepth {
            blocksize: blocksize(cx)?,
            // SpaceToDepth has `mode` from opset 28.
            crd: cx.opset >= 28 && mode(cx)?,
        })
    }
}

/// The NCHW output fact of a 4-D input whose channels are multiplied by `cm` and divided by
/// `cd`, spatial sizes multiplied by `sm` and divided by `sd`.
fn facts4(op: &str, inputs: &[Option<&ValueFact>], b: usize, to_space: bool) -> Result<Vec<ValueFact>> {
    let x = required(inputs, 0, op, "input")?;
    expect_min_rank(op, x, "input", 4, "NCHW")?;
    let Some(s) = &x.shape else {
        return Ok(vec![ValueFact::new(x.dtype, None)]);
    };
    if s.len() != 4 {
        return Err(fact_error(op, format!("input must be NCHW, got {x}")));
    }
    let bb = b * b;
    let div = |d: &DimFact, k: usize, what: &str| -> Result<DimFact> {
        match d {
            DimFact::Known(n) if n % k != 0 => Err(fact_error(op, format!("{what} {n} is not a multiple of {k}"))),
            DimFact::Known(n) => Ok(DimFact::Known(n / k)),
            _ => Ok(DimFact::Unknown),
        }
    };
    let mul = |d: &DimFact, k: usize| d.known().map_or(DimFact::Unknown, |n| DimFact::Known(n * k));
    let shape = if to_space {
        vec![s[0].clone(), div(&s[1], bb, "channels")?, mul(&s[2], b), mul(&s[3], b)]
    } else {
        vec![
            s[0].clone(),
            mul(&s[1], bb),
            div(&s[2], b, "height")?,
            div(&s[3], b, "width")?,
        ]
    };
    Ok(vec![ValueFact::new(x.dtype, Some(shape))])
}

/// The attributes both ops write: `blocksize`, and `mode` only when it is not the default.
fn block_attrs(blocksize: usize, crd: bool) -> Vec<(String, AttrValue)> {
    let mut v = vec![("blocksize".to_string(), AttrValue::Int(blocksize as i64))];
    if crd {
        v.push(("mode".into(), AttrValue::String("CRD".into())));
    }
    v
}

/// Both ops are one 6-D reshape, a transpose and a 4-D reshape.
fn rearrange(x: &Tensor, shape6: Vec<usize>, perm: Vec<usize>, out: Vec<usize>) -> Result<Tensor> {
    let t = x.clone().reshape(shape6)?;
    let mut moved = transpose(&Some(perm), &[Some(&t)])?;
    moved.swap_remove(0).reshape(out)
}

impl Op for DepthToSpace {
    fn op_type(&self) -> &'static str {
        "DepthToSpace"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        block_attrs(self.blocksize, self.crd)
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let [n, c, h, w] = nchw(x, "DepthToSpace")?;
        let b = self.blocksize;
        if c % (b * b) != 0 {
            return Err(Error::shape(format!(
                "DepthToSpace: channels {c} are not a multiple of blocksize² {}",
                b * b
            )));
        }
        let c2 = c / (b * b);
        let (shape6, perm) = if self.crd {
            (vec![n, c2, b, b, h, w], vec![0, 1, 4, 2, 5, 3])
        } else {
            (vec![n, b, b, c2, h, w], vec![0, 3, 4, 1, 5, 2])
        };
        Ok(vec![rearrange(x, shape6, perm, vec![n, c2, h * b, w * b])?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        facts4("DepthToSpace", inputs, self.blocksize, true)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}

impl Op for SpaceToDepth {
    fn op_type(&self) -> &'static str {
        "SpaceToDepth"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        block_attrs(self.blocksize, self.crd)
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let [n, c, h, w] = nchw(x, "SpaceToDepth")?;
        let b = self.blocksize;
        if h % b != 0 || w % b != 0 {
            return Err(Error::shape(format!(
                "SpaceToDepth: height {h} and width {w} must be multiples of blocksize {b}"
            )));
        }
        let perm = if self.crd {
            vec![0, 1, 3, 5, 2, 4]
        } else {
            vec![0, 3, 5, 1, 2, 4]
        };
        let shape6 = vec![n, c, h / b, b, w / b, b];
        Ok(vec![rearrange(x, shape6, perm, vec![n, c * b * b, h / b, w / b])?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        facts4("SpaceToDepth", inputs, self.blocksize, false)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
