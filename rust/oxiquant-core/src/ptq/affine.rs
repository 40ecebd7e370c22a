//! The per-channel view of an affine node's parameters, which lives with the generic graph
//! transforms (`passes::affine_params`: BatchNorm folding uses it too) and is re-exported
//! here for the PTQ passes.

pub use crate::passes::affine_params::*;
