//! Small networks holding one of each thing the PTQ passes treat differently.

use super::{ints, tensor, GraphBuilder};
use crate::graph::Graph;
use crate::onnx::AttrValue;
use crate::tensor::Tensor;

/// Channels of the input of `residual_cnn`, and its spatial size.
pub const CNN_CHANNELS: usize = 3;
pub const CNN_SIZE: usize = 8;
/// Outputs of `residual_cnn`'s classifier.
pub const CNN_CLASSES: usize = 5;

/// `[N, 3, 8, 8] -> [N, 5]`:
///
/// ```text
/// x -> Conv(3->8, 3x3) -> BatchNormalization -> Relu "r1" -> Conv(8->8) "c2" -> Add(c2, r1) "s"
///   -> Relu "r2" -> MaxPool(2) "p" [-> Sigmoid "p_island" if island] -> Conv(8->4, 1x1, no bias)
///   -> Clip(0, 6) "k" -> GlobalAveragePool "g" -> Flatten -> Identity -> Gemm(alpha 0.5, beta 2, transB) "out"
/// ```
///
/// So: a BatchNormalization, an Identity and a Gemm alpha/beta for `prepare` to fold; affine
/// nodes with and without bias; a residual merge; a bounded op (Clip); an average that needs
/// rounding; a max pool; with `island`, a float island (Sigmoid).
pub fn residual_cnn(island: bool) -> Graph {
    let c = CNN_CHANNELS;
    let pos = |shape: &[usize], seed| {
        // Positive: BatchNormalization variances and scales.
        let t = tensor(shape, seed, 0.5);
        let v: Vec<f32> = t.to_f32_vec().iter().map(|x| x.abs() + 0.5).collect();
        Tensor::from_vec(shape.to_vec(), v).expect("same length")
    };
    let mut b = GraphBuilder::new()
        .batched_input("x", &[1, c, CNN_SIZE, CNN_SIZE])
        .weights("w1", &[8, c, 3, 3], 1)
        .weights("b1", &[8], 2)
        .init("bn_scale", pos(&[8], 3))
        .weights("bn_bias", &[8], 4)
        .weights("bn_mean", &[8], 5)
        .init("bn_var", pos(&[8], 6))
        .init("w2", tensor(&[8, 8, 3, 3], 7, 0.4))
        .weights("b2", &[8], 8)
        .init("w3", tensor(&[4, 8, 1, 1], 9, 2.0))
        .init("clip_lo", Tensor::scalar(0.0f32))
        .init("clip_hi", Tensor::scalar(6.0f32))
        .weights("wf", &[CNN_CLASSES, 4], 10)
        .weights("bf", &[CNN_CLASSES], 11)
        .node("Conv", &["x", "w1", "b1"], &["c1"])
        .attr("pads", ints(&[1, 1, 1, 1]))
        .named("conv1")
        .node(
            "BatchNormalization",
            &["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            &["n1"],
        )
        .named("bn")
        .node("Relu", &["n1"], &["r1"])
        .named("relu1")
        .node("Conv", &["r1", "w2", "b2"], &["c2"])
        .attr("pads", ints(&[1, 1, 1, 1]))
        .named("conv2")
        .node("Add", &["c2", "r1"], &["s"])
        .named("add")
        .node("Relu", &["s"], &["r2"])
        .named("relu2")
        .node("MaxPool", &["r2"], &["p"])
        .attr("kernel_shape", ints(&[2, 2]))
        .attr("strides", ints(&[2, 2]))
        .named("pool");
    let conv3_in = if island {
        b = b.node("Sigmoid", &["p"], &["p_island"]).named("sigmoid");
        "p_island"
    } else {
        "p"
    };
    b.node("Conv", &[conv3_in, "w3"], &["c3"])
        .named("conv3")
        .node("Clip", &["c3", "clip_lo", "clip_hi"], &["k"])
        .named("relu6")
        .node("GlobalAveragePool", &["k"], &["g"])
        .named("gap")
        .node("Flatten", &["g"], &["f"])
        .named("flatten")
        .node("Identity", &["f"], &["fi"])
        .named("identity")
        .node("Gemm", &["fi", "wf", "bf"], &["out"])
        .attr("transB", AttrValue::Int(1))
        .attr("alpha", AttrValue::Float(0.5))
        .attr("beta", AttrValue::Float(2.0))
        .named("fc")
        .output("out")
        .build()
}

/// A calibration or test batch for `residual_cnn`: `n` images, values `scale` times [-1, 1].
pub fn cnn_batch(n: usize, seed: u64, scale: f32) -> Tensor {
    tensor(&[n, CNN_CHANNELS, CNN_SIZE, CNN_SIZE], seed, scale)
}
