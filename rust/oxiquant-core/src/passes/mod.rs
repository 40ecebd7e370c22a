//! Graph transforms, one per file, each testable alone.

pub mod fold_constants;

pub use fold_constants::fold_constants;
