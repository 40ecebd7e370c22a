//! DeformConv (opset 19, 2-D): a convolution whose every kernel tap samples the input at its
//! place plus a learned offset (bilinear, zero outside the image), optionally scaled by a
//! mask. Inputs X [N, C, H, W], W [OC, C / group, kH, kW], offset
//! [N, offset_group * 2 * kH * kW, oH, oW] ((dy, dx) per tap), B [OC], mask
//! [N, offset_group * kH * kW, oH, oW].

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required};
use crate::ops::{DataInputs, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct DeformConv {
    pub dilations: [usize; 2],
    pub group: usize,
    /// From W when not given.
    pub kernel_shape: Option<[usize; 2]>,
    pub offset_group: usize,
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub strides: [usize; 2],
}

impl FromOnnx for DeformConv {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let two = |name: &str, n: usize, default: usize| -> Result<Vec<usize>> {
            match a.usizes_opt(name)? {
                None => Ok(vec![default; n]),
                Some(v) if v.len() == n => Ok(v),
                Some(v) => Err(a.unsupported(format!(
                    "{name} {v:?} (only 2-D deformable convolution is supported: {n} values)"
                ))),
            }
        };
        let dil = two("dilations", 2, 1)?;
        let st = two("strides", 2, 1)?;
        let pads = two("pads", 4, 0)?;
        let kernel_shape = match a.usizes_opt("kernel_shape")? {
            None => None,
            Some(k) if k.len() == 2 => Some([k[0], k[1]]),
            Some(k) => return Err(a.unsupported(format!("kernel_shape {k:?} (only 2-D is supported)"))),
        };
        let pos = |name: &str| -> Result<usize> {
            let v = a.int(name, 1)?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| a.unsupported(format!("{name} = {v} (must be > 0)")))
        };
        if dil.contains(&0) || st.contains(&0) {
            return Err(a.unsupported("a dilation or stride of 0"));
        }
        Ok(DeformConv {
            dilations: [dil[0], dil[1]],
            group: pos("group")?,
            kernel_shape,
            offset_group: pos("offset_group")?,
            pads: [pads[0], pads[1], pads[2], pads[3]],
            strides: [st[0], st[1]],
        })
    }
}

/// Bilinear sample of `img` [h, w] at (y, x), zero outside.
fn bilinear(img: &[f32], h: usize, w: usize, y: f32, x: f32) -> f32 {
    if !(y > -1.0 && y < h as f32 && x > -1.0 && x < w as f32) {
        return 0.0;
    }
    let (y0, x0) = (y.floor(), x.floor());
    let (dy, dx) = (y - y0, x - x0);
    let (y0, x0) = (y0 as i64, x0 as i64);
    let at = |yy: i64, xx: i64| -> f32 {
        if (0..h as i64).contains(&yy) && (0..w as i64).contains(&xx) {
            img[yy as usize * w + xx as usize]
        } else {
            0.0
        }
    };
    (1.0 - dy) * ((1.0 - dx) * at(y0, x0) + dx * at(y0, x0 + 1))
        + dy * ((1.0 - dx) * at(y0 + 1, x0) + dx * at(y0 + 1, x0 + 1))
}

