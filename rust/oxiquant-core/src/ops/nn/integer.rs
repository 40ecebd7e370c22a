//! The ops of models quantized dynamically (onnxruntime's `quantize_dynamic`):
//! DynamicQuantizeLinear (a float tensor to uint8 with the scale and zero point of its own
//! range), MatMulInteger and ConvInteger (products of uint8/int8 operands minus their zero
//! points, accumulated exactly in int32). Such a model is `DynamicQuantizeLinear ->
//! MatMulInteger/ConvInteger -> Cast -> Mul`; all three are computed exactly as onnxruntime
//! computes them. For the PTQ they are not float activations: a chain of them in a model
//! quantized again stays as it is, a float island (the integer values pass through untouched,
//! the float `Mul` after the `Cast` is quantized as any activation).

use crate::error::{Error, Result};
use crate::kernels::elementwise::broadcast_shape;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, in_op, optional, required};
use crate::ops::logic::broadcast_offsets;
use crate::ops::nn::matmul_facts;
use crate::ops::{input, Conv, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{numel, DType, Tensor, TensorData};

// ---- DynamicQuantizeLinear ----

#[derive(Debug, Clone, PartialEq)]
pub struct DynamicQuantizeLinear;

impl FromOnnx for DynamicQuantizeLinear {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(DynamicQuantizeLinear)
    }
}

/// The uint8 scale and zero point of values spanning `[lo, hi]` (widened to include 0), as
/// onnxruntime computes them: scale `(hi - lo) / 255` (1 for an all-zero range), zero point
/// `round_half_even(clamp(-lo / scale, 0, 255))`.
pub fn dynamic_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
    let zp = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
    (scale, zp as u8)
}

impl Op for DynamicQuantizeLinear {
    fn op_type(&self) -> &'static str {
        "DynamicQuantizeLinear"
    }
    fn num_outputs(&self) -> usize {
        3
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "x")?;
        let v = x.as_slice::<f32>()?;
        let (lo, hi) = v.iter().fold((0f32, 0f32), |(lo, hi), &a| (lo.min(a), hi.max(a)));
        let (scale, zp) = dynamic_params(lo, hi);
        let zf = f32::from(zp);
        let y: Vec<u8> = v
            .iter()
            .map(|&a| ((a / scale).round_ties_even() + zf).clamp(0.0, 255.0) as u8)
            .collect();
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), y)?,
            Tensor::scalar(scale),
            Tensor::scalar(zp),
        ])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "DynamicQuantizeLinear", "x")?;
        expect_dtype("DynamicQuantizeLinear", x, "x", &[DType::F32])?;
        Ok(vec![
            ValueFact::new(Some(DType::U8), x.shape.clone()),
            ValueFact::concrete(DType::F32, &[]),
            ValueFact::concrete(DType::U8, &[]),
        ])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

// ---- shared: integer operands minus their zero points ----

/// The elements of a uint8 or int8 tensor as i32.
fn int_values(t: &Tensor, op: &str, name: &str) -> Result<Vec<i32>> {
    Ok(match t.data() {
        TensorData::U8(v) => v.iter().map(|&a| i32::from(a)).collect(),
        TensorData::I8(v) => v.iter().map(|&a| i32::from(a)).collect(),
        _ => {
            return Err(Error::shape(format!(
                "{op}: {name} must be uint8 or int8, got {} {:?}",
                t.dtype(),
                t.shape()
            )))
        }
    })
}

/// `x - zero` with the zero point broadcast to `x`'s shape (`zero_shape` is the zero point's
/// shape as the op reads it); the zero point must have `x`'s dtype.
fn minus_zero(x: &Tensor, zero: Option<&Tensor>, zero_shape: &[usize], op: &str, name: &str) -> Result<Vec<i32>> {
    let mut v = int_values(x, op, name)?;
    if let Some(z) = zero {
        if z.dtype() != x.dtype() {
            return Err(Error::shape(format!(
                "{op}: the zero point of {name} must be {} like {name}, got {}",
                x.dtype(),
                z.dtype()
            )));
        }
        let zv = int_values(z, op, name)?;
        let fits = broadcast_shape(zero_shape, x.shape()).is_ok_and(|s| s == x.shape());
        if !fits {
            return Err(Error::shape(format!(
                "{op}: the zero point of {name} of shape {:?} does not fit {name} of shape {:?}",
                z.shape(),
                x.shape()
            )));
        }
        for (a, off) in v.iter_mut().zip(broadcast_offsets(zero_shape, x.shape())) {
            *a -= zv[off];
        }
    }
    Ok(v)
}

