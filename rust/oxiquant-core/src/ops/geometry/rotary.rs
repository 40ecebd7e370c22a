//! RotaryEmbedding (opset 23): rotates the first `rotary_embedding_dim` features of each head
//! by the angles of its position, pairing feature `i` with `i + dim/2` (or, interleaved, `2i`
//! with `2i + 1`): `real = cos x1 - sin x2`, `imag = sin x1 + cos x2`. The input is
//! [batch, heads, seq, head_size] or [batch, seq, heads * head_size] (`num_heads` given); the
//! caches are [max_position, dim/2 or head_size/2] indexed by `position_ids` [batch, seq],
//! or [batch, seq, dim/2 or head_size/2] without them.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required};
use crate::ops::{input, DataInputs, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct RotaryEmbedding {
    pub interleaved: bool,
    /// 0: the whole head.
    pub rotary_dim: usize,
    /// Needed for a 3-D input (0: not given).
    pub num_heads: usize,
}

impl FromOnnx for RotaryEmbedding {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let interleaved = match a.int("interleaved", 0)? {
            0 => false,
            1 => true,
            v => return Err(a.unsupported(format!("interleaved = {v} (0 or 1)"))),
        };
        let nonneg = |name: &str| -> Result<usize> {
            let v = a.int(name, 0)?;
            usize::try_from(v).map_err(|_| a.unsupported(format!("{name} = {v} (must be >= 0)")))
        };
        Ok(RotaryEmbedding {
            interleaved,
            rotary_dim: nonneg("rotary_embedding_dim")?,
            num_heads: nonneg("num_heads")?,
        })
    }
}

/// The layout of the input: batch, sequence, heads, head size, and where each head's vector
/// starts.
struct Layout {
    batch: usize,
    seq: usize,
    heads: usize,
    head: usize,
    four_d: bool,
}

impl Layout {
    fn offset(&self, b: usize, s: usize, h: usize) -> usize {
        if self.four_d {
            ((b * self.heads + h) * self.seq + s) * self.head
        } else {
            ((b * self.seq + s) * self.heads + h) * self.head
        }
    }
}

