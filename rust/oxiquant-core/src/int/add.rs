//! Adds of quantized tensors: `QAdd` (two inputs with their own scales and zero points,
//! onnxruntime's arithmetic) and the residual merge `AddRequant` (`requant(a ± b)`, each
//! input through its folded requantization, `FoldedRequant`), with the choice of the
//! merge's kernel (`kernels::qadd`).

use super::{bounds_of, filled_chunks, to_i32s, work_blocks, Requant};
use crate::error::{Error, Result};
use crate::kernels::elementwise::binary;
#[cfg(target_arch = "x86_64")]
use crate::kernels::qadd::{add_requant_avx2, add_small_avx2};
use crate::kernels::qadd::{add_requant_block, Operand, SumTable, LUT_LEN};
use crate::kernels::qgemm::Kernel;
use crate::kernels::requant::{QElem, SmallF32};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::sync::OnceLock;

/// One input of a quantized Add: the ratio of its scale to the output's, and its zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddInput {
    pub ratio: f32,
    pub zero: i32,
}

/// Add of two quantized tensors with their own scales and zero points (onnxruntime's
/// QLinearAdd, and DequantizeLinear x2 -> Add -> QuantizeLinear), in f32 the way
/// onnxruntime's AVX2 kernel computes it, so that the integers match it:
/// `ra = sa / sy`, `rb = sb / sy`, `fixed = zy - (ra * za + rb * zb)`,
/// `y = clamp(round_half_even(fma(a, ra, fma(b, rb, fixed))), lo, hi)` (`fma`: one rounding),
/// and for a one-element `b`: `fma(a, ra, fixed + b * rb)`. Broadcasts.
#[derive(Debug, Clone, PartialEq)]
pub struct QAdd {
    pub a: AddInput,
    pub b: AddInput,
    pub zero: i32,
    pub lo: i32,
    pub hi: i32,
    pub out: DType,
}

impl QAdd {
    fn fixed(&self) -> f32 {
        let (a, b) = (self.a, self.b);
        self.zero as f32 - (a.ratio * a.zero as f32 + b.ratio * b.zero as f32)
    }

    /// One output value (the reference arithmetic).
    #[inline]
    pub fn apply(&self, fixed: f32, a: i32, b: i32) -> i32 {
        let v = (a as f32).mul_add(self.a.ratio, (b as f32).mul_add(self.b.ratio, fixed));
        (v.round_ties_even() as i32).clamp(self.lo, self.hi)
    }

    pub fn eval(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (av, bv) = (to_i32s(a)?, to_i32s(b)?);
        let fixed = self.fixed();
        let (y, shape) = if bv.len() == 1 && a.shape().len() >= b.shape().len() {
            let fixed_b = fixed + bv[0] as f32 * self.b.ratio;
            let y: Vec<i32> = av
                .par_iter()
                .map(|&p| ((p as f32).mul_add(self.a.ratio, fixed_b).round_ties_even() as i32).clamp(self.lo, self.hi))
                .collect();
            (y, a.shape().to_vec())
        } else {
            binary(&av, a.shape(), &bv, b.shape(), |p, q| self.apply(fixed, p, q))?
        };
        with_qelem!(self.out, O => Tensor::from_vec(shape.clone(), y.iter().map(|&v| O::from_i32(v)).collect::<Vec<O>>()))
    }
}

/// A `Requantize` of an 8-bit input folded into the `AddRequant` that was its only reader
/// (the rebalanced shortcut of a residual block): applied element by element in the add
/// loop, by table, with no intermediate tensor. Its names are kept so that exports restore
/// the node.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedRequant {
    /// Name of the folded node.
    pub node: String,
    /// The value it wrote, which the add read (no longer computed).
    pub output: String,
    pub requant: Requant,
    /// The container of its input (the value the add now reads).
    pub input: DType,
    /// `requant.lut(input)` per channel, each entry minus `base` as a byte (the outputs are
    /// 8-bit, so a channel's table is four cache lines).
    lut: Vec<u8>,
    /// The minimum of the requantization's container, added back to every entry.
    base: i32,
    /// Per channel, the same requantization in f32 lanes, when it equals the table on every
    /// input (`SmallF32::verified`; `None` when any channel differs).
    small: Option<Vec<SmallF32>>,
}

