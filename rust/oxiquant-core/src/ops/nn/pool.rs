//! MaxPool and AveragePool (max pooling also on 8-bit integers, as QOperator models pool).

use super::conv::{spatial, window_2d, window_facts, Padding};
use crate::error::{Error, Result};
use crate::kernels::pool::{pool2d, PoolKind};
use crate::onnx::attrs::{AttrReader, AttrValue};
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub max: bool,
    pub kernel_shape: Vec<usize>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    pub padding: Padding,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl Pool {
    pub fn parse(a: &AttrReader<'_>, max: bool) -> Result<Pool> {
        let kernel_shape = a
            .usizes_opt("kernel_shape")?
            .ok_or_else(|| Error::format(format!("node '{}' ({}): kernel_shape is required", a.node, a.op)))?;
        if !(1..=3).contains(&kernel_shape.len()) {
            return Err(a.unsupported(format!(
                "{}-D pooling (only 1-D, 2-D and 3-D are supported)",
                kernel_shape.len()
            )));
        }
        if kernel_shape.contains(&0) {
            return Err(Error::format(format!(
                "node '{}' ({}): kernel_shape {kernel_shape:?} must be positive",
                a.node, a.op
            )));
        }
        if max {
            // storage_order only changes the optional Indices output, which is not produced.
            a.ignore(&["storage_order"]);
        }
        Ok(Pool {
            max,
            kernel_shape,
            strides: a.usizes_opt("strides")?,
            dilations: a.usizes_opt("dilations")?,
            padding: Padding::parse(a)?,
            ceil_mode: a.int("ceil_mode", 0)? != 0,
            count_include_pad: !max && a.int("count_include_pad", 0)? != 0,
        })
    }

    pub fn attrs(&self) -> Vec<(String, AttrValue)> {
        let ints = |v: &Vec<usize>| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        let mut out = vec![("kernel_shape".to_string(), ints(&self.kernel_shape))];
        if let Some(s) = &self.strides {
            out.push(("strides".into(), ints(s)));
        }
        if let Some(d) = &self.dilations {
            if d.iter().any(|&x| x != 1) {
                out.push(("dilations".into(), ints(d)));
            }
        }
        self.padding.to_attrs(&mut out);
        if self.ceil_mode {
            out.push(("ceil_mode".into(), AttrValue::Int(1)));
        }
        if self.count_include_pad {
            out.push(("count_include_pad".into(), AttrValue::Int(1)));
        }
        out
    }

    /// Resolves the window for input shape `xs`: `(planes, h, w, window, out, output shape)`.
    pub fn plan(&self, xs: &[usize]) -> Result<PoolPlan> {
        let r = self.kernel_shape.len();
        if !(r == 1 || r == 2) || xs.len() != r + 2 {
            return Err(Error::shape(format!(
                "pooling supports 1-D and 2-D inputs [N, C, (H,) W]; got input {xs:?} with kernel {:?}",
                self.kernel_shape
            )));
        }
        let strides = spatial(&self.strides, r, "strides")?;
        let dilations = spatial(&self.dilations, r, "dilations")?;
        let pads = self
            .padding
            .resolve(&xs[2..], &self.kernel_shape, &strides, &dilations)?;
        let win = window_2d(&self.kernel_shape, &strides, &dilations, &pads);
        let (h, w) = if r == 1 { (1, xs[2]) } else { (xs[2], xs[3]) };
        let out = win.output_size(h, w, self.ceil_mode).ok_or_else(|| {
            Error::shape(format!(
                "input {xs:?} is smaller than the pooling window {:?} (or the window size overflows)",
                self.kernel_shape
            ))
        })?;
        let mut shape = vec![xs[0], xs[1]];
        if r == 1 {
            shape.push(out[1]);
        } else {
            shape.extend_from_slice(&out);
        }
        let kind = if self.max {
            PoolKind::Max
        } else {
            PoolKind::Avg {
                count_include_pad: self.count_include_pad,
            }
        };
        crate::tensor::check_alloc(&[xs[0], xs[1], out[0], out[1]], 4)?;
        Ok(PoolPlan {
            planes: xs[0] * xs[1],
            h,
            w,
            win,
            out,
            shape,
            kind,
        })
    }

    /// The output of `plan` as far as `x` tells: `[N, C, spatial...]`, of the input's dtype
    /// (float32; max pooling also uint8 and int8), named `op` in errors.
    pub(crate) fn facts(&self, op: &'static str, x: &ValueFact) -> Result<ValueFact> {
        let r = self.kernel_shape.len();
        if !(1..=3).contains(&r) || x.rank().is_some_and(|xr| xr != r + 2) {
            return Err(fact_error(
                op,
                format!(
                    "supports 1-D, 2-D and 3-D inputs [N, C, (D, H,) W]; got input {x} with kernel {:?}",
                    self.kernel_shape
                ),
            ));
        }
        let dtype = if self.max && r < 3 {
            expect_dtype(op, x, "X", &[DType::F32, DType::U8, DType::I8])?;
            x.dtype
        } else {
            expect_dtype(op, x, "X", &[DType::F32])?;
            Some(DType::F32)
        };
        let dims: Vec<_> = (2..r + 2).map(|d| x.dim(d)).collect();
        let mut shape = vec![x.dim(0), x.dim(1)];
        if r < 3 {
            shape.extend(window_facts(
                op,
                &dims,
                &self.kernel_shape,
                &self.strides,
                &self.dilations,
                &self.padding,
                self.ceil_mode,
            )?);
        } else {
            // Each output size depends on its own axis only: one 1-D window per axis.
            let strides = spatial(&self.strides, r, "strides").map_err(|e| fact_error(op, e.to_string()))?;
            let dilations = spatial(&self.dilations, r, "dilations").map_err(|e| fact_error(op, e.to_string()))?;
            for d in 0..r {
                shape.extend(window_facts(
                    op,
                    &dims[d..d + 1],
                    &self.kernel_shape[d..d + 1],
                    &Some(vec![strides[d]]),
                    &Some(vec![dilations[d]]),
                    &axis_padding(&self.padding, d, r).map_err(|e| fact_error(op, e.to_string()))?,
                    self.ceil_mode,
                )?);
            }
        }
        Ok(ValueFact::new(dtype, Some(shape)))
    }

    pub fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        if self.kernel_shape.len() == 3 {
            return Ok(vec![self.run_nd(x)?]);
        }
        let p = self.plan(x.shape())?;
        let y = pool2d(x.as_slice::<f32>()?, p.planes, p.h, p.w, &p.win, p.out, p.kind);
        Ok(vec![Tensor::from_vec(p.shape, y)?])
    }
}