impl RotaryEmbedding {
    fn layout(&self, xs: &[usize]) -> Result<Layout> {
        match *xs {
            [batch, heads, seq, head] => Ok(Layout {
                batch,
                seq,
                heads,
                head,
                four_d: true,
            }),
            [batch, seq, hidden] => {
                if self.num_heads == 0 || !hidden.is_multiple_of(self.num_heads) {
                    return Err(Error::shape(format!(
                        "RotaryEmbedding of a 3-D input {xs:?} needs num_heads dividing its last dimension, got num_heads = {}",
                        self.num_heads
                    )));
                }
                Ok(Layout {
                    batch,
                    seq,
                    heads: self.num_heads,
                    head: hidden / self.num_heads,
                    four_d: false,
                })
            }
            _ => Err(Error::shape(format!(
                "RotaryEmbedding needs an input [batch, heads, seq, head_size] or [batch, seq, hidden], got {xs:?}"
            ))),
        }
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        let x = input(inputs, 0, "input")?;
        let cos = input(inputs, 1, "cos_cache")?;
        let sin = input(inputs, 2, "sin_cache")?;
        let pos = inputs.get(3).copied().flatten();
        let l = self.layout(x.shape())?;
        let dim = if self.rotary_dim == 0 { l.head } else { self.rotary_dim };
        if dim > l.head || !dim.is_multiple_of(2) {
            return Err(Error::shape(format!(
                "RotaryEmbedding: rotary_embedding_dim {dim} must be even and at most the head size {}",
                l.head
            )));
        }
        let half = dim / 2;
        let cs = cos.shape();
        if cs != sin.shape() {
            return Err(Error::shape(format!(
                "RotaryEmbedding: cos_cache {cs:?} and sin_cache {:?} differ",
                sin.shape()
            )));
        }
        // The caches hold dim/2 columns, or head_size/2 of which the first dim/2 are read.
        let cw = *cs.last().unwrap_or(&0);
        if cw != half && cw != l.head / 2 {
            return Err(Error::shape(format!(
                "RotaryEmbedding: the caches {cs:?} must have {half} (rotary_embedding_dim / 2) or {} (head_size / 2) columns",
                l.head / 2
            )));
        }
        // The cache row of each (batch, position).
        let rows: Vec<usize> = match pos {
            Some(p) => {
                let ps = p.to_i64_vec()?;
                if p.shape() != [l.batch, l.seq] || cs.len() != 2 || cw < half {
                    return Err(Error::shape(format!(
                        "RotaryEmbedding: position_ids must be [{}, {}] and the caches [max_position, >= {half}], got {:?} and {cs:?}",
                        l.batch,
                        l.seq,
                        p.shape()
                    )));
                }
                ps.iter()
                    .map(|&v| {
                        usize::try_from(v).ok().filter(|&v| v < cs[0]).ok_or_else(|| {
                            Error::shape(format!(
                                "RotaryEmbedding: position id {v} outside the caches' {} rows",
                                cs[0]
                            ))
                        })
                    })
                    .collect::<Result<_>>()?
            }
            None => {
                if cs.len() != 3 || cs[0] != l.batch || cs[1] != l.seq || cw < half {
                    return Err(Error::shape(format!(
                        "RotaryEmbedding without position_ids needs caches [{}, {}, >= {half}], got {cs:?}",
                        l.batch, l.seq
                    )));
                }
                (0..l.batch * l.seq).collect()
            }
        };
        let (cv, sv) = (cos.as_slice::<f32>()?, sin.as_slice::<f32>()?);
        let mut y = x.as_slice::<f32>()?.to_vec();
        for b in 0..l.batch {
            for s in 0..l.seq {
                let row = rows[b * l.seq + s] * cw;
                let (c, sn) = (&cv[row..row + half], &sv[row..row + half]);
                for h in 0..l.heads {
                    let v = &mut y[l.offset(b, s, h)..][..dim];
                    for i in 0..half {
                        let (a, bi) = if self.interleaved {
                            (2 * i, 2 * i + 1)
                        } else {
                            (i, i + half)
                        };
                        let (x1, x2) = (v[a], v[bi]);
                        v[a] = c[i] * x1 - sn[i] * x2;
                        v[bi] = sn[i] * x1 + c[i] * x2;
                    }
                }
            }
        }
        Tensor::from_vec(x.shape().to_vec(), y)
    }
}

impl Op for RotaryEmbedding {
    fn op_type(&self) -> &'static str {
        "RotaryEmbedding"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut out = Vec::new();
        if self.interleaved {
            out.push(("interleaved".into(), AttrValue::Int(1)));
        }
        if self.rotary_dim != 0 {
            out.push(("rotary_embedding_dim".into(), AttrValue::Int(self.rotary_dim as i64)));
        }
        if self.num_heads != 0 {
            out.push(("num_heads".into(), AttrValue::Int(self.num_heads as i64)));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.run(inputs)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "RotaryEmbedding";
        let x = required(inputs, 0, OP, "input")?;
        expect_dtype(OP, x, "input", &[DType::F32])?;
        for (i, name) in [(1, "cos_cache"), (2, "sin_cache")] {
            expect_dtype(OP, required(inputs, i, OP, name)?, name, &[DType::F32])?;
        }
        if let Some(p) = optional(inputs, 3) {
            expect_dtype(OP, p, "position_ids", &[DType::I64])?;
        }
        match x.rank() {
            Some(3) if self.num_heads == 0 => Err(fact_error(OP, "a 3-D input needs the num_heads attribute")),
            Some(3 | 4) | None => Ok(vec![ValueFact::new(Some(DType::F32), x.shape.clone())]),
            Some(_) => Err(fact_error(
                OP,
                format!(
                    "input must be [batch, heads, seq, head_size] or [batch, seq, hidden], got {}",
                    x.shape_string()
                ),
            )),
        }
    }
    fn data_inputs(&self) -> DataInputs {
        // The caches may be activations too (computed from the positions).
        DataInputs::All
    }
}