/// One channel's table of a folded requantization: `base + bytes[x - min(input)]`.
#[derive(Clone, Copy)]
struct ByteLut<'a> {
    bytes: &'a [u8; LUT_LEN],
    base: i32,
}

impl FoldedRequant {
    pub fn new(node: String, output: String, requant: Requant, input: DType) -> Result<FoldedRequant> {
        let base = bounds_of(requant.out)?.0;
        let exact = requant.lut(input)?;
        let (in_lo, in_hi) = bounds_of(input)?;
        let small = (0..requant.scale.len())
            .map(|c| {
                let table = &exact[c * LUT_LEN..(c + 1) * LUT_LEN];
                let f = requant.factor[if requant.factor.len() == 1 { 0 } else { c }];
                SmallF32::verified(-requant.x_zero, f, requant.row_out(), in_lo..=in_hi, |x| {
                    table[(x - in_lo) as usize]
                })
            })
            .collect();
        let lut: Vec<u8> = exact.iter().map(|&v| (v - base) as u8).collect();
        Ok(FoldedRequant {
            node,
            output,
            requant,
            input,
            lut,
            base,
            small,
        })
    }

    /// The f32 form of channel `c`, if verified.
    fn small(&self, c: usize) -> Option<&SmallF32> {
        let v = self.small.as_ref()?;
        v.get(if v.len() == 1 { 0 } else { c })
    }

    /// The table of channel `c` (a fixed size: a byte index needs no bounds check).
    fn table(&self, c: usize) -> Option<ByteLut<'_>> {
        let c = if self.requant.scale.len() == 1 { 0 } else { c };
        let bytes = self.lut.get(c * 256..c * 256 + LUT_LEN)?.try_into().ok()?;
        Some(ByteLut { bytes, base: self.base })
    }
}

/// The table of channel `ch` of a folded requantization, if any.
fn table_of(f: Option<&FoldedRequant>, ch: usize) -> Result<Option<ByteLut<'_>>> {
    match f {
        None => Ok(None),
        Some(f) => f
            .table(ch)
            .map(Some)
            .ok_or_else(|| Error::shape(format!("folded requantization '{}': no table for channel {ch}", f.node))),
    }
}

