//! The integer engine's op dialect. Never parsed from ONNX: `int::lower` builds it from a
//! quantized graph, `onnx::import_quantized` from a model quantized by
//! another tool (QDQ or QOperator). Activations are i8 or u8 (the container of a
//! quantizer's range) with a zero point (0 for oxiquant's own models), weights i8 or uint8
//! centered on their zero point, accumulators and merge sums i32, every step exact integer
//! arithmetic up to the rounding of the requantization (`kernels::requant::Rounding`).
//!
//! Requantization multiplies by a fixed-point factor `mult * 2^-shift` where `mult` is the
//! 24-bit significand of the f32 factor of the fake-quantized graph, so the multiplier is
//! *exactly* that factor; the product is taken in i64 and rounded half to even. The
//! fake-quantized graph (`run(mode="fake")`) computes the same product in f64, which is also
//! exact, so both agree bit for bit as long as its f32 accumulators are exact (sums below
//! 2^24 in magnitude; see docs/integer-engine.md).
//!
//! Layout: this file holds the `IntOp` enum, its `Op` impl and the helpers the op families
//! share; each family is a file beside it (`requant`, `conv`, `gemm`, `add`, `pool`,
//! `table`) with its choice of kernel, and the loops those run live in `kernels/`
//! (`qconv_*`, `qgemm`, `qadd`, `qpool`, `requant`).

/// Runs `$body` with `$T` the element type of a quantized activation dtype.
macro_rules! with_qelem {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::I8 => {
                type $T = i8;
                $body
            }
            DType::U8 => {
                type $T = u8;
                $body
            }
            other => Err(Error::shape(format!(
                "quantized activations are i8 or u8, got {}",
                other.name()
            ))),
        }
    };
}

mod add;
mod conv;
pub mod fuse_tables;
mod gemm;
pub mod lower;
mod pool;
mod requant;
mod table;

pub use add::{AddInput, FoldedRequant, QAdd, SmallSums};
pub use conv::QConv;
pub use fuse_tables::IslandTable;
pub use gemm::QGemm;
pub use pool::QAvgPool;
pub use requant::{Dequant, Requant};
pub use table::{requant_table, Table};

use crate::error::{Error, Result};
use crate::kernels::elementwise::binary;
use crate::kernels::qgemm::Kernel;
use crate::kernels::requant::QElem;
use crate::ops::facts::{expect_dtype, fact_error, in_op, optional, required};
use crate::ops::nn::Pool;
use crate::ops::{input, BinaryOp, Class, DimFact, NodeFacts, Op, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};
use add::add_requant;
use pool::{qglobal_pool, qpool};
use rayon::prelude::*;

/// The container for integers in `[lo, hi]`: i8, else u8, else none (wider than 8 bits).
pub fn container(lo: i32, hi: i32) -> Option<DType> {
    if lo >= i8::MIN as i32 && hi <= i8::MAX as i32 {
        Some(DType::I8)
    } else if lo >= 0 && hi <= u8::MAX as i32 {
        Some(DType::U8)
    } else {
        None
    }
}

/// `(channels, plane size)` for `c` factors over a tensor of `shape`: one factor covers the
/// whole tensor; several apply along axis 1 (`[N, c, ...]`), or it is an error naming `what`.
fn channel_planes(c: usize, shape: &[usize], what: &str) -> Result<(usize, usize)> {
    if c == 1 {
        return Ok((1, shape.iter().product::<usize>().max(1)));
    }
    if shape.len() < 2 || shape[1] != c {
        return Err(Error::shape(format!(
            "{what} has {c} per-channel factors but its input has shape {shape:?} (expected [N, {c}, ...])"
        )));
    }
    Ok((c, shape[2..].iter().product()))
}

/// Elements per parallel block of an element-wise op whose factors are all per-tensor (a
/// whole tensor as one block would run on one thread).
const BLOCK: usize = 1 << 14;

