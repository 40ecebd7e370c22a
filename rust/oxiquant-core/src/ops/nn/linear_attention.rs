//! LinearAttention (opset 27): the recurrent form of linear attention, token by token. Per
//! batch and key/value head a state `S` (`d_k x d_v`, from `past_state` or zeros) is decayed
//! by `exp(decay)` (rules "gated", "gated_delta"), written with `k ⊗ v` where "delta" rules
//! first replace `v` by `beta (v - Sᵀk)`, and read by each query head of its group as
//! `scale qᵀS`. Q/K/V are packed `[B, T, heads * d]`; computed in f32 in the order of the
//! ONNX definition. A float island for the PTQ.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct LinearAttention {
    pub q_heads: usize,
    pub kv_heads: usize,
    /// 0: 1 / sqrt(d_k).
    pub scale: f32,
    pub gated: bool,
    pub delta: bool,
    pub chunk_size: i64,
}

impl FromOnnx for LinearAttention {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let heads = |name: &str| -> Result<usize> {
            match a.int_opt(name)? {
                Some(h) if h > 0 => Ok(h as usize),
                other => Err(a.unsupported(format!("{name} {other:?} (a positive count is required)"))),
            }
        };
        let (q_heads, kv_heads) = (heads("q_num_heads")?, heads("kv_num_heads")?);
        if !q_heads.is_multiple_of(kv_heads) {
            return Err(a.unsupported(format!(
                "q_num_heads {q_heads} is not a multiple of kv_num_heads {kv_heads}"
            )));
        }
        let (gated, delta) = match a.string("update_rule", "gated_delta")?.as_str() {
            "linear" => (false, false),
            "gated" => (true, false),
            "delta" => (false, true),
            "gated_delta" => (true, true),
            other => return Err(a.unsupported(format!("update_rule '{other}'"))),
        };
        Ok(LinearAttention {
            q_heads,
            kv_heads,
            scale: a.float("scale", 0.0)?,
            gated,
            delta,
            // A tuning hint of chunked implementations: the result does not depend on it.
            chunk_size: a.int("chunk_size", 64)?,
        })
    }
}

impl LinearAttention {
    fn rule(&self) -> &'static str {
        match (self.gated, self.delta) {
            (false, false) => "linear",
            (true, false) => "gated",
            (false, true) => "delta",
            (true, true) => "gated_delta",
        }
    }
}

/// The `[B, T, W]` shape of a packed input, or an error naming it.
fn packed<'a>(inputs: &[Option<&'a Tensor>], i: usize, name: &str) -> Result<(&'a [f32], [usize; 3])> {
    let t = input(inputs, i, name)?;
    match t.shape() {
        &[b, s, w] => Ok((t.as_slice::<f32>()?, [b, s, w])),
        s => Err(Error::shape(format!(
            "LinearAttention: {name} must be [B, T, heads * d], got {s:?}"
        ))),
    }
}