/// `requant(a ± b)` for same-shape 8-bit tensors, each input first through its folded
/// requantization if any, without an intermediate tensor.
#[allow(clippy::too_many_arguments)]
pub(super) fn add_requant<A: QElem, B: QElem, O: QElem>(
    a: &Tensor,
    b: &Tensor,
    sub: bool,
    rq: &Requant,
    pre: [Option<&FoldedRequant>; 2],
    small: &SmallSums,
    kernel: Kernel,
) -> Result<Tensor> {
    let shape = a.shape().to_vec();
    let counts = [
        rq.scale.len(),
        pre[0].map_or(1, |f| f.requant.scale.len()),
        pre[1].map_or(1, |f| f.requant.scale.len()),
    ];
    let (inner, c) = work_blocks(&shape, &counts, "quantized add")?;
    let (av, bv) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let folded = pre.iter().any(|f| f.is_some());
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(out)) = (kernel.is_simd(), small.get::<A, B, O>(sub, rq, pre)?) {
        // Every step in f32 lanes, each checked exact on all its inputs (`SmallF32`): about
        // half the time of the table and f64-lane forms (benches/RESULTS.md, "Measured design choices (integer engine)").
        let fill = |i: usize, o: &mut [std::mem::MaybeUninit<O>]| {
            let ch = i % c;
            let span = i * inner..i * inner + o.len();
            let (xa, xb) = (&av[span.clone()], &bv[span]);
            let (fa, fb) = (pre[0].and_then(|f| f.small(ch)), pre[1].and_then(|f| f.small(ch)));
            // SAFETY: `Avx2` is only constructed after the feature was detected.
            unsafe { add_small_avx2(xa, xb, sub, [fa, fb], &out, o) }
        };
        // The output is written once, not zeroed first.
        // SAFETY: each chunk spans `inner` elements of `av` and `bv` (same shapes), and
        // `add_small_avx2` (`by_eights`) writes all of them.
        let y = unsafe { filled_chunks::<O>(av.len(), inner, fill) };
        return Tensor::from_vec(shape, y);
    }
    let mut y = vec![O::from_i32(0); av.len()];
    if inner > 0 && rq.scale.len() == 1 && (folded || kernel == Kernel::Reference) {
        // One output requantization: every output is one of 511 sums' (the tables' bases
        // are the same for every channel), so a table of them replaces the arithmetic.
        // Faster than the AVX2 arithmetic with a folded input, slower without one
        // (benches/RESULTS.md, "Measured design choices (integer engine)").
        let base = |f: Option<&FoldedRequant>, min: i32| f.map_or(min, |f| f.base);
        let (base_a, base_b) = (base(pre[0], A::MIN), base(pre[1], B::MIN));
        let sums = SumTable::new(
            sub,
            if sub { base_a - base_b } else { base_a + base_b },
            rq.factor[0],
            rq.row_out(),
        );
        y.par_chunks_mut(inner)
            .zip(av.par_chunks(inner).zip(bv.par_chunks(inner)))
            .enumerate()
            .try_for_each(|(i, (o, (xa, xb)))| {
                let ch = i % c;
                let a = Operand {
                    x: xa,
                    lut: table_of(pre[0], ch)?.map(|t| t.bytes),
                };
                let b = Operand {
                    x: xb,
                    lut: table_of(pre[1], ch)?.map(|t| t.bytes),
                };
                sums.apply(a, b, o);
                Ok::<(), Error>(())
            })?;
    } else if inner > 0 {
        y.par_chunks_mut(inner)
            .zip(av.par_chunks(inner).zip(bv.par_chunks(inner)))
            .enumerate()
            .try_for_each(|(i, (o, (xa, xb)))| {
                let ch = i % c;
                let (ta, tb) = (table_of(pre[0], ch)?, table_of(pre[1], ch)?);
                // The tables' bases, taken out of the lookups, come back as the bias.
                let (base_a, base_b) = (ta.map_or(0, |t| t.base), tb.map_or(0, |t| t.base));
                let bias = if sub { base_a - base_b } else { base_a + base_b };
                let a = Operand {
                    x: xa,
                    lut: ta.map(|t| t.bytes),
                };
                let b = Operand {
                    x: xb,
                    lut: tb.map(|t| t.bytes),
                };
                let f = rq.factor[if rq.scale.len() == 1 { 0 } else { ch }];
                match kernel {
                    Kernel::Reference => add_requant_block(a, b, sub, bias, f, rq.row_out(), o),
                    // SAFETY: the SIMD kinds are only constructed after AVX2 was detected.
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512Vnni => unsafe {
                        add_requant_avx2(a, b, sub, bias, f as f64, rq.row_out(), o)
                    },
                }
                Ok::<(), Error>(())
            })?;
    }
    Tensor::from_vec(shape, y)
}

/// `small_sum` of an `AddRequant`, kept from its first run (the op's fields do not change
/// after lowering; `fold_add_requants` resets it when it folds an input).
///
/// Why: checking the form takes a few hundred exact requantizations per merge, a visible
/// share of a small network's time when done at every run (benches/RESULTS.md, "Measured design choices (integer engine)").
#[derive(Debug, Clone, Default)]
pub struct SmallSums(Box<OnceLock<(u8, Option<SmallF32>)>>);