/// How an element-wise op with factor lists of `counts` lengths splits a tensor of `shape`
/// into blocks: `(block length, channels)`, block `i` lying in channel `i % channels`. The
/// planes of axis 1 when some list is per-channel (all such lists must match it), else
/// blocks of `BLOCK` elements in channel 0.
fn work_blocks(shape: &[usize], counts: &[usize], what: &str) -> Result<(usize, usize)> {
    let mut blocks = None;
    for &c in counts.iter().filter(|&&c| c > 1) {
        let (c, inner) = channel_planes(c, shape, what)?;
        blocks = Some((inner, c));
    }
    Ok(blocks.unwrap_or_else(|| (BLOCK.min(shape.iter().product::<usize>()), 1)))
}

/// Integer values of a tensor held in any integer container (or integer-valued floats).
fn to_i32s(t: &Tensor) -> Result<Vec<i32>> {
    Ok(match t.data() {
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        _ => {
            return Err(Error::shape(format!(
                "integer op got a {} tensor, expected i8, u8 or i32",
                t.dtype().name()
            )))
        }
    })
}

/// The range of an 8-bit container.
fn bounds_of(dt: DType) -> Result<(i32, i32)> {
    match dt {
        DType::U8 => Ok((0, 255)),
        DType::I8 => Ok((-128, 127)),
        other => Err(Error::shape(format!(
            "quantized tensors are uint8 or int8, got {}",
            other.name()
        ))),
    }
}

/// The widest `|x - x_zero|` of an 8-bit input (i8 or u8 container).
fn widest_input(x_zero: i32) -> i64 {
    let z = x_zero as i64;
    [255 - z, z + 128, z.abs()].into_iter().max().unwrap_or(255).max(0)
}

/// A bound on `|acc + bias|` over all rows: `max_r sum_k |w[r][k]| * widest + |bias[r]|`.
/// Fails when the products alone could leave the i32 accumulators (the bias is added in
/// i64 by the requantization).
fn accumulator_bound(w: &[i16], rows: usize, bias: &[i32], x_zero: i32, what: &str) -> Result<i64> {
    let k = w.len() / rows.max(1);
    let widest = widest_input(x_zero);
    let (mut products, mut bound) = (0i64, 0i64);
    for r in 0..rows {
        let s: i64 = w[r * k..(r + 1) * k].iter().map(|&v| (v as i64).abs()).sum();
        products = products.max(s * widest);
        bound = bound.max(s * widest + (bias[r] as i64).abs());
    }
    if products > i32::MAX as i64 {
        return Err(Error::InvalidArgument(format!(
            "quantized {what}: accumulators could reach {products}, past the i32 range"
        )));
    }
    Ok(bound)
}

/// Weights as i8 (oxiquant's own models, whose weights are always i8; the QOperator export).
fn weights_as_i8(w: &[i16], what: &str) -> Result<Vec<i8>> {
    w.iter()
        .map(|&v| {
            i8::try_from(v).map_err(|_| {
                Error::InvalidArgument(format!(
                    "{what}: centered weight {v} does not fit int8 (a model loaded with uint8 weights)"
                ))
            })
        })
        .collect()
}

/// A vector of `len` elements made by `fill(i, chunk)` on its chunks of `chunk`, in
/// parallel, with nothing written first (a kernel that writes every output then writes it
/// once).
///
/// Why: `vec![0; len]` zeroes the whole output on the calling thread before the parallel
/// loop starts (a memory allocator reusing freed memory must clear it): ResNet-50's
/// outputs at batch 32 are about 290 MB per run, which were written twice, once by one
/// thread.
///
/// # Safety
/// `fill` writes every element of the chunk it receives.
unsafe fn filled_chunks<O: QElem>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<O>]) + Sync,
) -> Vec<O> {
    let mut y: Vec<O> = Vec::with_capacity(len);
    y.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, part)| {
            if cfg!(debug_assertions) {
                // A pattern no test expects everywhere: an output `fill` misses shows.
                part.fill(std::mem::MaybeUninit::new(O::from_i32(0x5a)));
            }
            fill(i, part)
        });
    // SAFETY: `fill` initialized all `len` elements (the caller's contract; a panic in it
    // propagates before this line, leaving the vector empty).
    unsafe { y.set_len(len) };
    y
}

