//! Neural-network layers: convolution, products, normalization, pooling.

mod attention;
mod batch_norm;
pub mod conv;
mod conv_transpose;
mod fused_conv;
mod gemm;
mod global_pool;
mod lp_pool;
mod lrn;
mod matmul;
pub mod pool;
mod recurrent;
mod softmax;
// normalization and softmax variants of the operator-coverage work
mod layer_norm;
mod log_softmax;
mod losses;
mod lp_norm;
// detection, dynamically quantized models and the op tail
mod batch_norm_training;
mod causal_conv;
mod integer;
mod linear_attention;
mod nms;
mod pool_indices;

pub use attention::Attention;
pub use batch_norm::{batch_norm, batch_norm_affine, batch_norm_in_place, BatchNorm};
pub use batch_norm_training::{parse_batch_norm, BatchNormTraining};
pub use causal_conv::CausalConvWithState;
pub use conv::{Conv, Padding};
pub use conv_transpose::ConvTranspose;
pub use fused_conv::FusedConv;
pub use gemm::Gemm;
pub(crate) use global_pool::global_facts;
pub use global_pool::{eval_global, GlobalPool};
pub use integer::{dynamic_params, ConvInteger, DynamicQuantizeLinear, MatMulInteger};
pub use layer_norm::{GroupNorm, LayerNorm};
pub use linear_attention::LinearAttention;
pub use log_softmax::SoftmaxLike;
pub use losses::{Loss, Reduction};
pub use lp_norm::LpNorm;
pub use lp_pool::LpPool;
pub use lrn::Lrn;
pub(crate) use matmul::matmul_facts;
pub use matmul::{matmul, MatMul};
pub use nms::NonMaxSuppression;
pub use pool::{Pool, PoolPlan};
pub use pool_indices::{parse_max_pool, MaxPoolIndices};
pub use recurrent::Recurrent;
pub use softmax::Softmax;