impl Pool {
    /// Pooling over any number of spatial axes (3-D pooling), one output at a time: float32
    /// only (3-D pooling of quantized activations runs as a float island).
    fn run_nd(&self, x: &Tensor) -> Result<Tensor> {
        let xs = x.shape();
        let r = self.kernel_shape.len();
        if xs.len() != r + 2 {
            return Err(Error::shape(format!(
                "{}-D pooling expects an input [N, C, {r} spatial dims]; got input {xs:?} with kernel {:?}",
                r, self.kernel_shape
            )));
        }
        let strides = spatial(&self.strides, r, "strides")?;
        let dilations = spatial(&self.dilations, r, "dilations")?;
        let pads = self
            .padding
            .resolve(&xs[2..], &self.kernel_shape, &strides, &dilations)?;
        let mut out = Vec::with_capacity(r);
        for d in 0..r {
            let win = window_2d(
                &self.kernel_shape[d..d + 1],
                &strides[d..d + 1],
                &dilations[d..d + 1],
                &[pads[d], pads[d + r]],
            );
            let o = win.output_size(1, xs[d + 2], self.ceil_mode).ok_or_else(|| {
                Error::shape(format!(
                    "input {xs:?} is smaller than the pooling window {:?} (or the window size overflows)",
                    self.kernel_shape
                ))
            })?;
            out.push(o[1]);
        }
        let mut shape = vec![xs[0], xs[1]];
        shape.extend_from_slice(&out);
        crate::tensor::check_alloc(&shape, 4)?;
        let geometry = NdWindow {
            input: xs[2..].to_vec(),
            out,
            kernel: self.kernel_shape.clone(),
            strides,
            dilations,
            pads,
        };
        let xv = x.as_slice::<f32>()?;
        let y = pool_nd(xv, xs[0] * xs[1], &geometry, self.max, self.count_include_pad);
        Tensor::from_vec(shape, y)
    }
}

