//! TensorScatter (opset 24): writes `update` into a copy of `past_cache` along the sequence
//! axis, at each batch's `write_indices` offset (0 when omitted), linearly or wrapping
//! around the cache (`mode="circular"`). Any element type; for the PTQ a float island, as the
//! other scatters (it mixes two activations).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_error, optional, required, unify_dim};
use crate::ops::{input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq)]
pub struct TensorScatter {
    pub axis: i64,
    pub circular: bool,
}

impl FromOnnx for TensorScatter {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let circular = match cx.attrs.string("mode", "linear")?.as_str() {
            "linear" => false,
            "circular" => true,
            other => return Err(cx.attrs.unsupported(format!("mode '{other}' (linear or circular)"))),
        };
        Ok(TensorScatter {
            axis: cx.attrs.int("axis", -2)?,
            circular,
        })
    }
}

impl TensorScatter {
    /// The sequence axis for a rank (not the batch axis 0).
    fn seq_axis(&self, rank: usize) -> Result<usize> {
        let a = norm_axis(self.axis, rank).map_err(|e| Error::shape(format!("TensorScatter: {e}")))?;
        if a == 0 {
            return Err(Error::shape(
                "TensorScatter: the sequence axis cannot be the batch axis 0".to_string(),
            ));
        }
        Ok(a)
    }
}

fn scatter<T: Copy>(
    cache: &mut [T],
    update: &[T],
    cs: &[usize],
    us: &[usize],
    a: usize,
    offsets: &[i64],
    circular: bool,
) -> Result<()> {
    let outer: usize = cs[1..a].iter().product();
    let inner: usize = cs[a + 1..].iter().product();
    let (max_seq, seq) = (cs[a], us[a]);
    for b in 0..cs[0] {
        let start = offsets[b];
        for o in 0..outer {
            for s in 0..seq {
                let mut dst = start + s as i64;
                if circular && max_seq > 0 {
                    dst = dst.rem_euclid(max_seq as i64);
                }
                if dst < 0 || dst as usize >= max_seq {
                    return Err(Error::shape(format!(
                        "TensorScatter: write index {start} + {s} of batch {b} is outside the cache's {max_seq} positions"
                    )));
                }
                let d = ((b * outer + o) * max_seq + dst as usize) * inner;
                let u = ((b * outer + o) * seq + s) * inner;
                cache[d..d + inner].copy_from_slice(&update[u..u + inner]);
            }
        }
    }
    Ok(())
}

impl Op for TensorScatter {
    fn op_type(&self) -> &'static str {
        "TensorScatter"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![("axis".to_string(), AttrValue::Int(self.axis))];
        if self.circular {
            v.push(("mode".into(), AttrValue::String("circular".into())));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let cache = input(inputs, 0, "past_cache")?;
        let update = input(inputs, 1, "update")?;
        let (cs, us) = (cache.shape(), update.shape());
        let r = cs.len();
        let a = self.seq_axis(r)?;
        let fits = us.len() == r && (0..r).all(|d| if d == a { us[d] <= cs[d] } else { us[d] == cs[d] });
        if !fits || cache.dtype() != update.dtype() {
            return Err(Error::shape(format!(
                "TensorScatter: update {} {us:?} does not fit past_cache {} {cs:?} (axis {a})",
                update.dtype(),
                cache.dtype()
            )));
        }
        let offsets = match inputs.get(2).copied().flatten() {
            Some(w) if w.dtype() == DType::I64 && w.shape() == [cs[0]] => w.to_i64_vec()?,
            Some(w) => {
                return Err(Error::shape(format!(
                    "TensorScatter: write_indices must be int64 [{}], got {} {:?}",
                    cs[0],
                    w.dtype(),
                    w.shape()
                )))
            }
            None => vec![0; cs[0]],
        };
        let (shape, mut data) = cache.clone().into_parts();
        macro_rules! go {
            ($($v:ident),*) => {
                match (&mut data, update.data()) {
                    $((TensorData::$v(c), TensorData::$v(u)) => scatter(c, u, cs, us, a, &offsets, self.circular)?,)*
                    _ => return Err(Error::shape("TensorScatter: past_cache and update differ in dtype".to_string())),
                }
            };
        }
        go!(F32, U8, I8, I32, I64, Bool);
        Ok(vec![Tensor::new(shape, data)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "TensorScatter";
        let cache = required(inputs, 0, op, "past_cache")?;
        let update = required(inputs, 1, op, "update")?;
        if let (Some(a), Some(b)) = (cache.dtype, update.dtype) {
            if a != b {
                return Err(fact_error(
                    op,
                    format!("update {update} does not fit past_cache {cache}"),
                ));
            }
        }
        let mut shape = cache.shape.clone();
        if let (Some(cs), Some(us)) = (&cache.shape, &update.shape) {
            let a = self.seq_axis(cs.len()).map_err(|e| fact_error(op, e))?;
            if us.len() != cs.len() {
                return Err(fact_error(
                    op,
                    format!("update {update} does not fit past_cache {cache}"),
                ));
            }
            let mut s = cs.clone();
            for d in (0..cs.len()).filter(|&d| d != a) {
                s[d] = unify_dim(op, &cs[d], &us[d], || {
                    format!("update {update} does not fit past_cache {cache}")
                })?;
            }
            shape = Some(s);
        }
        if let Some(w) = optional(inputs, 2) {
            crate::ops::facts::expect_dtype(op, w, "write_indices", &[DType::I64])?;
        }
        Ok(vec![ValueFact::new(cache.dtype.or(update.dtype), shape)])
    }
    fn ptq_class(&self, _n: &crate::ops::NodeFacts) -> crate::ops::Class {
        crate::ops::Class::FloatIsland("a scatter mixes two activations".into())
    }
}