/// The integer ops, one `Op` type (the dialect is closed: only the lowering builds them).
#[derive(Debug, Clone, PartialEq)]
pub enum IntOp {
    /// Float or integer in, i8/u8 out.
    Requant(Requant),
    /// Integer in, f32 out.
    Dequant(Dequant),
    Conv(Box<QConv>),
    Gemm(Box<QGemm>),
    /// A Gemm / MatMul whose output stays float (a dequantizer after it): the integer
    /// product plus bias as exact f32 integers (`QGemm::eval_to_float`, its requantizer
    /// unused), what `op` computes on the same integers in the fake-quantized graph.
    GemmToFloat {
        gemm: Box<QGemm>,
        op: Box<dyn Op>,
    },
    /// Relu / Clip on integers: type preserving.
    Clip {
        lo: i32,
        hi: i32,
    },
    Pool(Pool),
    GlobalPool {
        max: bool,
    },
    /// Add / Sub / Sum of integers on a shared scale: i32 out.
    Add {
        sub: bool,
    },
    /// Add / Sub of two integer tensors followed by the quantizer after the merge.
    AddRequant {
        sub: bool,
        requant: Requant,
        /// Requantizations of the inputs folded into the add (see `FoldedRequant`).
        folded: [Option<Box<FoldedRequant>>; 2],
        /// The f32 form of the add, found at the first run (`SmallSums`).
        small: SmallSums,
    },
    /// A float op applied to integer values (converted exactly to f32), its result rounded
    /// half to even into the container `out` (the inputs', or i32 when they differ). Used for
    /// the ops the fake-quantized graph runs in float on integer values (e.g. LeakyRelu
    /// followed by Round). `out` is `None` for an op whose output is not an activation
    /// (Shape, a Cast to int64, a comparison): its result keeps the op's own type.
    Float {
        op: Box<dyn Op>,
        out: Option<DType>,
    },
    /// Identity on integers (a Round/Floor after an op that already produces integers).
    Pass,
    /// An element-wise function of an 8-bit tensor by table lookup (requantization into
    /// other parameters, or a float op between DequantizeLinear and QuantizeLinear).
    Table(Box<Table>),
    /// An element-wise float island of one 8-bit tensor (Sigmoid, SiLU, HardSwish ...) as
    /// its table, keeping the nodes it was for the exports (`fuse_tables`).
    IslandTable(Box<IslandTable>),
    /// Add of two quantized tensors with their own scales and zero points.
    QAdd(QAdd),
    /// Average pooling with zero points and a requantization.
    AvgPool(Box<QAvgPool>),
}