impl SmallSums {
    /// The form for these containers: the one found at the first run, or computed again
    /// when the containers differ from that run's (one graph, one set of containers).
    fn get<A: QElem, B: QElem, O: QElem>(
        &self,
        sub: bool,
        rq: &Requant,
        pre: [Option<&FoldedRequant>; 2],
    ) -> Result<Option<SmallF32>> {
        let key = A::UNSIGNED as u8 | (B::UNSIGNED as u8) << 1 | (O::UNSIGNED as u8) << 2;
        if let Some((k, v)) = self.0.get() {
            if *k == key {
                return Ok(*v);
            }
        }
        let v = small_sum::<A, B, O>(sub, rq, pre)?;
        // Two threads may compute it at once; both get the same value.
        let _ = self.0.set((key, v));
        Ok(v)
    }
}

/// A cache: every `SmallSums` equals every other (the ops compare by their definition).
impl PartialEq for SmallSums {
    fn eq(&self, _: &SmallSums) -> bool {
        true
    }
}

/// The f32 form of `add_requant` with one output factor, when every folded input has one and
/// the output's equals the exact requantization on every sum the operands can make.
fn small_sum<A: QElem, B: QElem, O: QElem>(
    sub: bool,
    rq: &Requant,
    pre: [Option<&FoldedRequant>; 2],
) -> Result<Option<SmallF32>> {
    if rq.scale.len() != 1 {
        return Ok(None);
    }
    // Each operand's values: its container's, or its folded requantization's bounds.
    let range = |f: Option<&FoldedRequant>, lo: i32, hi: i32| match f {
        None => Some((lo, hi)),
        Some(f) => f.small.as_ref().map(|_| (f.requant.lo, f.requant.hi)),
    };
    let (Some((alo, ahi)), Some((blo, bhi))) = (range(pre[0], A::MIN, A::MAX), range(pre[1], B::MIN, B::MAX)) else {
        return Ok(None);
    };
    let (first, last) = if sub {
        (alo - bhi, ahi - blo)
    } else {
        (alo + blo, ahi + bhi)
    };
    let sums: Vec<i32> = (first..=last).collect();
    let mut exact = vec![O::from_i32(0); sums.len()];
    // The exact row requantization (|sum| stays far below its fast bound).
    rq.row(0, &sums, 0, 1024, &mut exact);
    Ok(SmallF32::verified(0, rq.factor[0], rq.row_out(), first..=last, |v| {
        exact[(v - first) as usize].to_i32()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int::IntOp;
    use crate::kernels::requant::{requant_row_ref, Rounding};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// `QAddRequantize` with and without a folded requantization of either or both inputs
        /// (one factor or one per channel), any container mix, Add or Sub, output zero point
        /// and rounding, through `eval` and every kernel this CPU runs, against plain
        /// arithmetic: the folded nodes' own `eval`, an i32 add, and the integer-only
        /// reference requantization. Container extremes are over-represented.
        #[test]
        fn add_requant_matches_plain_arithmetic(
            c in 1usize..4, n in 1usize..40, seed in any::<u64>(), sub in any::<bool>(), ua in any::<bool>(),
            ub in any::<bool>(), fold in 0usize..4, per_channel in any::<bool>(), fa in 0.01f32..3.0,
            fo in 0.01f32..3.0, xz in -20i32..20, unsigned_out in any::<bool>(), zero in -3i32..4, f32_rounding in any::<bool>(),
            per_channel_out in any::<bool>(),
        ) {
            let mut st = seed | 1;
            let mut next = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st as u8 };
            let mut bytes = |unsigned: bool| {
                let (min, max) = if unsigned { (0u8, 255u8) } else { (0x80, 0x7f) };
                let v: Vec<u8> = (0..c * n).map(|_| match next() % 4 { 0 => min, 1 => max, _ => next() }).collect();
                if unsigned {
                    Tensor::from_vec(vec![1, c, n], v).unwrap()
                } else {
                    Tensor::from_vec(vec![1, c, n], v.into_iter().map(|b| b as i8).collect::<Vec<_>>()).unwrap()
                }
            };
            let (a, b) = (bytes(ua), bytes(ub));
            let (lo, hi) = if unsigned_out { (0, 255) } else { (-128, 127) };
            // One output factor takes the table of sums; one per channel, the arithmetic.
            let out_factors = if per_channel_out { (0..c).map(|k| fo * (1.0 + k as f32 * 0.21)).collect() } else { vec![fo] };
            let mut requant = Requant::new(out_factors, lo, hi).unwrap();
            requant.zero = zero.clamp(lo, hi);
            requant.rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            // Folded requantizations: a's to i8, b's to u8 (both containers' tables).
            let folded_for = |i: usize| {
                let factors = if per_channel { (0..c).map(|k| fa * (1.0 + k as f32 * 0.37)).collect() } else { vec![fa] };
                let (lo, hi) = if i == 0 { (-128, 127) } else { (0, 255) };
                let mut pre = Requant::new(factors, lo, hi).unwrap();
                pre.x_zero = xz;
                pre
            };
            let pres = [folded_for(0), folded_for(1)];
            let folds = [fold == 0 || fold == 3, fold == 1 || fold == 3];
            let mut folded: [Option<Box<FoldedRequant>>; 2] = [None, None];
            for (i, t) in [&a, &b].into_iter().enumerate() {
                if folds[i] {
                    folded[i] = Some(Box::new(FoldedRequant::new("f".into(), "v".into(), pres[i].clone(), t.dtype()).unwrap()));
                }
            }
            let ints = |t: &Tensor, i: usize| {
                let t = if folds[i] { pres[i].eval(t).unwrap() } else { t.clone() };
                t.to_f32_vec().into_iter().map(|v| v as i32).collect::<Vec<_>>()
            };
            let (va, vb) = (ints(&a, 0), ints(&b, 1));
            let sums: Vec<i32> = va.iter().zip(&vb).map(|(&p, &q)| if sub { p - q } else { p + q }).collect();
            let mut want = vec![0i32; c * n];
            for (ch, (want, sums)) in want.chunks_mut(n).zip(sums.chunks(n)).enumerate() {
                let scale = &requant.scale[if per_channel_out { ch } else { 0 }];
                if unsigned_out {
                    let mut w = vec![0u8; n];
                    requant_row_ref(sums, 0, scale, requant.row_out(), &mut w);
                    want.iter_mut().zip(&w).for_each(|(d, &v)| *d = v as i32);
                } else {
                    let mut w = vec![0i8; n];
                    requant_row_ref(sums, 0, scale, requant.row_out(), &mut w);
                    want.iter_mut().zip(&w).for_each(|(d, &v)| *d = v as i32);
                }
            }
            let ints_of = |t: Tensor| t.to_f32_vec().iter().map(|&v| v as i32).collect::<Vec<_>>();
            let pre = [folded[0].as_deref(), folded[1].as_deref()];
            for kernel in Kernel::available() {
                let got = with_qelem!(a.dtype(), A => with_qelem!(b.dtype(), B => with_qelem!(requant.out, O => {
                    add_requant::<A, B, O>(&a, &b, sub, &requant, pre, &SmallSums::default(), kernel)
                }))).unwrap();
                prop_assert_eq!(ints_of(got), want.clone(), "{:?}", kernel);
            }
            let op = IntOp::AddRequant { sub, requant: requant.clone(), folded: folded.clone(), small: SmallSums::default() };
            // Twice: the second run takes the f32 form the first one found.
            for _ in 0..2 {
                let got = op.eval(&[Some(&a), Some(&b)]).unwrap().remove(0);
                prop_assert_eq!(ints_of(got), want.clone());
            }
        }
    }
}
