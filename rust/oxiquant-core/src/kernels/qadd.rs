//! The loops of the integer engine's residual merge (`AddRequant`: `requant(a ± b)` of two
//! 8-bit tensors, each input first through its folded requantization's byte table if any):
//! the table of the 511 possible sums, the portable block, and the AVX2 forms (eight sums
//! at a time from bytes, or every step in f32 lanes checked exact by `SmallF32`). Which
//! one runs is chosen in `int::add`; its property test compares them all with plain
//! arithmetic.

use super::requant::{requant_row, QElem, RowOut};
#[cfg(target_arch = "x86_64")]
use super::requant::{RowAvx2, SmallF32, SmallF32Avx2};

/// Entries of a channel's table.
pub(crate) const LUT_LEN: usize = 256;

/// One input of a block of `add_requant`: its values, through a table (without its base) or not.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a, T> {
    pub x: &'a [T],
    pub lut: Option<&'a [u8; LUT_LEN]>,
}

/// How `gather` combines the values it reads with `dst`.
#[derive(Clone, Copy)]
enum Gather {
    Set,
    Add,
    Sub,
}

/// Writes the values of `x` (through `table`, indexed by `x - min`, without its base, when its
/// requantization was folded here) into `dst`, or adds them to it, or subtracts them from it.
fn gather<T: QElem>(dst: &mut [i32], x: &[T], table: Option<&[u8; LUT_LEN]>, mode: Gather) {
    // One loop per mode, so that none branches per element.
    match mode {
        Gather::Set => gather_with(dst, x, table, |_, v| v),
        Gather::Add => gather_with(dst, x, table, |d, v| d + v),
        Gather::Sub => gather_with(dst, x, table, |d, v| d - v),
    }
}

#[inline(always)]
fn gather_with<T: QElem>(dst: &mut [i32], x: &[T], table: Option<&[u8; LUT_LEN]>, op: impl Fn(i32, i32) -> i32) {
    match table {
        Some(t) => dst
            .iter_mut()
            .zip(x)
            .for_each(|(d, &v)| *d = op(*d, t[(v.to_i32() - <T as QElem>::MIN) as u8 as usize] as i32)),
        None => dst.iter_mut().zip(x).for_each(|(d, &v)| *d = op(*d, v.to_i32())),
    }
}

/// The requantized value of every `a ± b` of two bytes (`a - min(A)` or a table's byte,
/// the same for `b`): 511 entries, indexed by `a + b` or `a - b + 255`.
pub(crate) struct SumTable<O> {
    sub: bool,
    out: Vec<O>,
}

impl<O: QElem> SumTable<O> {
    /// `bias`: what the true sum exceeds the bytes' sum by (the bases of both operands);
    /// `f` and `out`: the output requantization.
    pub(crate) fn new(sub: bool, bias: i32, f: f32, out: RowOut) -> SumTable<O> {
        let first = if sub { -255 } else { 0 };
        let sums: Vec<i32> = (first..first + 511).collect();
        let mut table = vec![O::from_i32(0); sums.len()];
        // |sum + bias| stays below 1024 + the bases, far below the fast row's bound, where
        // it is the exact requantization.
        requant_row(&sums, bias, f, out, &mut table);
        SumTable { sub, out: table }
    }

    pub(crate) fn apply<A: QElem, B: QElem>(&self, a: Operand<A>, b: Operand<B>, dst: &mut [O]) {
        // One loop per case, so that none branches per element.
        match (a.lut, b.lut) {
            (None, None) => self.each(a.x, b.x, dst, |v| byte_of(v), |v| byte_of(v)),
            (Some(ta), None) => self.each(a.x, b.x, dst, |v| ta[byte_of(v)] as usize, |v| byte_of(v)),
            (None, Some(tb)) => self.each(a.x, b.x, dst, |v| byte_of(v), |v| tb[byte_of(v)] as usize),
            (Some(ta), Some(tb)) => self.each(a.x, b.x, dst, |v| ta[byte_of(v)] as usize, |v| tb[byte_of(v)] as usize),
        }
    }