impl IntOp {
    pub fn name(&self) -> &'static str {
        match self {
            IntOp::Requant(_) => "Requantize",
            IntOp::Dequant(_) => "Dequantize",
            IntOp::Conv(_) => "QConv",
            IntOp::Gemm(_) => "QGemm",
            IntOp::GemmToFloat { .. } => "QGemmToFloat",
            IntOp::Clip { .. } => "QClip",
            IntOp::Pool(p) if p.max => "QMaxPool",
            IntOp::Pool(_) => "QAveragePool",
            IntOp::GlobalPool { max: true } => "QGlobalMaxPool",
            IntOp::GlobalPool { max: false } => "QGlobalAveragePool",
            IntOp::Add { sub: false } => "QAdd",
            IntOp::Add { sub: true } => "QSub",
            IntOp::AddRequant { sub: false, .. } => "QAddRequantize",
            IntOp::AddRequant { sub: true, .. } => "QSubRequantize",
            IntOp::Float { .. } => "FloatOnIntegers",
            IntOp::Pass => "Pass",
            IntOp::Table(_) => "QLookupTable",
            IntOp::IslandTable(_) => "QIslandTable",
            IntOp::QAdd(_) => "QAddZeroPoints",
            IntOp::AvgPool(p) if p.pool.is_none() => "QGlobalAveragePoolRequantize",
            IntOp::AvgPool(_) => "QAveragePoolRequantize",
        }
    }

    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let y = match self {
            IntOp::Requant(r) => r.eval(x)?,
            IntOp::Dequant(d) => d.eval(x)?,
            IntOp::Conv(c) => c.eval(x)?,
            IntOp::Gemm(g) => g.eval(x)?,
            IntOp::GemmToFloat { gemm, .. } => gemm.eval_to_float(x)?,
            IntOp::Clip { lo, hi } => clip(x, *lo, *hi)?,
            IntOp::Pool(p) => qpool(p, x)?,
            IntOp::GlobalPool { max } => qglobal_pool(*max, x)?,
            IntOp::AddRequant {
                sub,
                requant,
                folded,
                small,
            } => {
                let b = input(inputs, 1, "B")?;
                let fits = |t: &Tensor, f: &Option<Box<FoldedRequant>>| f.as_ref().is_none_or(|f| f.input == t.dtype());
                if inputs.len() == 2 && x.shape() == b.shape() && fits(x, &folded[0]) && fits(b, &folded[1]) {
                    let pre = [folded[0].as_deref(), folded[1].as_deref()];
                    with_qelem!(x.dtype(), A => with_qelem!(b.dtype(), B => with_qelem!(requant.out, O => {
                        add_requant::<A, B, O>(x, b, *sub, requant, pre, small, Kernel::detect())
                    })))?
                } else {
                    // Broadcasting or unexpected containers: the folded nodes as they were.
                    let mut ts: Vec<Tensor> = Vec::new();
                    for (i, f) in folded.iter().enumerate() {
                        if let Some(f) = f {
                            ts.push(f.requant.eval(input(inputs, i, "X")?)?);
                        }
                    }
                    let mut it = ts.iter();
                    let args: Vec<Option<&Tensor>> = inputs
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match folded.get(i) {
                            Some(Some(_)) => it.next(),
                            _ => *t,
                        })
                        .collect();
                    let sum = IntOp::Add { sub: *sub }.eval(&args)?.swap_remove(0);
                    requant.eval(&sum)?
                }
            }
            IntOp::Add { sub } => {
                let mut acc = (to_i32s(x)?, x.shape().to_vec());
                for (i, t) in inputs.iter().enumerate().skip(1) {
                    let t = t.ok_or_else(|| Error::shape(format!("integer add: input {i} is missing")))?;
                    let v = to_i32s(t)?;
                    let f = if *sub { i32::wrapping_sub } else { i32::wrapping_add };
                    acc = binary(&acc.0, &acc.1, &v, t.shape(), f)?;
                }
                Tensor::from_vec(acc.1, acc.0)?
            }
            IntOp::Float { op, out } => {
                // Integer inputs as exact floats; float and i64 (shape) inputs as they are.
                let floats: Vec<Option<Tensor>> = inputs
                    .iter()
                    .map(|t| match t {
                        Some(t) if !matches!(t.dtype(), DType::F32 | DType::I64) => {
                            Tensor::from_vec(t.shape().to_vec(), t.to_f32_vec()).map(Some)
                        }
                        _ => Ok(None),
                    })
                    .collect::<Result<_>>()?;
                let args: Vec<Option<&Tensor>> = inputs
                    .iter()
                    .zip(&floats)
                    .map(|(orig, conv)| conv.as_ref().or(*orig))
                    .collect();
                let y = op.eval(&args)?.swap_remove(0);
                let Some(out) = out else {
                    return Ok(vec![y]);
                };
                let (shape, v) = (y.shape().to_vec(), y.to_f32_vec());
                let ints = v.iter().map(|&f| f.round_ties_even() as i32);
                match out {
                    DType::I8 => Tensor::from_vec(shape, ints.map(i8::from_i32).collect::<Vec<_>>())?,
                    DType::U8 => Tensor::from_vec(shape, ints.map(u8::from_i32).collect::<Vec<_>>())?,
                    _ => Tensor::from_vec(shape, ints.collect::<Vec<_>>())?,
                }
            }
            IntOp::Pass => x.clone(),
            IntOp::Table(t) => t.eval(x)?,
            IntOp::IslandTable(t) => t.eval(x)?,
            IntOp::QAdd(q) => q.eval(x, input(inputs, 1, "B")?)?,
            IntOp::AvgPool(p) => p.eval(x)?,
        };
        Ok(vec![y])
    }
}

