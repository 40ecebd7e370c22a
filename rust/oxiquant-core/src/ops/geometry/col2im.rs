//! Col2Im (opset 18): the inverse of im2col. Input [N, C * prod(block), L], where L counts
//! the sliding blocks over the padded image; each column is added back at its block's place in
//! an image of `image_shape` (overlaps sum). `image_shape` and `block_shape` are inputs.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_error, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{strides, DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Col2Im {
    /// Empty: ones.
    pub dilations: Vec<usize>,
    /// Begins then ends; empty: zeros.
    pub pads: Vec<usize>,
    /// Empty: ones.
    pub strides: Vec<usize>,
}

impl FromOnnx for Col2Im {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let dilations = a.usizes_opt("dilations")?.unwrap_or_default();
        let strides = a.usizes_opt("strides")?.unwrap_or_default();
        if dilations.contains(&0) || strides.contains(&0) {
            return Err(a.unsupported("a dilation or stride of 0"));
        }
        Ok(Col2Im {
            dilations,
            pads: a.usizes_opt("pads")?.unwrap_or_default(),
            strides,
        })
    }
}

/// What one run computes: image and block sizes, the blocks along each axis.
struct Plan {
    image: Vec<usize>,
    block: Vec<usize>,
    blocks: Vec<usize>,
    channels: usize,
}

fn sizes(t: &Tensor, name: &str) -> Result<Vec<usize>> {
    t.to_i64_vec()?
        .into_iter()
        .map(|v| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| Error::shape(format!("Col2Im: {name} holds {v}, sizes must be > 0")))
        })
        .collect()
}

impl Col2Im {
    fn at(v: &[usize], d: usize, default: usize) -> usize {
        v.get(d).copied().unwrap_or(default)
    }

    fn plan(&self, xs: &[usize], image: Vec<usize>, block: Vec<usize>) -> Result<Plan> {
        let r = image.len();
        let attrs_ok = [&self.dilations, &self.strides]
            .iter()
            .all(|v| v.is_empty() || v.len() == r)
            && (self.pads.is_empty() || self.pads.len() == 2 * r);
        if r == 0 || block.len() != r || !attrs_ok || xs.len() != 3 {
            return Err(Error::shape(format!(
                "Col2Im needs input [N, C * prod(block), L] and image_shape, block_shape, dilations, strides of one length (pads twice it), got input {xs:?}, image_shape {image:?}, block_shape {block:?}"
            )));
        }
        let mut blocks = Vec::with_capacity(r);
        for d in 0..r {
            let span = Self::at(&self.dilations, d, 1) * (block[d] - 1) + 1;
            let padded = image[d] + Self::at(&self.pads, d, 0) + Self::at(&self.pads, d + r, 0);
            if padded < span {
                return Err(Error::shape(format!(
                    "Col2Im: block {block:?} does not fit image {image:?} along axis {d}"
                )));
            }
            blocks.push((padded - span) / Self::at(&self.strides, d, 1) + 1);
        }
        let per_block: usize = block.iter().product();
        let count: usize = blocks.iter().product();
        if !xs[1].is_multiple_of(per_block) || xs[2] != count {
            return Err(Error::shape(format!(
                "Col2Im: input {xs:?} needs a multiple of {per_block} channels and {count} blocks for image {image:?} and block {block:?}"
            )));
        }
        Ok(Plan {
            channels: xs[1] / per_block,
            image,
            block,
            blocks,
        })
    }

    fn run(&self, x: &Tensor, p: &Plan) -> Result<Tensor> {
        let xs = x.shape();
        let xv = x.as_slice::<f32>()?;
        let r = p.image.len();
        let plane: usize = p.image.iter().product();
        let per_block: usize = p.block.iter().product();
        let count: usize = p.blocks.iter().product();
        let img_st = strides(&p.image);
        let blk_st = strides(&p.block);
        let pos_st = strides(&p.blocks);
        let mut y = vec![0.0f32; xs[0] * p.channels * plane];
        for nc in 0..xs[0] * p.channels {
            let out = &mut y[nc * plane..(nc + 1) * plane];
            for k in 0..per_block {
                let col = &xv[(nc * per_block + k) * count..(nc * per_block + k + 1) * count];
                'pos: for (l, &v) in col.iter().enumerate() {
                    let mut idx = 0usize;
                    for d in 0..r {
                        let kd = (k / blk_st[d]) % p.block[d];
                        let ld = (l / pos_st[d]) % p.blocks[d];
                        let at = ld * Self::at(&self.strides, d, 1) + kd * Self::at(&self.dilations, d, 1);
                        let Some(i) = at.checked_sub(Self::at(&self.pads, d, 0)).filter(|&i| i < p.image[d]) else {
                            continue 'pos;
                        };
                        idx += i * img_st[d];
                    }
                    out[idx] += v;
                }
            }
        }
        let mut shape = vec![xs[0], p.channels];
        shape.extend_from_slice(&p.image);
        Tensor::from_vec(shape, y)
    }
}

impl Op for Col2Im {
    fn op_type(&self) -> &'static str {
        "Col2Im"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let ints = |v: &[usize]| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        let mut out = Vec::new();
        for (name, v) in [
            ("dilations", &self.dilations),
            ("pads", &self.pads),
            ("strides", &self.strides),
        ] {
            if !v.is_empty() {
                out.push((name.to_string(), ints(v)));
            }
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let image = sizes(input(inputs, 1, "image_shape")?, "image_shape")?;
        let block = sizes(input(inputs, 2, "block_shape")?, "block_shape")?;
        let plan = self.plan(x.shape(), image, block)?;
        Ok(vec![self.run(x, &plan)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "Col2Im";
        let x = required(inputs, 0, OP, "input")?;
        expect_dtype(OP, x, "input", &[DType::F32])?;
        let img = required(inputs, 1, OP, "image_shape")?;
        let blk = required(inputs, 2, OP, "block_shape")?;
        expect_dtype(OP, img, "image_shape", &[DType::I64])?;
        expect_dtype(OP, blk, "block_shape", &[DType::I64])?;
        if let Some(r) = x.rank().filter(|&r| r != 3) {
            return Err(fact_error(
                OP,
                format!("input must be [N, C * prod(block), L], got rank {r}"),
            ));
        }
        let (ic, bc) = (constant(constants, 1), constant(constants, 2));
        if let (Some(ic), Some(bc), Some(xs)) = (ic, bc, x.concrete_shape()) {
            let plan = self.plan(&xs, sizes(ic, "image_shape")?, sizes(bc, "block_shape")?)?;
            let mut shape = vec![xs[0], plan.channels];
            shape.extend_from_slice(&plan.image);
            return Ok(vec![ValueFact::concrete(DType::F32, &shape)]);
        }
        let channels = match (x.dim(1).known(), bc.map(|b| sizes(b, "block_shape")).transpose()?) {
            (Some(c), Some(b)) => DimFact::Known(c / b.iter().product::<usize>().max(1)),
            _ => DimFact::Unknown,
        };
        let spatial: Option<Vec<DimFact>> = match ic {
            Some(t) => Some(sizes(t, "image_shape")?.into_iter().map(DimFact::Known).collect()),
            None => img
                .dim(0)
                .known()
                .or_else(|| blk.dim(0).known())
                .map(|r| vec![DimFact::Unknown; r]),
        };
        Ok(vec![ValueFact::new(
            Some(DType::F32),
            spatial.map(|s| {
                let mut d = vec![x.dim(0), channels];
                d.extend(s);
                d
            }),
        )])
    }
}
