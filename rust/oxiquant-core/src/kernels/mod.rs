//! Compute kernels by family. Each fast kernel has a plain reference version beside it and
//! property tests comparing the two.

pub mod activation;
pub mod conv;
pub mod conv_direct;
pub mod conv_transpose;
pub mod conv_winograd;
pub mod cpu;
pub mod depthwise;
pub mod elementwise;
pub mod gemm;
pub mod pool;
pub mod qadd;
pub mod qconv_direct;
pub mod qconv_u8s8;
pub mod qgemm;
pub mod qpool;
pub mod requant;
#[cfg(test)]
pub(crate) mod testing;
