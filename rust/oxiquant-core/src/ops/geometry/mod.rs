//! Sampling and geometry: grid sampling and affine grids, column-to-image, deformable
//! convolution, rotary position embeddings, max unpooling; with Swish and
//! MeanVarianceNormalization.

mod affine_grid;
mod col2im;
mod deform_conv;
mod grid_sample;
mod max_unpool;
mod rotary;
mod swish_mvn;

pub use affine_grid::AffineGrid;
pub use col2im::Col2Im;
pub use deform_conv::DeformConv;
pub use grid_sample::{GridSample, SampleMode, SamplePadding};
pub use max_unpool::MaxUnpool;
pub use rotary::RotaryEmbedding;
pub use swish_mvn::{MeanVarianceNorm, Swish};