impl IntOp {
    /// The output's facts, following `eval`: the float op's shape on the integer inputs'
    /// shapes, the dtype of the container the op writes.
    fn facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<ValueFact> {
        let op = self.name();
        const BYTES: [DType; 2] = [DType::I8, DType::U8];
        const INTS: [DType; 3] = [DType::I8, DType::U8, DType::I32];
        let x = required(inputs, 0, op, "X")?;
        // An integer input as the float tensor of the same shape its float op reads.
        let float = |f: &ValueFact| ValueFact::new(Some(DType::F32), f.shape.clone());
        // Integer sums of every input, broadcast.
        let sum_shape = || -> Result<Option<Vec<DimFact>>> {
            let mut acc = float(x);
            for i in 1..inputs.len() {
                let t = required(inputs, i, op, "B")?;
                expect_dtype(op, t, "B", &INTS)?;
                acc = BinaryOp::Add.facts(&acc, &float(t)).map_err(in_op(op))?;
            }
            Ok(acc.shape)
        };
        Ok(match self {
            IntOp::Requant(r) => {
                expect_dtype(op, x, "X", &[DType::F32, DType::I8, DType::U8, DType::I32])?;
                ValueFact::new(Some(r.out), x.shape.clone())
            }
            IntOp::Dequant(_) => {
                expect_dtype(op, x, "X", &INTS)?;
                float(x)
            }
            IntOp::Conv(c) => {
                expect_dtype(op, x, "X", &BYTES)?;
                let w = ValueFact::concrete(DType::F32, &c.weight_shape);
                let y = c.conv.facts(op, &[Some(&float(x)), Some(&w)])?;
                ValueFact::new(Some(c.requant.out), y.shape)
            }
            IntOp::Gemm(g) | IntOp::GemmToFloat { gemm: g, .. } => {
                expect_dtype(op, x, "X", &BYTES)?;
                let shape = match &x.shape {
                    Some(s) if s.is_empty() || s.last().and_then(DimFact::known).is_some_and(|k| k != g.k) => {
                        return Err(fact_error(op, format!("expects an input [..., {}], got {x}", g.k)))
                    }
                    Some(s) => {
                        let mut s = s.clone();
                        if let Some(last) = s.last_mut() {
                            *last = DimFact::Known(g.m);
                        }
                        Some(s)
                    }
                    None => None,
                };
                let dt = if matches!(self, IntOp::GemmToFloat { .. }) {
                    DType::F32
                } else {
                    g.requant.out
                };
                ValueFact::new(Some(dt), shape)
            }
            IntOp::Clip { .. } | IntOp::Pass => {
                if matches!(self, IntOp::Clip { .. }) {
                    expect_dtype(op, x, "X", &INTS)?;
                }
                x.clone()
            }
            IntOp::Pool(p) => {
                expect_dtype(op, x, "X", &BYTES)?;
                ValueFact::new(x.dtype, p.facts(op, &float(x))?.shape)
            }
            IntOp::GlobalPool { max } => {
                expect_dtype(op, x, "X", &BYTES)?;
                let y = crate::ops::nn::global_facts(op, *max, &float(x))?;
                ValueFact::new(x.dtype, y.shape)
            }
            IntOp::Add { .. } => {
                expect_dtype(op, x, "X", &INTS)?;
                ValueFact::new(Some(DType::I32), sum_shape()?)
            }
            IntOp::AddRequant { requant, .. } => {
                expect_dtype(op, x, "X", &INTS)?;
                ValueFact::new(Some(requant.out), sum_shape()?)
            }
            IntOp::QAdd(q) => {
                expect_dtype(op, x, "A", &INTS)?;
                let b = required(inputs, 1, op, "B")?;
                expect_dtype(op, b, "B", &INTS)?;
                let y = BinaryOp::Add.facts(&float(x), &float(b)).map_err(in_op(op))?;
                ValueFact::new(Some(q.out), y.shape)
            }
            IntOp::Float { op: f, out } => {
                // Integer inputs become exact floats; float and int64 (shape) inputs stay.
                let keeps = |d: Option<DType>| matches!(d, Some(DType::F32 | DType::I64));
                let args: Vec<Option<ValueFact>> = (0..inputs.len())
                    .map(|i| optional(inputs, i).map(|f| if keeps(f.dtype) { f.clone() } else { float(f) }))
                    .collect();
                let refs: Vec<Option<&ValueFact>> = args.iter().map(Option::as_ref).collect();
                let consts: Vec<Option<&Tensor>> = (0..inputs.len())
                    .map(|i| constants.get(i).copied().flatten().filter(|t| keeps(Some(t.dtype()))))
                    .collect();
                let mut y = f.output_facts(&refs, &consts).map_err(in_op(op))?;
                let Some(out) = out else {
                    return Ok(y.swap_remove(0));
                };
                let dtype = match out {
                    DType::I8 | DType::U8 => *out,
                    _ => DType::I32,
                };
                ValueFact::new(Some(dtype), y.swap_remove(0).shape)
            }
            IntOp::Table(t) => {
                expect_dtype(op, x, "X", &[t.input])?;
                ValueFact::new(Some(t.out), x.shape.clone())
            }
            IntOp::IslandTable(t) => {
                expect_dtype(op, x, "X", &[t.table.input])?;
                ValueFact::new(Some(t.table.out), x.shape.clone())
            }
            IntOp::AvgPool(p) => {
                expect_dtype(op, x, "X", &INTS)?;
                let y = match &p.pool {
                    None => crate::ops::nn::global_facts(op, false, &float(x))?,
                    Some(pool) => pool.facts(op, &float(x))?,
                };
                ValueFact::new(Some(p.out), y.shape)
            }
        })
    }
}