impl Op for LinearAttention {
    fn op_type(&self) -> &'static str {
        "LinearAttention"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![
            ("q_num_heads".to_string(), AttrValue::Int(self.q_heads as i64)),
            ("kv_num_heads".to_string(), AttrValue::Int(self.kv_heads as i64)),
            ("update_rule".to_string(), AttrValue::String(self.rule().into())),
            ("chunk_size".to_string(), AttrValue::Int(self.chunk_size)),
        ];
        if self.scale != 0.0 {
            v.push(("scale".into(), AttrValue::Float(self.scale)));
        }
        v
    }
    fn num_outputs(&self) -> usize {
        2
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let bad = |m: String| Error::shape(format!("LinearAttention: {m}"));
        let (q, [b, t, qw]) = packed(inputs, 0, "query")?;
        let (k, ks) = packed(inputs, 1, "key")?;
        let (v, vs) = packed(inputs, 2, "value")?;
        let (hq, hk) = (self.q_heads, self.kv_heads);
        if !qw.is_multiple_of(hq) || !vs[2].is_multiple_of(hk) {
            return Err(bad(format!(
                "query width {qw} or value width {} does not split into heads",
                vs[2]
            )));
        }
        let (dk, dv) = (qw / hq, vs[2] / hk);
        if ks != [b, t, hk * dk] || vs[..2] != [b, t] {
            return Err(bad(format!(
                "key {ks:?} and value {vs:?} do not match query [{b}, {t}, {qw}] with {hq} and {hk} heads"
            )));
        }
        let decay = match (inputs.get(4).copied().flatten(), self.gated) {
            (Some(_), true) => {
                let (d, ds) = packed(inputs, 4, "decay")?;
                let per = if ds == [b, t, hk] {
                    1
                } else if ds == [b, t, hk * dk] {
                    dk
                } else {
                    return Err(bad(format!(
                        "decay {ds:?} must be [{b}, {t}, {hk}] or [{b}, {t}, {}]",
                        hk * dk
                    )));
                };
                Some((d, per))
            }
            (None, false) => None,
            (_, g) => {
                return Err(bad(format!(
                    "update_rule '{}' {} the decay input",
                    self.rule(),
                    if g { "requires" } else { "forbids" }
                )))
            }
        };
        let beta = match (inputs.get(5).copied().flatten(), self.delta) {
            (Some(_), true) => {
                let (d, ds) = packed(inputs, 5, "beta")?;
                let per = if ds == [b, t, hk] {
                    hk
                } else if ds == [b, t, 1] {
                    1
                } else {
                    return Err(bad(format!("beta {ds:?} must be [{b}, {t}, {hk}] or [{b}, {t}, 1]")));
                };
                Some((d, per))
            }
            (None, false) => None,
            (_, d) => {
                return Err(bad(format!(
                    "update_rule '{}' {} the beta input",
                    self.rule(),
                    if d { "requires" } else { "forbids" }
                )))
            }
        };
        let ss = [b, hk, dk, dv];
        crate::tensor::check_alloc(&ss, 4)?;
        let mut state = match inputs.get(3).copied().flatten() {
            Some(p) if p.shape() == ss => p.as_slice::<f32>()?.to_vec(),
            Some(p) => return Err(bad(format!("past_state {:?} must be {ss:?}", p.shape()))),
            None => vec![0f32; b * hk * dk * dv],
        };
        let scale = if self.scale == 0.0 {
            1.0 / (dk as f32).sqrt()
        } else {
            self.scale
        };
        let group = hq / hk;
        let mut out = vec![0f32; b * t * hq * dv];
        let mut vt = vec![0f32; dv];
        for bi in 0..b {
            for ti in 0..t {
                let row = bi * t + ti;
                for h in 0..hk {
                    let s = &mut state[(bi * hk + h) * dk * dv..(bi * hk + h + 1) * dk * dv];
                    let kt = &k[row * hk * dk + h * dk..row * hk * dk + (h + 1) * dk];
                    vt.copy_from_slice(&v[row * hk * dv + h * dv..row * hk * dv + (h + 1) * dv]);
                    if let Some((d, per)) = decay {
                        for di in 0..dk {
                            let g = d[row * hk * per + h * per + if per == 1 { 0 } else { di }].exp();
                            s[di * dv..(di + 1) * dv].iter_mut().for_each(|x| *x *= g);
                        }
                    }
                    if let Some((bt, per)) = beta {
                        let be = bt[row * per + if per == 1 { 0 } else { h }];
                        for (m, x) in vt.iter_mut().enumerate() {
                            let got: f32 = (0..dk).map(|di| s[di * dv + m] * kt[di]).sum();
                            *x = be * (*x - got);
                        }
                    }
                    for di in 0..dk {
                        for m in 0..dv {
                            s[di * dv + m] += kt[di] * vt[m];
                        }
                    }
                    for g in 0..group {
                        let hqi = h * group + g;
                        let qt = &q[row * qw + hqi * dk..row * qw + (hqi + 1) * dk];
                        let o = &mut out[row * hq * dv + hqi * dv..row * hq * dv + (hqi + 1) * dv];
                        for (m, y) in o.iter_mut().enumerate() {
                            let r: f32 = (0..dk).map(|di| qt[di] * s[di * dv + m]).sum();
                            *y = scale * r;
                        }
                    }
                }
            }
        }
        Ok(vec![
            Tensor::from_vec(vec![b, t, hq * dv], out)?,
            Tensor::from_vec(ss.to_vec(), state)?,
        ])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "LinearAttention";
        let q = required(inputs, 0, op, "query")?;
        let k = required(inputs, 1, op, "key")?;
        let v = required(inputs, 2, op, "value")?;
        for (f, name) in [(q, "query"), (k, "key"), (v, "value")] {
            expect_dtype(op, f, name, &[DType::F32])?;
            if f.rank().is_some_and(|r| r != 3) {
                return Err(fact_error(op, format!("{name} must be [B, T, heads * d], got {f}")));
            }
        }
        for i in 3..6 {
            if let Some(f) = optional(inputs, i) {
                expect_dtype(op, f, "past_state, decay and beta", &[DType::F32])?;
            }
        }
        let per_head = |f: &ValueFact, heads: usize| match f.dim(2) {
            DimFact::Known(w) => DimFact::Known(w / heads),
            _ => DimFact::Unknown,
        };
        let (dk, dv) = (per_head(q, self.q_heads), per_head(v, self.kv_heads));
        let out_w = match dv {
            DimFact::Known(d) => DimFact::Known(d * self.q_heads),
            _ => DimFact::Unknown,
        };
        let y = ValueFact::new(Some(DType::F32), Some(vec![q.dim(0), q.dim(1), out_w]));
        let s = ValueFact::new(
            Some(DType::F32),
            Some(vec![q.dim(0), DimFact::Known(self.kv_heads), dk, dv]),
        );
        Ok(vec![y, s])
    }
}
