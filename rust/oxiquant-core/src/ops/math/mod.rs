//! Element-wise arithmetic and activations (float32; Add/Sub/Mul/Div also on int32/int64).

mod binary;
mod clip;
mod softplus;
mod sum;
mod unary;

pub use binary::BinaryOp;
pub use clip::{clamp_interval, Clip};
pub use softplus::Softplus;
pub use sum::Sum;
pub use unary::Unary;

/// Pairs of shapes that broadcast, for the property tests of other ops.
#[cfg(test)]
pub(crate) use binary::tests::broadcastable;
