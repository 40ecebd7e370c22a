//! Graph transforms, one per file, each testable alone.

pub mod affine_params;
pub mod fold_batchnorm;
pub mod fold_constants;
pub mod inference_plan;

pub use fold_batchnorm::fold_batchnorms;
pub use fold_constants::fold_constants;
pub use inference_plan::inference_plan;
