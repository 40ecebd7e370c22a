//! Attention (opsets 23 to 25): scaled dot-product attention over Q, K and V given 3-D
//! ([batch, seq, heads * head_size], with `q_num_heads` / `kv_num_heads`) or 4-D
//! ([batch, heads, seq, head_size]); grouped-query attention (each KV head serves
//! `q_heads / kv_heads` query heads); a boolean or additive float `attn_mask` broadcast to
//! [batch, q_heads, q_seq, kv_seq] (its last axis padded as masked when shorter); `is_causal`
//! (bottom-right aligned after the past keys); `softcap`; the key/value cache
//! (`past_key`/`past_value` in, `present_key`/`present_value` out); `qk_matmul_output` in its
//! four modes; from opset 24, `nonpad_kv_seqlen`; from opset 25, the sliding window
//! (`left_window_size`, `right_window_size`).
//!
//! A query row whose bias masks every key gives zero probabilities (and a zero output), even
//! when its scores are NaN; any other row with a NaN score is NaN, as in the softmax's
//! definition. Softmax runs in float32 (`softmax_precision` float or double).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, DType, Tensor};

/// ONNX element type codes `softmax_precision` may name: float and double.
const FLOAT: i64 = 1;
const DOUBLE: i64 = 11;

#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    pub scale: Option<f32>,
    pub is_causal: bool,
    pub q_num_heads: Option<usize>,
    pub kv_num_heads: Option<usize>,
    pub softcap: f32,
    pub qk_matmul_output_mode: i64,
    pub softmax_precision: Option<i64>,
    /// Opset 25's sliding window: keys at most `left` before and `right` after the query's
    /// position (-1: unbounded).
    pub left_window: i64,
    pub right_window: i64,
    /// Outputs the node declares (1 to 4).
    pub outputs: usize,
}

/// The sizes of one call, in the 4-D layout.
struct Dims {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_seq: usize,
    kv_seq: usize,
    past: usize,
    head: usize,
    v_head: usize,
    rank3: bool,
}

fn err(msg: impl std::fmt::Display) -> Error {
    Error::shape(format!("Attention: {msg}"))
}

/// [b, s, h * d] -> [b, h, s, d].
fn split_heads(v: &[f32], b: usize, s: usize, h: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = ((bi * s + si) * h + hi) * d;
                let dst = ((bi * h + hi) * s + si) * d;
                out[dst..dst + d].copy_from_slice(&v[src..src + d]);
            }
        }
    }
    out
}

/// Concatenates [b, h, p, d] and [b, h, s, d] on axis 2.
fn concat_seq(past: &[f32], cur: &[f32], b: usize, h: usize, p: usize, s: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(b * h * (p + s) * d);
    for bh in 0..b * h {
        out.extend_from_slice(&past[bh * p * d..][..p * d]);
        out.extend_from_slice(&cur[bh * s * d..][..s * d]);
    }
    out
}