/// Refuses a known dtype other than uint8 and int8.
fn expect_int8(op: &str, f: &ValueFact, name: &str) -> Result<()> {
    expect_dtype(op, f, name, &[DType::U8, DType::I8])
}

/// The facts with the dtype made float32 (to reuse a float op's shape rules).
fn as_f32(f: Option<&ValueFact>) -> Option<ValueFact> {
    f.map(|f| ValueFact::new(Some(DType::F32), f.shape.clone()))
}

// ---- MatMulInteger ----

#[derive(Debug, Clone, PartialEq)]
pub struct MatMulInteger;

impl FromOnnx for MatMulInteger {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(MatMulInteger)
    }
}

/// numpy `matmul` of int32 operands of shapes `sa` and `sb` (rank >= 2, `k` matching),
/// leading dimensions broadcast, wrapping on overflow as int32 accumulators do.
fn matmul_i32(a: &[i32], sa: &[usize], b: &[i32], sb: &[usize]) -> Result<(Vec<usize>, Vec<i32>)> {
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let batch = broadcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    let nb = numel(&batch);
    let oa = broadcast_offsets(&sa[..sa.len() - 2], &batch);
    let ob = broadcast_offsets(&sb[..sb.len() - 2], &batch);
    crate::tensor::check_alloc(&[nb, m, n], 4)?;
    let mut y = vec![0i32; nb * m * n];
    for bi in 0..nb {
        let (av, bv) = (&a[oa[bi] * m * k..], &b[ob[bi] * k * n..]);
        let out = &mut y[bi * m * n..(bi + 1) * m * n];
        for i in 0..m {
            for p in 0..k {
                let x = av[i * k + p];
                if x == 0 {
                    continue;
                }
                for j in 0..n {
                    out[i * n + j] = out[i * n + j].wrapping_add(x.wrapping_mul(bv[p * n + j]));
                }
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok((shape, y))
}

impl Op for MatMulInteger {
    fn op_type(&self) -> &'static str {
        "MatMulInteger"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = "MatMulInteger";
        let a = input(inputs, 0, "A")?;
        let b = input(inputs, 1, "B")?;
        if a.rank() == 0 || b.rank() == 0 {
            return Err(Error::shape(format!("{op}: operands must have rank >= 1")));
        }
        let (a1, b1) = (a.rank() == 1, b.rank() == 1);
        let mut sa = a.shape().to_vec();
        let mut sb = b.shape().to_vec();
        if a1 {
            sa.insert(0, 1);
        }
        if b1 {
            sb.push(1);
        }
        if sa[sa.len() - 1] != sb[sb.len() - 2] {
            return Err(Error::shape(format!(
                "{op}: inner dimensions differ: {:?} x {:?}",
                a.shape(),
                b.shape()
            )));
        }
        // A per-row zero point of a matrix [M, K] is a vector [M]: one per row.
        let za = inputs.get(2).copied().flatten();
        let za_shape = match za {
            Some(z) if z.rank() == 1 && a.rank() >= 2 => vec![z.len(), 1],
            Some(z) => z.shape().to_vec(),
            None => vec![],
        };
        let zb = inputs.get(3).copied().flatten();
        let zb_shape = zb.map(|z| z.shape().to_vec()).unwrap_or_default();
        let av = minus_zero(a, za, &za_shape, op, "A")?;
        let bv = minus_zero(b, zb, &zb_shape, op, "B")?;
        let (mut shape, y) = matmul_i32(&av, &sa, &bv, &sb)?;
        if b1 {
            shape.pop();
        }
        if a1 {
            let r = shape.len();
            shape.remove(r - if b1 { 1 } else { 2 });
        }
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "MatMulInteger";
        let a = required(inputs, 0, op, "A")?;
        let b = required(inputs, 1, op, "B")?;
        expect_int8(op, a, "A")?;
        expect_int8(op, b, "B")?;
        for (i, of) in [(2, a), (3, b)] {
            if let (Some(z), Some(d)) = (optional(inputs, i), of.dtype) {
                expect_dtype(op, z, "a zero point", &[d])?;
            }
        }
        let (fa, fb) = (as_f32(Some(a)), as_f32(Some(b)));
        let f = matmul_facts(op, &[fa.as_ref(), fb.as_ref()])?;
        Ok(vec![ValueFact::new(Some(DType::I32), f.shape)])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

// ---- ConvInteger ----

#[derive(Debug, Clone, PartialEq)]
pub struct ConvInteger(pub Conv);

impl FromOnnx for ConvInteger {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(ConvInteger(Conv::parse(cx.attrs)?))
    }
}

impl Op for ConvInteger {
    fn op_type(&self) -> &'static str {
        "ConvInteger"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.0.attrs()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let op = "ConvInteger";
        let x = input(inputs, 0, "x")?;
        let w = input(inputs, 1, "w")?;
        let s = self.0.geometry(x.shape(), w.shape()).map_err(in_op(op))?;
        let zx = inputs.get(2).copied().flatten();
        if let Some(z) = zx {
            if z.len() != 1 {
                return Err(Error::shape(format!(
                    "{op}: x_zero_point must be one value (per tensor), got shape {:?}",
                    z.shape()
                )));
            }
        }
        // The weight's zero point: one value, or one per output channel.
        let zw = inputs.get(3).copied().flatten();
        let zw_shape = match zw {
            Some(z) if z.len() == 1 => vec![],
            Some(z) if z.rank() == 1 && z.len() == s.m => {
                let mut v = vec![s.m];
                v.extend(std::iter::repeat_n(1, w.rank() - 1));
                v
            }
            Some(z) => {
                return Err(Error::shape(format!(
                    "{op}: w_zero_point must be one value or one per output channel ({}), got shape {:?}",
                    s.m,
                    z.shape()
                )))
            }
            None => vec![],
        };
        let zx_scalar = zx.map(|z| z.clone().reshape(vec![])).transpose()?;
        let zw_scalar = match (zw, zw_shape.is_empty()) {
            (Some(z), true) => Some(z.clone().reshape(vec![])?),
            (Some(z), false) => Some(z.clone()),
            (None, _) => None,
        };
        let xv = minus_zero(x, zx_scalar.as_ref(), &[], op, "x")?;
        let wv = minus_zero(w, zw_scalar.as_ref(), &zw_shape, op, "w")?;
        let [kh, kw] = s.win.kernel;
        let [sh, sw] = s.win.strides;
        let [dh, dw] = s.win.dilations;
        let [pt, pl, _, _] = s.win.pads;
        let [oh, ow] = s.out;
        let (cg, mg) = (s.c / s.group, s.m / s.group);
        let mut shape = vec![s.n, s.m];
        if x.rank() == 3 {
            shape.push(ow);
        } else {
            shape.extend([oh, ow]);
        }
        crate::tensor::check_alloc(&shape, 4)?;
        let mut y = vec![0i32; s.n * s.m * oh * ow];
        for n in 0..s.n {
            for m in 0..s.m {
                let g = m / mg;
                let out = &mut y[(n * s.m + m) * oh * ow..(n * s.m + m + 1) * oh * ow];
                for c in 0..cg {
                    let plane = &xv[(n * s.c + g * cg + c) * s.h * s.w..];
                    let wk = &wv[(m * cg + c) * kh * kw..];
                    for i in 0..kh {
                        for j in 0..kw {
                            let wt = wk[i * kw + j];
                            for oy in 0..oh {
                                let iy = (oy * sh + i * dh) as isize - pt as isize;
                                if iy < 0 || iy >= s.h as isize {
                                    continue;
                                }
                                for ox in 0..ow {
                                    let ix = (ox * sw + j * dw) as isize - pl as isize;
                                    if ix < 0 || ix >= s.w as isize {
                                        continue;
                                    }
                                    let a = plane[iy as usize * s.w + ix as usize];
                                    let o = &mut out[oy * ow + ox];
                                    *o = o.wrapping_add(a.wrapping_mul(wt));
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "ConvInteger";
        let x = required(inputs, 0, op, "x")?;
        let w = required(inputs, 1, op, "w")?;
        expect_int8(op, x, "x")?;
        expect_int8(op, w, "w")?;
        for (i, of) in [(2, x), (3, w)] {
            if let (Some(z), Some(d)) = (optional(inputs, i), of.dtype) {
                expect_dtype(op, z, "a zero point", &[d])?;
            }
        }
        if let Some(z) = optional(inputs, 2) {
            if z.numel().is_some_and(|n| n != 1) {
                return Err(fact_error(op, format!("x_zero_point must be one value, got {z}")));
            }
        }
        let (fx, fw) = (as_f32(Some(x)), as_f32(Some(w)));
        let f = self.0.facts(op, &[fx.as_ref(), fw.as_ref()])?;
        if let (Some(z), Some(m)) = (optional(inputs, 3), f.shape.as_ref().and_then(|s| s.get(1))) {
            if let (Some(n), DimFact::Known(m)) = (z.numel(), m) {
                if n != 1 && n != *m {
                    return Err(fact_error(
                        op,
                        format!("w_zero_point must be one value or one per output channel ({m}), got {z}"),
                    ));
                }
            }
        }
        Ok(vec![ValueFact::new(Some(DType::I32), f.shape)])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