    #[inline(always)]
    fn each<A: Copy, B: Copy>(
        &self,
        a: &[A],
        b: &[B],
        dst: &mut [O],
        fa: impl Fn(A) -> usize,
        fb: impl Fn(B) -> usize,
    ) {
        // Fixed-size table: the index (at most 510) needs no bounds check.
        let Ok(out): std::result::Result<&[O; 511], _> = self.out.as_slice().try_into() else {
            return;
        };
        let it = dst.iter_mut().zip(a.iter().zip(b));
        if self.sub {
            it.for_each(|(d, (&x, &y))| *d = out[(fa(x) + 255 - fb(y)).min(510)]);
        } else {
            it.for_each(|(d, (&x, &y))| *d = out[(fa(x) + fb(y)).min(510)]);
        }
    }
}

/// A byte's offset from its container's minimum (0..=255).
#[inline(always)]
fn byte_of<T: QElem>(v: T) -> usize {
    (v.to_i32() - T::MIN) as u8 as usize
}

/// One block of `add_requant` (`int`'s `AddRequant`) in portable code: the sums in a
/// buffer, then the requantization row by `f` into `out`.
pub(crate) fn add_requant_block<A: QElem, B: QElem, O: QElem>(
    a: Operand<A>,
    b: Operand<B>,
    sub: bool,
    bias: i32,
    f: f32,
    out: RowOut,
    o: &mut [O],
) {
    let second = if sub { Gather::Sub } else { Gather::Add };
    let mut buf = [0i32; 256];
    for ((os, xa), xb) in o.chunks_mut(256).zip(a.x.chunks(256)).zip(b.x.chunks(256)) {
        let buf = &mut buf[..os.len()];
        gather(buf, xa, a.lut, Gather::Set);
        gather(buf, xb, b.lut, second);
        // Sums of two 8-bit values (and the bases) are far below the fast row's bound,
        // where it is the exact requantization.
        requant_row(buf, bias, f, out, os);
    }
}

/// `out(fa(a) ± fb(b))` for eight elements at a time in AVX2 lanes (`fa`, `fb` the folded
/// requantizations, if any), the last few through padded copies.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_small_avx2<A: QElem, B: QElem, O: QElem>(
    a: &[A],
    b: &[B],
    sub: bool,
    folded: [Option<&SmallF32>; 2],
    out: &SmallF32,
    dst: &mut [std::mem::MaybeUninit<O>],
) {
    use std::arch::x86_64::*;
    let [fa, fb] = folded.map(|f| f.map(|f| SmallF32Avx2::new(f)));
    let out = SmallF32Avx2::new(out);
    // b or -b: (b ^ m) - m with m all ones negates.
    let m = _mm256_set1_epi32(if sub { -1 } else { 0 });
    let eight = |pa: *const A, pb: *const B| {
        // SAFETY: the callers below pass eight readable elements.
        let (mut va, mut vb) = unsafe { (operand8(pa), operand8(pb)) };
        if let Some(f) = &fa {
            va = f.lanes(va);
        }
        if let Some(f) = &fb {
            vb = f.lanes(vb);
        }
        let y = out.lanes(_mm256_add_epi32(va, _mm256_sub_epi32(_mm256_xor_si256(vb, m), m)));
        // The lanes are inside O's range, so the saturating packs are exact.
        let words = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y));
        if O::UNSIGNED {
            _mm_packus_epi16(words, words)
        } else {
            _mm_packs_epi16(words, words)
        }
    };
    // SAFETY: AVX2 is available (this function's contract).
    unsafe { by_eights(a, b, dst, eight) }
}

/// `dst[i..i + 8]` from `eight(&a[i], &b[i])` (eight output bytes in the low half) over
/// the elements all three slices hold, the last few through padded copies so that they
/// get the same arithmetic. Writes every element of `dst` when `a` and `b` are as long.
///
/// # Safety
/// AVX2 is available, and `eight` reads at most eight elements from each pointer.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn by_eights<A: QElem, B: QElem, O: QElem>(
    a: &[A],
    b: &[B],
    dst: &mut [std::mem::MaybeUninit<O>],
    eight: impl Fn(*const A, *const B) -> std::arch::x86_64::__m128i,
) {
    use std::arch::x86_64::*;
    let n = dst.len().min(a.len()).min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, within all three slices; O is one byte.
        unsafe {
            let y = eight(a.as_ptr().add(i), b.as_ptr().add(i));
            _mm_storel_epi64(dst.as_mut_ptr().add(i) as *mut __m128i, y);
        }
        i += 8;
    }
    if i < n {
        let (mut ta, mut tb, mut to) = ([A::from_i32(0); 8], [B::from_i32(0); 8], [O::from_i32(0); 8]);
        ta[..n - i].copy_from_slice(&a[i..n]);
        tb[..n - i].copy_from_slice(&b[i..n]);
        // SAFETY: the copies hold eight elements; `to` is eight bytes.
        unsafe { _mm_storel_epi64(to.as_mut_ptr() as *mut __m128i, eight(ta.as_ptr(), tb.as_ptr())) };
        for (d, &v) in dst[i..n].iter_mut().zip(&to) {
            d.write(v);
        }
    }
}