/// The maximum of a row, NaN if any value is NaN (as numpy's).
fn nan_max(row: &[f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for &x in row {
        if x.is_nan() {
            return f32::NAN;
        }
        if x > m {
            m = x;
        }
    }
    m
}

impl Attention {
    fn dims(&self, q: &Tensor, k: &Tensor, v: &Tensor, past: Option<&Tensor>) -> Result<Dims> {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        if qs.len() != ks.len() || qs.len() != vs.len() || !(qs.len() == 3 || qs.len() == 4) {
            return Err(err(format!(
                "Q, K and V must all be 3-D or all 4-D, got {qs:?}, {ks:?}, {vs:?}"
            )));
        }
        let rank3 = qs.len() == 3;
        let (batch, q_heads, kv_heads, q_seq, kv_seq, head, k_head, v_head);
        if rank3 {
            let (Some(qh), Some(kh)) = (self.q_num_heads, self.kv_num_heads) else {
                return Err(err("3-D inputs need the q_num_heads and kv_num_heads attributes"));
            };
            if qs[2] % qh != 0 || ks[2] % kh != 0 || vs[2] % kh != 0 {
                return Err(err(format!(
                    "hidden sizes {}, {}, {} must divide by q_num_heads {qh} / kv_num_heads {kh}",
                    qs[2], ks[2], vs[2]
                )));
            }
            (batch, q_heads, kv_heads, q_seq, kv_seq) = (qs[0], qh, kh, qs[1], ks[1]);
            (head, k_head, v_head) = (qs[2] / qh, ks[2] / kh, vs[2] / kh);
            if vs[1] != kv_seq {
                return Err(err(format!("K {ks:?} and V {vs:?} differ in sequence length")));
            }
        } else {
            (batch, q_heads, kv_heads, q_seq, kv_seq) = (qs[0], qs[1], ks[1], qs[2], ks[2]);
            (head, k_head, v_head) = (qs[3], ks[3], vs[3]);
            if vs[1] != kv_heads || vs[2] != kv_seq {
                return Err(err(format!("K {ks:?} and V {vs:?} differ in heads or sequence length")));
            }
        }
        if ks[0] != batch || vs[0] != batch {
            return Err(err(format!("Q, K and V differ in batch: {qs:?}, {ks:?}, {vs:?}")));
        }
        if k_head != head {
            return Err(err(format!("Q's head size {head} differs from K's {k_head}")));
        }
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            return Err(err(format!(
                "{kv_heads} key/value heads must divide the {q_heads} query heads"
            )));
        }
        let past_len = match past {
            None => 0,
            Some(p) => {
                let s = p.shape();
                if s.len() != 4 || s[0] != batch || s[1] != kv_heads || s[3] != head {
                    return Err(err(format!(
                        "past_key has shape {s:?}, expected [{batch}, {kv_heads}, past, {head}]"
                    )));
                }
                s[2]
            }
        };
        Ok(Dims {
            batch,
            q_heads,
            kv_heads,
            q_seq,
            kv_seq,
            past: past_len,
            head,
            v_head,
            rank3,
        })
    }

    /// The additive bias [batch, q_heads, q_seq, len] of the mask, the causal frontier and
    /// the padding lengths.
    fn bias(&self, d: &Dims, mask: Option<&Tensor>, nonpad: Option<&[i64]>) -> Result<Vec<f32>> {
        let len = d.past + d.kv_seq;
        let shape = [d.batch, d.q_heads, d.q_seq, len];
        check_alloc(&shape, 4)?;
        let mut bias = vec![0f32; d.batch * d.q_heads * d.q_seq * len];
        if let Some(m) = mask {
            let ms = m.shape();
            if ms.len() > 4 {
                return Err(err(format!("attn_mask has rank {}, at most 4 expected", ms.len())));
            }
            let mut m4 = [1usize; 4];
            m4[4 - ms.len()..].copy_from_slice(ms);
            for a in 0..3 {
                if m4[a] != 1 && m4[a] != shape[a] {
                    return Err(err(format!(
                        "attn_mask of shape {ms:?} does not broadcast to {shape:?}"
                    )));
                }
            }
            if m4[3] > len {
                return Err(err(format!("attn_mask of shape {ms:?} has more than the {len} keys")));
            }
            let vals: Vec<f32> = match m.dtype() {
                DType::Bool => m
                    .as_slice::<bool>()?
                    .iter()
                    .map(|&b| if b { 0.0 } else { f32::NEG_INFINITY })
                    .collect(),
                DType::F32 => m.as_slice::<f32>()?.to_vec(),
                other => return Err(err(format!("attn_mask must be bool or float32, got {}", other.name()))),
            };
            let st = [
                if m4[0] == 1 { 0 } else { m4[1] * m4[2] * m4[3] },
                if m4[1] == 1 { 0 } else { m4[2] * m4[3] },
                if m4[2] == 1 { 0 } else { m4[3] },
            ];
            for b in 0..d.batch {
                for h in 0..d.q_heads {
                    for i in 0..d.q_seq {
                        let row = &mut bias[((b * d.q_heads + h) * d.q_seq + i) * len..][..len];
                        let src = b * st[0] + h * st[1] + i * st[2];
                        for (j, r) in row.iter_mut().enumerate() {
                            // Keys past the mask's last axis are masked.
                            *r = if j < m4[3] { vals[src + j] } else { f32::NEG_INFINITY };
                        }
                    }
                }
            }
        }
        for b in 0..d.batch {
            let offset: i64 = match nonpad {
                Some(n) if d.past == 0 => n[b] - d.q_seq as i64,
                _ => d.past as i64,
            };
            for h in 0..d.q_heads {
                for i in 0..d.q_seq {
                    let row = &mut bias[((b * d.q_heads + h) * d.q_seq + i) * len..][..len];
                    for (j, r) in row.iter_mut().enumerate() {
                        let diff = i as i64 + offset - j as i64;
                        if self.is_causal && diff < 0 {
                            *r += f32::NEG_INFINITY;
                        }
                        if (self.left_window >= 0 && diff > self.left_window)
                            || (self.right_window >= 0 && -diff > self.right_window)
                        {
                            *r += f32::NEG_INFINITY;
                        }
                        if let Some(n) = nonpad {
                            if j as i64 >= n[b] {
                                *r += f32::NEG_INFINITY;
                            }
                        }
                    }
                }
            }
        }
        Ok(bias)
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let q = input(inputs, 0, "Q")?;
        let k = input(inputs, 1, "K")?;
        let v = input(inputs, 2, "V")?;
        let get = |i: usize| inputs.get(i).copied().flatten();
        let (mask, past_k, past_v, nonpad) = (get(3), get(4), get(5), get(6));
        if past_k.is_some() != past_v.is_some() {
            return Err(err("past_key and past_value must be given together"));
        }
        if nonpad.is_some() && past_k.is_some() {
            return Err(err("nonpad_kv_seqlen cannot be combined with past_key / past_value"));
        }
        let d = self.dims(q, k, v, past_k)?;
        let len = d.past + d.kv_seq;
        if let Some(pv) = past_v {
            let want = [d.batch, d.kv_heads, d.past, d.v_head];
            if pv.shape() != want {
                return Err(err(format!("past_value has shape {:?}, expected {want:?}", pv.shape())));
            }
        }
        let nonpad = match nonpad {
            None => None,
            Some(t) => {
                let n = t.to_i64_vec()?;
                if t.shape() != [d.batch] || n.iter().any(|&x| x < 0 || x as usize > len) {
                    return Err(err(format!(
                        "nonpad_kv_seqlen {n:?} should be {} lengths of at most {len}",
                        d.batch
                    )));
                }
                Some(n)
            }
        };
        check_alloc(&[d.batch, d.q_heads, d.q_seq, len], 4)?;
        check_alloc(&[d.batch, d.kv_heads, len, d.head.max(d.v_head)], 4)?;
        let (qv, kv, vv) = (q.as_slice::<f32>()?, k.as_slice::<f32>()?, v.as_slice::<f32>()?);
        let (qh, kh, vh) = if d.rank3 {
            (
                split_heads(qv, d.batch, d.q_seq, d.q_heads, d.head),
                split_heads(kv, d.batch, d.kv_seq, d.kv_heads, d.head),
                split_heads(vv, d.batch, d.kv_seq, d.kv_heads, d.v_head),
            )
        } else {
            (qv.to_vec(), kv.to_vec(), vv.to_vec())
        };
        let (keys, values) = match (past_k, past_v) {
            (Some(pk), Some(pv)) => (
                concat_seq(
                    pk.as_slice::<f32>()?,
                    &kh,
                    d.batch,
                    d.kv_heads,
                    d.past,
                    d.kv_seq,
                    d.head,
                ),
                concat_seq(
                    pv.as_slice::<f32>()?,
                    &vh,
                    d.batch,
                    d.kv_heads,
                    d.past,
                    d.kv_seq,
                    d.v_head,
                ),
            ),
            _ => (kh, vh),
        };
        let bias = self.bias(&d, mask, nonpad.as_deref())?;
        // The scale splits over Q and K (its square root on each), as the definition does.
        let s = self.scale.unwrap_or(1.0 / (d.head as f32).sqrt()).sqrt();
        let group = d.q_heads / d.kv_heads;
        let mut qk_out = vec![0f32; bias.len()];
        let mut y = vec![0f32; d.batch * d.q_heads * d.q_seq * d.v_head];
        let mut scores = vec![0f32; len];
        let mut ks = vec![0f32; d.head];
        let mut qs = vec![0f32; d.head];
        for b in 0..d.batch {
            for h in 0..d.q_heads {
                let kvh = b * d.kv_heads + h / group;
                let kmat = &keys[kvh * len * d.head..][..len * d.head];
                let vmat = &values[kvh * len * d.v_head..][..len * d.v_head];
                for i in 0..d.q_seq {
                    let r = (b * d.q_heads + h) * d.q_seq + i;
                    for (x, &qx) in qs.iter_mut().zip(&qh[r * d.head..][..d.head]) {
                        *x = qx * s;
                    }
                    for (j, sc) in scores.iter_mut().enumerate() {
                        for (x, &kx) in ks.iter_mut().zip(&kmat[j * d.head..][..d.head]) {
                            *x = kx * s;
                        }
                        let mut acc = qs.iter().zip(&ks).map(|(a, b)| a * b).sum::<f32>();
                        if self.softcap > 0.0 {
                            acc = (acc / self.softcap).tanh() * self.softcap;
                        }
                        *sc = acc;
                    }
                    let brow = &bias[r * len..][..len];
                    let out = &mut qk_out[r * len..][..len];
                    out.copy_from_slice(&scores);
                    for (sc, &bv) in scores.iter_mut().zip(brow) {
                        *sc += bv;
                    }
                    if self.qk_matmul_output_mode == 2 {
                        out.copy_from_slice(&scores);
                    }
                    let masked = brow.iter().all(|&x| x == f32::NEG_INFINITY);
                    if masked {
                        scores.iter_mut().for_each(|x| *x = 0.0);
                    } else {
                        let mx = nan_max(&scores);
                        let mx = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
                        let mut sum = 0f32;
                        for x in scores.iter_mut() {
                            *x = (*x - mx).exp();
                            sum += *x;
                        }
                        let sum = if sum == 0.0 { 1.0 } else { sum };
                        scores.iter_mut().for_each(|x| *x /= sum);
                    }
                    if self.qk_matmul_output_mode == 3 {
                        out.copy_from_slice(&scores);
                    }
                    let yrow = &mut y[r * d.v_head..][..d.v_head];
                    for (j, &p) in scores.iter().enumerate() {
                        for (yo, &vx) in yrow.iter_mut().zip(&vmat[j * d.v_head..][..d.v_head]) {
                            *yo += p * vx;
                        }
                    }
                }
            }
        }
        let y = if d.rank3 {
            let mut t = vec![0f32; y.len()];
            for b in 0..d.batch {
                for h in 0..d.q_heads {
                    for i in 0..d.q_seq {
                        let src = ((b * d.q_heads + h) * d.q_seq + i) * d.v_head;
                        let dst = ((b * d.q_seq + i) * d.q_heads + h) * d.v_head;
                        t[dst..dst + d.v_head].copy_from_slice(&y[src..src + d.v_head]);
                    }
                }
            }
            Tensor::from_vec(vec![d.batch, d.q_seq, d.q_heads * d.v_head], t)?
        } else {
            Tensor::from_vec(vec![d.batch, d.q_heads, d.q_seq, d.v_head], y)?
        };
        let mut out = vec![y];
        if self.outputs > 1 {
            out.push(Tensor::from_vec(vec![d.batch, d.kv_heads, len, d.head], keys)?);
        }
        if self.outputs > 2 {
            out.push(Tensor::from_vec(vec![d.batch, d.kv_heads, len, d.v_head], values)?);
        }
        if self.outputs > 3 {
            out.push(Tensor::from_vec(vec![d.batch, d.q_heads, d.q_seq, len], qk_out)?);
        }
        Ok(out)
    }

    fn facts(&self, inputs: &[Option<&ValueFact>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "Attention";
        let q = required(inputs, 0, OP, "Q")?;
        let k = required(inputs, 1, OP, "K")?;
        let v = required(inputs, 2, OP, "V")?;
        for (f, n) in [(q, "Q"), (k, "K"), (v, "V")] {
            expect_dtype(OP, f, n, &[DType::F32])?;
            if f.rank().is_some_and(|r| r != 3 && r != 4) {
                return Err(fact_error(OP, format!("{n} must be 3-D or 4-D, got {f}")));
            }
        }
        if let Some(m) = optional(inputs, 3) {
            expect_dtype(OP, m, "attn_mask", &[DType::Bool, DType::F32])?;
        }
        let past = optional(inputs, 4);
        let rank = q.rank().or(k.rank()).or(v.rank());
        let known = |f: &ValueFact, i: usize| f.shape.as_ref().and_then(|s| s.get(i)).and_then(DimFact::known);
        let div = |a: Option<usize>, b: Option<usize>| match (a, b) {
            (Some(a), Some(b)) if b > 0 => Some(DimFact::Known(a / b)),
            _ => None,
        };
        let or_unknown = |x: Option<DimFact>| x.unwrap_or(DimFact::Unknown);
        let batch = [q, k, v]
            .iter()
            .find_map(|f| f.rank().map(|_| f.dim(0)))
            .unwrap_or(DimFact::Unknown);
        let (q_heads, kv_heads, q_seq, kv_seq, head, v_head) = match rank {
            Some(3) => (
                self.q_num_heads.map(DimFact::Known),
                self.kv_num_heads.map(DimFact::Known),
                q.rank().map(|_| q.dim(1)),
                k.rank().map(|_| k.dim(1)),
                div(known(q, 2), self.q_num_heads),
                div(known(v, 2), self.kv_num_heads),
            ),
            Some(_) => (
                q.rank().map(|_| q.dim(1)),
                k.rank().map(|_| k.dim(1)),
                q.rank().map(|_| q.dim(2)),
                k.rank().map(|_| k.dim(2)),
                q.rank().map(|_| q.dim(3)),
                v.rank().map(|_| v.dim(3)),
            ),
            None => (None, None, None, None, None, None),
        };
        let past_len = match past {
            None => Some(0),
            Some(p) => known(p, 2),
        };
        let len = match (past_len, &kv_seq) {
            (Some(0), Some(s)) => s.clone(),
            (Some(p), Some(DimFact::Known(s))) => DimFact::Known(p + s),
            _ => DimFact::Unknown,
        };
        let f = |s: Vec<DimFact>| ValueFact::new(Some(DType::F32), rank.map(|_| s));
        let y = match rank {
            Some(3) => {
                let hidden = match (&q_heads, &v_head) {
                    (Some(DimFact::Known(h)), Some(DimFact::Known(d))) => DimFact::Known(h * d),
                    _ => DimFact::Unknown,
                };
                vec![batch.clone(), or_unknown(q_seq.clone()), hidden]
            }
            _ => vec![
                batch.clone(),
                or_unknown(q_heads.clone()),
                or_unknown(q_seq.clone()),
                or_unknown(v_head.clone()),
            ],
        };
        let mut out = vec![f(y)];
        let f4 = |s: Vec<DimFact>| ValueFact::new(Some(DType::F32), Some(s));
        if self.outputs > 1 {
            out.push(f4(vec![
                batch.clone(),
                or_unknown(kv_heads.clone()),
                len.clone(),
                or_unknown(head),
            ]));
        }
        if self.outputs > 2 {
            out.push(f4(vec![
                batch.clone(),
                or_unknown(kv_heads),
                len.clone(),
                or_unknown(v_head),
            ]));
        }
        if self.outputs > 3 {
            out.push(f4(vec![batch, or_unknown(q_heads), or_unknown(q_seq), len]));
        }
        Ok(out)
    }
}

impl FromOnnx for Attention {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let heads = |name: &str| -> Result<Option<usize>> {
            match a.int_opt(name)? {
                None => Ok(None),
                Some(h) if h > 0 && h <= 1 << 20 => Ok(Some(h as usize)),
                Some(h) => Err(a.unsupported(format!("{name} {h} (a positive head count is expected)"))),
            }
        };
        let mode = a.int("qk_matmul_output_mode", 0)?;
        if !(0..=3).contains(&mode) {
            return Err(a.unsupported(format!("qk_matmul_output_mode {mode} (0 to 3 expected)")));
        }
        let softmax_precision = a.int_opt("softmax_precision")?;
        if let Some(p) = softmax_precision {
            if p != FLOAT && p != DOUBLE {
                return Err(a.unsupported(format!(
                    "softmax_precision {p} (only float (1) and double (11) are supported: the softmax runs in float32)"
                )));
            }
        }
        let scale = a.float_opt("scale")?;
        if scale.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
            return Err(a.unsupported(format!("scale {scale:?} (a finite non-negative scale is expected)")));
        }
        let (left_window, right_window) = if cx.opset >= 25 {
            (a.int("left_window_size", -1)?, a.int("right_window_size", -1)?)
        } else {
            (-1, -1)
        };
        if left_window < -1 || right_window < -1 {
            return Err(a.unsupported(format!(
                "window sizes {left_window}, {right_window} (-1 or non-negative expected)"
            )));
        }
        Ok(Attention {
            left_window,
            right_window,
            scale,
            is_causal: a.int("is_causal", 0)? != 0,
            q_num_heads: heads("q_num_heads")?,
            kv_num_heads: heads("kv_num_heads")?,
            softcap: a.float("softcap", 0.0)?,
            qk_matmul_output_mode: mode,
            softmax_precision,
            outputs: cx.outputs.clamp(1, 4),
        })
    }
}