/// The pads of spatial axis `d` (of `r`) alone, as a 1-D padding.
fn axis_padding(padding: &Padding, d: usize, r: usize) -> Result<Padding> {
    match padding {
        Padding::Explicit(p) if p.is_empty() => Ok(Padding::Explicit(vec![])),
        Padding::Explicit(p) if p.len() == 2 * r => Ok(Padding::Explicit(vec![p[d], p[d + r]])),
        Padding::Explicit(p) => Err(Error::shape(format!(
            "pads {p:?} should have {} values for {r} spatial dims",
            2 * r
        ))),
        other => Ok(other.clone()),
    }
}

/// A window over `input.len()` spatial axes; pads are all begins, then all ends.
struct NdWindow {
    input: Vec<usize>,
    out: Vec<usize>,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
}

/// Advances the row-major multi-index `idx` within `bounds`; false once it wraps around.
fn next_index(idx: &mut [usize], bounds: &[usize]) -> bool {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < bounds[d] {
            return true;
        }
        idx[d] = 0;
    }
    false
}

/// N-D max or average pooling of `planes` planes, straight from the definition: max ignores
/// the padding (NaN propagates); average divides by the real elements, or with
/// `count_include_pad` by the window clipped to the padded extent.
fn pool_nd(x: &[f32], planes: usize, g: &NdWindow, max: bool, count_include_pad: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let r = g.input.len();
    let plane_in: usize = g.input.iter().product();
    let plane_out: usize = g.out.iter().product();
    let mut y = vec![0f32; planes * plane_out];
    if plane_out == 0 || r == 0 {
        return y;
    }
    y.par_chunks_mut(plane_out).enumerate().for_each(|(p, o)| {
        let plane = &x[p * plane_in..(p + 1) * plane_in];
        let mut oi = vec![0usize; r];
        let mut ki = vec![0usize; r];
        for v in o.iter_mut() {
            let start: Vec<isize> = (0..r)
                .map(|d| (oi[d] * g.strides[d]) as isize - g.pads[d] as isize)
                .collect();
            let mut m = f32::NEG_INFINITY;
            let mut sum = 0f64;
            let mut count = 0usize;
            let mut padded = 0usize;
            ki.iter_mut().for_each(|k| *k = 0);
            loop {
                let mut flat = 0usize;
                let mut inside = true;
                let mut in_padded = true;
                for d in 0..r {
                    let pos = start[d] + (ki[d] * g.dilations[d]) as isize;
                    if pos < -(g.pads[d] as isize) || pos >= (g.input[d] + g.pads[d + r]) as isize {
                        in_padded = false;
                    }
                    if pos < 0 || pos >= g.input[d] as isize {
                        inside = false;
                    } else {
                        flat = flat * g.input[d] + pos as usize;
                    }
                }
                if in_padded {
                    padded += 1;
                }
                if inside {
                    let xv = plane[flat];
                    if xv > m || xv.is_nan() {
                        m = xv;
                    }
                    sum += f64::from(xv);
                    count += 1;
                }
                if !next_index(&mut ki, &g.kernel) {
                    break;
                }
            }
            *v = if max {
                m
            } else {
                let divisor = if count_include_pad { padded.max(1) } else { count };
                if divisor == 0 {
                    0.0
                } else {
                    (sum / divisor as f64) as f32
                }
            };
            next_index(&mut oi, &g.out);
        }
    });
    y
}

/// A pooling window resolved for one input shape.
pub struct PoolPlan {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub win: crate::kernels::conv::Window2d,
    pub out: [usize; 2],
    pub shape: Vec<usize>,
    pub kind: PoolKind,
}

/// Whether the first input is an 8-bit integer tensor.
pub(crate) fn is_8bit(inputs: &[Option<&Tensor>]) -> bool {
    matches!(
        inputs.first().copied().flatten().map(Tensor::dtype),
        Some(crate::tensor::DType::U8 | crate::tensor::DType::I8)
    )
}

impl FromOnnx for Pool {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Pool::parse(cx.attrs, cx.op_type == "MaxPool")
    }
}

impl Op for Pool {
    fn op_type(&self) -> &'static str {
        if self.max {
            "MaxPool"
        } else {
            "AveragePool"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.attrs()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if self.max && self.kernel_shape.len() < 3 && is_8bit(inputs) {
            return crate::int::IntOp::Pool(self.clone()).eval(inputs);
        }
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        Ok(vec![self.facts(op, required(inputs, 0, op, "X")?)?])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        if self.kernel_shape.len() < 3 {
            Class::Seamless
        } else {
            Class::FloatIsland("3-D pooling runs on float32 only".into())
        }
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::FollowsInputs
    }
    fn needs_round(&self) -> bool {
        !self.max
    }
}