impl DeformConv {
    /// The output size along an axis, if the window fits.
    fn out_len(&self, d: usize, input: usize, kernel: usize) -> Option<usize> {
        let span = self.dilations[d] * (kernel.checked_sub(1)?) + 1;
        let padded = input + self.pads[d] + self.pads[d + 2];
        padded.checked_sub(span).map(|v| v / self.strides[d] + 1)
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        let get = |i: usize, name: &str| crate::ops::input(inputs, i, name);
        let (x, w, off) = (get(0, "X")?, get(1, "W")?, get(2, "offset")?);
        let b = inputs.get(3).copied().flatten();
        let mask = inputs.get(4).copied().flatten();
        let (xs, ws, os) = (x.shape(), w.shape(), off.shape());
        let bad = || {
            Error::shape(format!(
                "DeformConv needs X [N, C, H, W], W [OC, C / group, kH, kW] and offset [N, offset_group * 2 * kH * kW, oH, oW] that agree, got X {xs:?}, W {ws:?}, offset {os:?}"
            ))
        };
        if xs.len() != 4 || ws.len() != 4 || os.len() != 4 {
            return Err(bad());
        }
        let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
        let (oc, kh, kw) = (ws[0], ws[2], ws[3]);
        let (g, og) = (self.group, self.offset_group);
        if self.kernel_shape.is_some_and(|k| k != [kh, kw]) {
            return Err(bad());
        }
        let (oh, ow) = match (self.out_len(0, h, kh), self.out_len(1, wd, kw)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(bad()),
        };
        let taps = kh * kw;
        if c != ws[1] * g || !oc.is_multiple_of(g) || !c.is_multiple_of(og) || os != [n, og * 2 * taps, oh, ow] {
            return Err(bad());
        }
        if let Some(m) = mask {
            if m.shape() != [n, og * taps, oh, ow] {
                return Err(Error::shape(format!(
                    "DeformConv: mask must be {:?}, got {:?}",
                    [n, og * taps, oh, ow],
                    m.shape()
                )));
            }
        }
        if let Some(b) = b {
            if b.shape() != [oc] {
                return Err(Error::shape(format!(
                    "DeformConv: B must be [{oc}], got {:?}",
                    b.shape()
                )));
            }
        }
        let (xv, wv, ov) = (x.as_slice::<f32>()?, w.as_slice::<f32>()?, off.as_slice::<f32>()?);
        let mv = mask.map(|m| m.as_slice::<f32>()).transpose()?;
        let bv = b.map(|b| b.as_slice::<f32>()).transpose()?;
        let (icg, ocg, ico) = (c / g, oc / g, c / og);
        let plane = oh * ow;
        // The sampled columns of one image: [C * taps, oH * oW] (im2col with offsets).
        let mut cols = vec![0.0f32; c * taps * plane];
        let mut y = vec![0.0f32; n * oc * plane];
        for bi in 0..n {
            for ci in 0..c {
                let img = &xv[(bi * c + ci) * h * wd..][..h * wd];
                let gi = ci / ico;
                for k in 0..taps {
                    let (ki, kj) = (k / kw, k % kw);
                    let dy_ch = &ov[((bi * og + gi) * 2 * taps + 2 * k) * plane..][..plane];
                    let dx_ch = &ov[((bi * og + gi) * 2 * taps + 2 * k + 1) * plane..][..plane];
                    let m_ch = mv.map(|m| &m[((bi * og + gi) * taps + k) * plane..][..plane]);
                    let col = &mut cols[(ci * taps + k) * plane..][..plane];
                    for p in 0..plane {
                        let (i, j) = (p / ow, p % ow);
                        let yy = (i * self.strides[0] + ki * self.dilations[0]) as f32 - self.pads[0] as f32 + dy_ch[p];
                        let xx = (j * self.strides[1] + kj * self.dilations[1]) as f32 - self.pads[1] as f32 + dx_ch[p];
                        let v = bilinear(img, h, wd, yy, xx);
                        col[p] = m_ch.map_or(v, |m| v * m[p]);
                    }
                }
            }
            for o in 0..oc {
                let gi = o / ocg;
                let out = &mut y[(bi * oc + o) * plane..][..plane];
                out.fill(bv.map_or(0.0, |b| b[o]));
                for cl in 0..icg * taps {
                    let wt = wv[o * icg * taps + cl];
                    let col = &cols[((gi * icg) * taps + cl) * plane..][..plane];
                    for (a, &v) in out.iter_mut().zip(col) {
                        *a += wt * v;
                    }
                }
            }
        }
        Tensor::from_vec(vec![n, oc, oh, ow], y)
    }
}

impl Op for DeformConv {
    fn op_type(&self) -> &'static str {
        "DeformConv"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let ints = |v: &[usize]| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        let mut out = Vec::new();
        if self.dilations != [1, 1] {
            out.push(("dilations".into(), ints(&self.dilations)));
        }
        if self.group != 1 {
            out.push(("group".into(), AttrValue::Int(self.group as i64)));
        }
        if let Some(k) = self.kernel_shape {
            out.push(("kernel_shape".into(), ints(&k)));
        }
        if self.offset_group != 1 {
            out.push(("offset_group".into(), AttrValue::Int(self.offset_group as i64)));
        }
        if self.pads != [0; 4] {
            out.push(("pads".into(), ints(&self.pads)));
        }
        if self.strides != [1, 1] {
            out.push(("strides".into(), ints(&self.strides)));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.run(inputs)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "DeformConv";
        let x = required(inputs, 0, OP, "X")?;
        let w = required(inputs, 1, OP, "W")?;
        let off = required(inputs, 2, OP, "offset")?;
        for (f, name) in [(x, "X"), (w, "W"), (off, "offset")] {
            expect_dtype(OP, f, name, &[DType::F32])?;
            if f.rank().is_some_and(|r| r != 4) {
                return Err(fact_error(OP, format!("{name} must be 4-D, got {}", f.shape_string())));
            }
        }
        for (i, name) in [(3, "B"), (4, "mask")] {
            if let Some(f) = optional(inputs, i) {
                expect_dtype(OP, f, name, &[DType::F32])?;
            }
        }
        // The output's spatial size is the offset's (eval checks it against the window).
        let spatial = |d: usize| match off.dim(d) {
            DimFact::Unknown => {
                match (
                    x.dim(d).known(),
                    self.kernel_shape.map(|k| k[d - 2]).or(w.dim(d).known()),
                ) {
                    (Some(i), Some(k)) => self.out_len(d - 2, i, k).map_or(DimFact::Unknown, DimFact::Known),
                    _ => DimFact::Unknown,
                }
            }
            known => known,
        };
        let n = match off.dim(0) {
            DimFact::Unknown => x.dim(0),
            d => d,
        };
        Ok(vec![ValueFact::new(
            Some(DType::F32),
            Some(vec![n, w.dim(0), spatial(2), spatial(3)]),
        )])
    }
    fn data_inputs(&self) -> DataInputs {
        // The offsets and the mask are activations (computed by a convolution of X).
        DataInputs::All
    }
}