impl Op for Attention {
    fn op_type(&self) -> &'static str {
        "Attention"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut out = Vec::new();
        if let Some(s) = self.scale {
            out.push(("scale".to_string(), AttrValue::Float(s)));
        }
        if self.is_causal {
            out.push(("is_causal".into(), AttrValue::Int(1)));
        }
        if let Some(h) = self.q_num_heads {
            out.push(("q_num_heads".into(), AttrValue::Int(h as i64)));
        }
        if let Some(h) = self.kv_num_heads {
            out.push(("kv_num_heads".into(), AttrValue::Int(h as i64)));
        }
        if self.softcap != 0.0 {
            out.push(("softcap".into(), AttrValue::Float(self.softcap)));
        }
        if self.qk_matmul_output_mode != 0 {
            out.push((
                "qk_matmul_output_mode".into(),
                AttrValue::Int(self.qk_matmul_output_mode),
            ));
        }
        if let Some(p) = self.softmax_precision {
            out.push(("softmax_precision".into(), AttrValue::Int(p)));
        }
        if self.left_window != -1 {
            out.push(("left_window_size".into(), AttrValue::Int(self.left_window)));
        }
        if self.right_window != -1 {
            out.push(("right_window_size".into(), AttrValue::Int(self.right_window)));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        self.facts(inputs)
    }
    fn num_outputs(&self) -> usize {
        self.outputs
    }
}