/// Eight values of `x` from `p` as i32 lanes.
///
/// # Safety
/// AVX2 is available and `p` points to eight readable elements.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn operand8<T: QElem>(p: *const T) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees eight readable bytes at `p` (T is one byte).
    let bytes = unsafe { _mm_loadl_epi64(p as *const __m128i) };
    if T::UNSIGNED {
        _mm256_cvtepu8_epi32(bytes)
    } else {
        _mm256_cvtepi8_epi32(bytes)
    }
}

/// `dst[i] = lut[x[i] - min]` (the table's raw bytes).
#[inline(always)]
fn map_bytes<T: QElem>(dst: &mut [u8], x: &[T], lut: &[u8; LUT_LEN]) {
    dst.iter_mut()
        .zip(x)
        .for_each(|(d, &v)| *d = lut[(v.to_i32() - <T as QElem>::MIN) as u8 as usize]);
}

/// One block of `add_requant` (`int`'s `AddRequant`) in AVX2: inputs with a table go through it into a byte buffer
/// (scalar lookups, which beat the AVX2 gather here), then eight sums at a time are
/// requantized straight from the bytes, no i32 buffer in between.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_requant_avx2<A: QElem, B: QElem, O: QElem>(
    a: Operand<A>,
    b: Operand<B>,
    sub: bool,
    bias: i32,
    f: f64,
    out: RowOut,
    dst: &mut [O],
) {
    // Sums of two 8-bit values (and the bases) are far below the fast kernel's bound.
    let row = RowAvx2::new(bias, f, out, O::UNSIGNED);
    let (mut ma, mut mb) = ([0u8; 256], [0u8; 256]);
    for ((o, xa), xb) in dst.chunks_mut(256).zip(a.x.chunks(256)).zip(b.x.chunks(256)) {
        let n = o.len();
        // SAFETY (all four): AVX2 is available.
        match (a.lut, b.lut) {
            (None, None) => unsafe { add_bytes_avx2(xa, xb, sub, &row, o) },
            (Some(ta), None) => {
                map_bytes(&mut ma[..n], xa, ta);
                unsafe { add_bytes_avx2(&ma[..n], xb, sub, &row, o) }
            }
            (None, Some(tb)) => {
                map_bytes(&mut mb[..n], xb, tb);
                unsafe { add_bytes_avx2(xa, &mb[..n], sub, &row, o) }
            }
            (Some(ta), Some(tb)) => {
                map_bytes(&mut ma[..n], xa, ta);
                map_bytes(&mut mb[..n], xb, tb);
                unsafe { add_bytes_avx2(&ma[..n], &mb[..n], sub, &row, o) }
            }
        }
    }
}

/// `row` applied to `a ± b`, eight at a time.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_bytes_avx2<A: QElem, B: QElem, O: QElem>(a: &[A], b: &[B], sub: bool, row: &RowAvx2, dst: &mut [O]) {
    use std::arch::x86_64::*;
    // b or -b: (b ^ m) - m with m all ones negates.
    let m = _mm256_set1_epi32(if sub { -1 } else { 0 });
    // SAFETY: AVX2 is available; `sum8` reads eight elements from each pointer. Seen as
    // `MaybeUninit`, `dst` only receives initialized values.
    unsafe {
        let dst = &mut *(dst as *mut [O] as *mut [std::mem::MaybeUninit<O>]);
        by_eights(a, b, dst, |pa, pb| sum8(pa, pb, m, row))
    }
}

/// Eight requantized `a + (b ^ m) - m` from eight elements at `pa` and `pb`.
///
/// # Safety
/// AVX2 is available and `pa`, `pb` point to eight readable elements.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum8<A: QElem, B: QElem>(
    pa: *const A,
    pb: *const B,
    m: std::arch::x86_64::__m256i,
    row: &RowAvx2,
) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from the caller.
    let (va, vb) = unsafe { (operand8(pa), operand8(pb)) };
    row.bytes8(_mm256_add_epi32(va, _mm256_sub_epi32(_mm256_xor_si256(vb, m), m)))
}
