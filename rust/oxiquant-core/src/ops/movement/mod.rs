//! Data movement and shape ops, for any element type, one file each, and the index-table
//! gather they share.

mod cast;
mod cast_like;
mod concat;
mod constant;
mod constant_of_shape;
mod dropout;
mod flatten;
mod gather;
mod identity;
mod pad;
mod reshape;
mod resize;
mod shape;
mod slice;
mod squeeze;
mod transpose;
mod unsqueeze;
// shape and index ops of the operator-coverage work
mod depth_to_space;
mod expand;
mod gather_elements;
mod gather_nd;
mod one_hot;
mod range;
mod split;
// cropping and selection of the loss/normalization coverage work
mod crop_select;
mod unique;
// element types: the same bits read as another type
mod bitcast;
pub use bitcast::{bitcast, BitCast};
// caches of the op tail
mod tensor_scatter;

pub use cast::Cast;
pub use cast_like::CastLike;
pub use concat::{concat, Concat};
pub use constant::Constant;
pub use constant_of_shape::ConstantOfShape;
pub use crop_select::{CenterCropPad, Compress, ReverseSequence};
pub use depth_to_space::{DepthToSpace, SpaceToDepth};
pub use dropout::Dropout;
pub use expand::{Expand, Tile};
pub use flatten::{flatten_shape, Flatten};
pub use gather::Gather;
pub use gather_elements::{GatherElements, Reduction, ScatterElements};
pub use gather_nd::{GatherND, ScatterND};
pub use identity::Identity;
pub use one_hot::OneHot;
pub use pad::{Pad, PadMode};
pub use range::{NonZero, Range, Size};
pub use reshape::{reshape_target, Reshape};
pub use resize::Resize;
pub use shape::{shape_value, Shape};
pub use slice::{Slice, SliceAttrs};
pub use split::Split;
pub use squeeze::Squeeze;
pub use tensor_scatter::TensorScatter;
pub use transpose::Transpose;
pub use unique::Unique;
pub use unsqueeze::Unsqueeze;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Gathers `t`'s elements into a tensor of `shape`: along every axis `d`, output index `o`
/// reads input offset `tables[d][o]` (summed over axes), or `fill` when any of them is
/// `None` (padding). The last axis runs in a tight loop per row, so Slice, Pad and
/// Transpose cost one pass over the output.
pub(crate) fn take_tables(t: &Tensor, shape: Vec<usize>, tables: &[Vec<Option<usize>>], fill: f64) -> Result<Tensor> {
    /// How one output row of the last axis reads its input: a contiguous run (a copy),
    /// offsets without padding, or offsets with padding.
    enum Row<'a> {
        Run(usize),
        Offsets(Vec<usize>),
        Padded(&'a [Option<usize>]),
    }
    /// Fills `out` (the rows of `outer`'s index space, in order) from `v` at `base`.
    fn rows<T: Copy>(v: &[T], outer: &[Vec<Option<usize>>], row: &Row, base: Option<usize>, fill: T, out: &mut [T]) {
        match outer.split_first() {
            None => match (base, row) {
                (Some(b), Row::Run(s)) => out.copy_from_slice(&v[b + s..b + s + out.len()]),
                (Some(b), Row::Offsets(o)) => {
                    for (d, &o) in out.iter_mut().zip(o) {
                        *d = v[b + o];
                    }
                }
                (Some(b), Row::Padded(p)) => {
                    for (d, o) in out.iter_mut().zip(p.iter()) {
                        *d = o.map_or(fill, |o| v[b + o]);
                    }
                }
                (None, _) => out.fill(fill),
            },
            Some((t, rest)) => {
                let sub = out.len() / t.len().max(1);
                for (o, chunk) in t.iter().zip(out.chunks_mut(sub.max(1))) {
                    let b = base.zip(*o).map(|(b, o)| b + o);
                    rows(v, rest, row, b, fill, chunk);
                }
            }
        }
    }
    fn gather<T: Copy + Send + Sync>(v: &[T], tables: &[Vec<Option<usize>>], fill: T) -> Vec<T> {
        let n: usize = tables.iter().map(|t| t.len()).product();
        if n == 0 {
            return Vec::new();
        }
        let Some((last, outer)) = tables.split_last() else {
            return vec![v[0]];
        };
        let row = if last.iter().enumerate().all(|(i, o)| *o == last[0].map(|s| s + i)) && last[0].is_some() {
            Row::Run(last[0].unwrap_or(0))
        } else if last.iter().all(Option::is_some) {
            Row::Offsets(last.iter().flatten().copied().collect())
        } else {
            Row::Padded(last)
        };
        let mut out = vec![fill; n];
        // Large outputs (a batch's shortcut Slice and Pad) in parallel over the first axis
        // longer than one, of the first two; small ones are not worth a task split.
        const PARALLEL_MIN: usize = 1 << 15;
        let split = if n < PARALLEL_MIN {
            None
        } else if outer.first().is_some_and(|t| t.len() > 1) {
            Some((0, Some(0)))
        } else if outer.len() > 1 && outer[1].len() > 1 {
            Some((1, outer[0][0]))
        } else {
            None
        };
        match split {
            Some((axis, base)) => {
                let (t, rest) = (&outer[axis], &outer[axis + 1..]);
                let sub = n / t.len();
                out.par_chunks_mut(sub).zip(t.par_iter()).for_each(|(chunk, o)| {
                    let b = base.zip(*o).map(|(b, o)| b + o);
                    rows(v, rest, &row, b, fill, chunk);
                });
            }
            None => rows(v, outer, &row, Some(0), fill, &mut out),
        }
        out
    }
    let data = crate::dispatch_data!(t.data(), v => crate::tensor::Element::wrap(gather(
        v,
        tables,
        crate::tensor::CastElement::from_f64(fill)
    )));
    Tensor::new(shape, data)
}

pub(crate) fn ints_input(inputs: &[Option<&Tensor>], i: usize, what: &str) -> Result<Option<Vec<i64>>> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .map(|t| t.to_i64_vec())
        .transpose()
        .map_err(|e| Error::shape(format!("{what}: {e}")))
}