impl Op for IntOp {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![self.facts(inputs, constants)?])
    }
    fn no_onnx_form(&self) -> Option<&'static str> {
        Some("belongs to the integer engine and has no ONNX form; export the quantized model instead")
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        IntOp::eval(self, inputs)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland(format!("{} is an op of the integer engine", self.name()))
    }
}

fn clip(x: &Tensor, lo: i32, hi: i32) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    // ONNX Clip is `min(max(x, lo), hi)`, as the float op computes it: with `lo > hi` every
    // value becomes `hi` (`i32::clamp` would panic on such a model's bounds).
    let bound = |a: i32| a.max(lo).min(hi);
    match x.data() {
        TensorData::I8(v) => Tensor::from_vec(
            shape,
            v.iter().map(|&a| i8::from_i32(bound(a as i32))).collect::<Vec<_>>(),
        ),
        TensorData::U8(v) => Tensor::from_vec(
            shape,
            v.iter().map(|&a| u8::from_i32(bound(a as i32))).collect::<Vec<_>>(),
        ),
        TensorData::I32(v) => Tensor::from_vec(shape, v.iter().map(|&a| bound(a)).collect::<Vec<_>>()),
        _ => Err(Error::shape(format!("integer clip got a {} tensor", x.dtype().name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Integer Clip agrees with the float Clip (ONNX's `min(max(x, lo), hi)`), also on a
    /// model whose bounds are crossed, where it used to panic.
    #[test]
    fn integer_clip_follows_the_float_clip() {
        use crate::ops::Clip;
        let xs: Vec<i8> = vec![-128, -9, -3, 0, 4, 5, 7, 127];
        for (lo, hi) in [(-3, 5), (5, -3), (0, 0), (-200, 300)] {
            let want: Vec<f32> = xs
                .iter()
                .map(|&v| Clip::apply(v as f32, lo as f32, hi as f32))
                .collect();
            let x = Tensor::from_vec(vec![8], xs.clone()).unwrap();
            let op = IntOp::Clip { lo, hi };
            let got = op.eval(&[Some(&x)]).unwrap().remove(0);
            assert_eq!(
                got.to_f32_vec(),
                want.iter().map(|&v| v.clamp(-128.0, 127.0)).collect::<Vec<_>>(),
                "i8 [{lo}, {hi}]"
            );
            let x32 = Tensor::from_vec(vec![8], xs.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap();
            let got = op.eval(&[Some(&x32)]).unwrap().remove(0);
            assert_eq!(got.to_f32_vec(), want, "i32 [{lo}, {hi}]");
        }
    }
}
