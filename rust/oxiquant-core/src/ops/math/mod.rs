//! Element-wise arithmetic, activations and elementary functions (float32; the integer
//! types where ONNX defines the op on them: Add/Sub/Mul/Div, Abs/Neg/Sign/Relu, Min/Max, Mod, Pow).

mod binary;
mod clip;
mod einsum;
mod modulo;
mod pow;
mod prelu;
mod softplus;
mod special;
mod sum;
mod trilu;
mod unary;
mod variadic;
// elementary functions and generators of the loss/normalization coverage work
mod det;
mod shrink;
mod windows;
// text features and spectrogram filters
mod mel;
mod tfidf;

pub use binary::BinaryOp;
pub use clip::{clamp_interval, Clip};
pub use det::Det;
pub use einsum::Einsum;
pub use mel::MelWeightMatrix;
pub use modulo::Mod;
pub use pow::Pow;
pub use prelu::PRelu;
pub use shrink::Shrink;
pub use softplus::Softplus;
pub use sum::Sum;
pub use tfidf::{TfIdfMode, TfIdfVectorizer};
pub use trilu::Trilu;
pub use unary::Unary;
pub use variadic::Variadic;
pub use windows::{EyeLike, Window};

/// Pairs of shapes that broadcast, for the property tests of other ops.
#[cfg(test)]
pub(crate) use binary::tests::broadcastable;
