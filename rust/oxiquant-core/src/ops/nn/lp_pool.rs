//! LpPool (1-D to 3-D) and GlobalLpPool: the p-norm of each window, `(sum |x|^p)^(1/p)`
//! (padding adds nothing).

use super::conv::spatial;
use super::global_facts;
use super::pool::Pool;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, required};
use crate::ops::{input, FromOnnx, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct LpPool {
    pub p: i64,
    /// The window (LpPool); `None` for GlobalLpPool.
    pub window: Option<Pool>,
}

/// The p-norm of `values` (accumulated in f64).
fn lp_norm(values: impl Iterator<Item = f32>, p: i64) -> f32 {
    let sum: f64 = values.map(|v| (v.abs() as f64).powi(p as i32)).sum();
    sum.powf(1.0 / p as f64) as f32
}

impl LpPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let xv = x.as_slice::<f32>()?;
        let xs = x.shape();
        let Some(pool) = &self.window else {
            if xs.len() < 3 {
                return Err(Error::shape(format!(
                    "GlobalLpPool needs an input [N, C, spatial...], got {xs:?}"
                )));
            }
            let plane: usize = xs[2..].iter().product();
            let y: Vec<f32> = if plane == 0 {
                vec![0.0; xs[0] * xs[1]]
            } else {
                xv.chunks(plane).map(|c| lp_norm(c.iter().copied(), self.p)).collect()
            };
            let mut shape = vec![xs[0], xs[1]];
            shape.extend(std::iter::repeat_n(1, xs.len() - 2));
            return Ok(vec![Tensor::from_vec(shape, y)?]);
        };
        if pool.kernel_shape.len() == 3 {
            return Ok(vec![lp_pool_nd(pool, x, self.p)?]);
        }
        let plan = pool.plan(xs)?;
        let (h, w, win) = (plan.h, plan.w, plan.win);
        let [oh, ow] = plan.out;
        let mut y = Vec::with_capacity(plan.planes * oh * ow);
        for plane in xv.chunks(h * w).take(plan.planes) {
            for oy in 0..oh {
                for ox in 0..ow {
                    let taps = (0..win.kernel[0]).flat_map(|i| (0..win.kernel[1]).map(move |j| (i, j)));
                    let vals = taps.filter_map(|(i, j)| {
                        let iy = (oy * win.strides[0] + i * win.dilations[0]).checked_sub(win.pads[0])?;
                        let ix = (ox * win.strides[1] + j * win.dilations[1]).checked_sub(win.pads[1])?;
                        (iy < h && ix < w).then(|| plane[iy * w + ix])
                    });
                    y.push(lp_norm(vals, self.p));
                }
            }
        }
        Ok(vec![Tensor::from_vec(plan.shape, y)?])
    }
}

/// LpPool over any number of spatial axes (3-D), one output at a time; taps in the padding
/// add nothing.
fn lp_pool_nd(pool: &Pool, x: &Tensor, p: i64) -> Result<Tensor> {
    let xs = x.shape();
    let shape = pool
        .facts("LpPool", &ValueFact::of_tensor(x))?
        .concrete_shape()
        .ok_or_else(|| Error::shape(format!("LpPool: no output shape for input {xs:?}")))?;
    let r = pool.kernel_shape.len();
    let strides = spatial(&pool.strides, r, "strides")?;
    let dilations = spatial(&pool.dilations, r, "dilations")?;
    let pads = pool
        .padding
        .resolve(&xs[2..], &pool.kernel_shape, &strides, &dilations)?;
    crate::tensor::check_alloc(&shape, 4)?;
    let xv = x.as_slice::<f32>()?;
    let (inp, out) = (&xs[2..], &shape[2..]);
    let (in_st, out_st, k_st) = (strides_of(inp), strides_of(out), strides_of(&pool.kernel_shape));
    let plane: usize = inp.iter().product();
    let out_plane: usize = out.iter().product();
    let taps: usize = pool.kernel_shape.iter().product();
    let mut y = Vec::with_capacity(xs[0] * xs[1] * out_plane);
    for img in xv.chunks(plane.max(1)).take(xs[0] * xs[1]) {
        for o in 0..out_plane {
            let vals = (0..taps).filter_map(|t| {
                let mut at = 0;
                for d in 0..r {
                    let (od, kd) = ((o / out_st[d]) % out[d], (t / k_st[d]) % pool.kernel_shape[d]);
                    let i = (od * strides[d] + kd * dilations[d]).checked_sub(pads[d])?;
                    if i >= inp[d] {
                        return None;
                    }
                    at += i * in_st[d];
                }
                Some(img[at])
            });
            y.push(lp_norm(vals, p));
        }
    }
    Tensor::from_vec(shape, y)
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    crate::tensor::strides(shape)
}

impl FromOnnx for LpPool {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let p = a.int("p", 2)?;
        if !(1..=64).contains(&p) {
            return Err(a.unsupported(format!("p = {p} (1 to 64 are supported)")));
        }
        let window = if cx.op_type == "LpPool" {
            let pool = Pool::parse(a, false)?;
            Some(pool)
        } else {
            None
        };
        Ok(LpPool { p, window })
    }
}

impl Op for LpPool {
    fn op_type(&self) -> &'static str {
        if self.window.is_some() {
            "LpPool"
        } else {
            "GlobalLpPool"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut out = self.window.as_ref().map(Pool::attrs).unwrap_or_default();
        if self.p != 2 {
            out.push(("p".into(), AttrValue::Int(self.p)));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "X")?;
        expect_dtype(op, x, "X", &[DType::F32])?;
        Ok(vec![match &self.window {
            Some(pool) => pool.facts(op, x)?,
            None => global_facts(op, false, x)?,
        }])
    }
    fn sign_rule(&self, _n: &crate::ops::NodeFacts) -> SignRule {
        SignRule::NonNegative
    }
}
