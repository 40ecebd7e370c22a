//! MaxPool with its `Indices` output (opset 8 and newer): the maximum of each window and
//! where it was, as a flat index into the whole input tensor (row-major, or with
//! `storage_order=1` the spatial position column-major), the first position on a tie and
//! padding never selected, as onnxruntime computes it. float32, 1-D to 3-D.

use super::conv::spatial;
use super::pool::Pool;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct MaxPoolIndices {
    pub pool: Pool,
    /// The spatial position of an index column-major (else row-major).
    pub column_major: bool,
}

/// MaxPool's parser: with the Indices output when the node declares it, else plain pooling.
pub fn parse_max_pool(cx: &ParseCtx) -> Result<Box<dyn Op>> {
    if cx.outputs >= 2 && cx.opset >= 8 {
        Ok(Box::new(MaxPoolIndices::from_onnx(cx)?))
    } else {
        Ok(Box::new(Pool::from_onnx(cx)?))
    }
}

impl FromOnnx for MaxPoolIndices {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let order = cx.attrs.int("storage_order", 0)?;
        if order != 0 && order != 1 {
            return Err(cx.attrs.unsupported(format!("storage_order {order} (0 or 1)")));
        }
        Ok(MaxPoolIndices {
            pool: Pool::parse(cx.attrs, true)?,
            column_major: order == 1,
        })
    }
}

impl MaxPoolIndices {
    fn run(&self, x: &Tensor) -> Result<(Vec<usize>, Vec<f32>, Vec<i64>)> {
        let p = &self.pool;
        let xs = x.shape();
        let r = p.kernel_shape.len();
        if xs.len() != r + 2 {
            return Err(Error::shape(format!(
                "MaxPool: {r}-D pooling expects an input [N, C, {r} spatial dims], got {xs:?}"
            )));
        }
        let strides = spatial(&p.strides, r, "strides")?;
        let dilations = spatial(&p.dilations, r, "dilations")?;
        let sizes = &xs[2..];
        let pads = p.padding.resolve(sizes, &p.kernel_shape, &strides, &dilations)?;
        // The output size of each axis, as the plain pooling computes it.
        let facts = p.facts("MaxPool", &ValueFact::of_tensor(x))?;
        let shape = facts
            .concrete_shape()
            .ok_or_else(|| Error::shape("MaxPool: output shape unknown".to_string()))?;
        let out = shape[2..].to_vec();
        crate::tensor::check_alloc(&shape, 8)?;
        let planes = xs[0] * xs[1];
        let plane_in: usize = sizes.iter().product();
        let plane_out: usize = out.iter().product();
        let xv = x.as_slice::<f32>()?;
        let mut y = vec![0f32; planes * plane_out];
        let mut idx = vec![0i64; planes * plane_out];
        // Row-major and column-major strides of the spatial axes.
        let mut row = vec![1usize; r];
        let mut col = vec![1usize; r];
        for d in (0..r.saturating_sub(1)).rev() {
            row[d] = row[d + 1] * sizes[d + 1];
        }
        for d in 1..r {
            col[d] = col[d - 1] * sizes[d - 1];
        }
        let mut oi = vec![0usize; r];
        let mut ki = vec![0usize; r];
        for o in 0..plane_out {
            // The output position `o` as a multi-index.
            let mut rem = o;
            for d in (0..r).rev() {
                oi[d] = rem % out[d];
                rem /= out[d];
            }
            for pl in 0..planes {
                let plane = &xv[pl * plane_in..(pl + 1) * plane_in];
                let mut best = f32::MIN;
                let mut at: Option<usize> = None;
                ki.iter_mut().for_each(|k| *k = 0);
                loop {
                    let mut flat = 0usize;
                    let mut pos_col = 0usize;
                    let mut inside = true;
                    for d in 0..r {
                        let pos = (oi[d] * strides[d] + ki[d] * dilations[d]) as isize - pads[d] as isize;
                        if pos < 0 || pos >= sizes[d] as isize {
                            inside = false;
                            break;
                        }
                        flat += pos as usize * row[d];
                        pos_col += pos as usize * col[d];
                    }
                    if inside && (at.is_none() || plane[flat] > best) {
                        best = plane[flat];
                        at = Some(if self.column_major { pos_col } else { flat });
                    }
                    if !next(&mut ki, &p.kernel_shape) {
                        break;
                    }
                }
                y[pl * plane_out + o] = best;
                idx[pl * plane_out + o] = at.map_or(-1, |a| (pl * plane_in + a) as i64);
            }
        }
        Ok((shape, y, idx))
    }
}

/// Advances the row-major multi-index `i` within `bounds`; false once it wraps around.
fn next(i: &mut [usize], bounds: &[usize]) -> bool {
    for d in (0..i.len()).rev() {
        i[d] += 1;
        if i[d] < bounds[d] {
            return true;
        }
        i[d] = 0;
    }
    false
}

impl Op for MaxPoolIndices {
    fn op_type(&self) -> &'static str {
        "MaxPool"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = self.pool.attrs();
        if self.column_major {
            v.push(("storage_order".into(), AttrValue::Int(1)));
        }
        v
    }
    fn num_outputs(&self) -> usize {
        2
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        if x.dtype() != DType::F32 {
            return Err(Error::shape(format!(
                "MaxPool: X must be float32 with the Indices output, got {}",
                x.dtype()
            )));
        }
        let (shape, y, idx) = self.run(x)?;
        Ok(vec![Tensor::from_vec(shape.clone(), y)?, Tensor::from_vec(shape, idx)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let mut y = self.pool.output_facts(inputs, constants)?;
        let f = y.remove(0);
        if f.dtype.is_some_and(|d| d != DType::F32) {
            return Err(crate::ops::facts::fact_error(
                "MaxPool",
                format!("X must be float32 with the Indices output, got {f}"),
            ));
        }
        let f = ValueFact::new(Some(DType::F32), f.shape);
        let i = ValueFact::new(Some(DType::I64), f.shape.clone());
        Ok(vec![f, i])
    }
}
