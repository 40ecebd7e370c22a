//! Quantized models from other tools with parameters ONNX defines no computation for: a
//! scale that is zero, negative, NaN or infinite, a zero point that is not a value of the
//! quantized type. Refused at load time (`Graph::from_raw`) when they are constants, naming
//! the first node that reads them; refused when the node runs when the graph computes them.
//! (tests/interop/test_foreign_hostile.py checks the same through `oxiquant.load`.)
// Tests may unwrap (clippy.toml); this covers their helper functions too.
#![allow(clippy::unwrap_used)]

use oxiquant_core::testing::{feeds, ints, tensor, GraphBuilder};
use oxiquant_core::{exec, Error, Tensor};

/// The parameters of `qdq_conv` that the cases change.
#[derive(Clone)]
struct Case {
    x_scale: Tensor,
    x_zero: Tensor,
    w_scale: Tensor,
    y_scale: Tensor,
    bias_zero: Tensor,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            x_scale: Tensor::scalar(0.02f32),
            x_zero: Tensor::scalar(128u8),
            w_scale: Tensor::scalar(0.01f32),
            y_scale: Tensor::scalar(0.05f32),
            bias_zero: Tensor::scalar(0i32),
        }
    }
}

/// x -> QuantizeLinear "quantize_x" -> DequantizeLinear "dequantize_x" -> Conv (weight from
/// DequantizeLinear "dequantize_w", bias from DequantizeLinear "dequantize_b") ->
/// QuantizeLinear "quantize_y" -> DequantizeLinear "dequantize_y": [1, 2, 4, 4] -> [1, 3, 4, 4].
fn qdq_conv(c: &Case) -> GraphBuilder {
    let w: Vec<i8> = tensor(&[3, 2, 3, 3], 1, 100.0)
        .to_f32_vec()
        .iter()
        .map(|&v| v as i8)
        .collect();
    GraphBuilder::new()
        .input("x", &[1, 2, 4, 4])
        .init("xs", c.x_scale.clone())
        .init("xz", c.x_zero.clone())
        .init("w_q", Tensor::from_vec(vec![3, 2, 3, 3], w).unwrap())
        .init("ws", c.w_scale.clone())
        .init("wz", Tensor::scalar(0i8))
        .init("b_q", Tensor::from_vec(vec![3], vec![10i32, -20, 30]).unwrap())
        .init("bs", Tensor::scalar(0.0002f32))
        .init("bz", c.bias_zero.clone())
        .init("ys", c.y_scale.clone())
        .init("yz", Tensor::scalar(128u8))
        .node("QuantizeLinear", &["x", "xs", "xz"], &["xq"])
        .named("quantize_x")
        .node("DequantizeLinear", &["xq", "xs", "xz"], &["xd"])
        .named("dequantize_x")
        .node("DequantizeLinear", &["w_q", "ws", "wz"], &["w"])
        .named("dequantize_w")
        .node("DequantizeLinear", &["b_q", "bs", "bz"], &["b"])
        .named("dequantize_b")
        .node("Conv", &["xd", "w", "b"], &["c"])
        .attr("pads", ints(&[1, 1, 1, 1]))
        .named("conv")
        .node("QuantizeLinear", &["c", "ys", "yz"], &["cq"])
        .named("quantize_y")
        .node("DequantizeLinear", &["cq", "ys", "yz"], &["y"])
        .named("dequantize_y")
        .output("y")
}

/// The load error, which must be a model-format error located at `node`.
fn refused_at(c: &Case, node: &str) -> String {
    let e = qdq_conv(c)
        .try_build()
        .expect_err("a hostile model must be refused at load");
    let msg = e.to_string();
    assert!(matches!(e.kind(), Error::ModelFormat(_)), "{msg}");
    assert!(matches!(&e, Error::Node { node: n, .. } if n == node), "{msg}");
    msg
}

fn bad_scales() -> Vec<(&'static str, f32)> {
    vec![
        ("zero", 0.0),
        ("negative", -0.02),
        ("nan", f32::NAN),
        ("inf", f32::INFINITY),
        ("-inf", f32::NEG_INFINITY),
    ]
}

#[test]
fn the_valid_model_loads_runs_and_imports() {
    let g = qdq_conv(&Case::default()).build();
    let x = tensor(&[1, 2, 4, 4], 3, 2.0);
    let y = exec::run(&g, feeds(&[("x", &x)])).unwrap().remove(0).1;
    assert_eq!(y.shape(), &[1, 3, 4, 4]);
    oxiquant_core::onnx::import_quantized::import_quantized(&g).unwrap();
}

#[test]
fn bad_scales_are_refused_at_load_naming_their_first_reader() {
    for (what, v) in bad_scales() {
        for (case, node, name) in [
            (
                Case {
                    x_scale: Tensor::scalar(v),
                    ..Case::default()
                },
                "quantize_x",
                "y_scale",
            ),
            (
                Case {
                    w_scale: Tensor::scalar(v),
                    ..Case::default()
                },
                "dequantize_w",
                "x_scale",
            ),
            (
                Case {
                    y_scale: Tensor::scalar(v),
                    ..Case::default()
                },
                "quantize_y",
                "y_scale",
            ),
        ] {
            let msg = refused_at(&case, node);
            assert!(
                msg.contains(&format!("{name} must be positive and finite")),
                "{what}: {msg}"
            );
        }
    }
}

#[test]
fn a_bad_element_of_per_channel_scales_is_named() {
    let msg = refused_at(
        &Case {
            w_scale: Tensor::from_vec(vec![3], vec![0.01f32, 0.0, 0.02]).unwrap(),
            ..Case::default()
        },
        "dequantize_w",
    );
    assert!(msg.contains("got 0 (element 1 of 3)"), "{msg}");
}

#[test]
fn zero_points_outside_the_quantized_type_are_refused() {
    // An int32 zero point (300) for a QuantizeLinear: no uint8 value is 300, and ONNX has
    // no int32 QuantizeLinear output.
    let msg = refused_at(
        &Case {
            x_zero: Tensor::scalar(300i32),
            ..Case::default()
        },
        "quantize_x",
    );
    assert!(
        msg.contains("y_zero_point must be uint8 or int8") && msg.contains("300"),
        "{msg}"
    );
    // An int32 DequantizeLinear (a bias) with a zero point other than 0.
    let msg = refused_at(
        &Case {
            bias_zero: Tensor::scalar(5i32),
            ..Case::default()
        },
        "dequantize_b",
    );
    assert!(msg.contains("must be 0, got 5"), "{msg}");
    // A zero point of another type than the tensor it describes (int8 for the int32 bias).
    let msg = refused_at(
        &Case {
            bias_zero: Tensor::scalar(0i8),
            ..Case::default()
        },
        "dequantize_b",
    );
    assert!(msg.contains("x_zero_point is int8 but x is int32"), "{msg}");
}

/// A scale the graph computes (here from a second input) is only known when the node runs:
/// the run fails, naming the node, instead of dividing by it.
#[test]
fn computed_bad_scales_are_refused_when_the_node_runs() {
    let g = GraphBuilder::new()
        .input("x", &[4])
        .input("s", &[])
        .init("z", Tensor::scalar(0u8))
        .node("QuantizeLinear", &["x", "s", "z"], &["q"])
        .named("quantize")
        .node("DequantizeLinear", &["q", "s", "z"], &["y"])
        .named("dequantize")
        .output("y")
        .build();
    let x = Tensor::from_vec(vec![4], vec![0.0f32, 0.5, 1.0, 2.0]).unwrap();
    let y = exec::run(&g, feeds(&[("x", &x), ("s", &Tensor::scalar(0.5f32))])).unwrap();
    assert_eq!(y[0].1.to_f32_vec(), [0.0, 0.5, 1.0, 2.0]);
    for (what, v) in bad_scales() {
        let e = exec::run(&g, feeds(&[("x", &x), ("s", &Tensor::scalar(v))])).unwrap_err();
        assert!(
            matches!(&e, Error::Node { node, .. } if node == "quantize") && matches!(e.kind(), Error::ModelFormat(_)),
            "{what}: {e}"
        );
        assert!(
            e.to_string().contains("y_scale must be positive and finite"),
            "{what}: {e}"
        );
    }
}

/// QOperator ops: the same rules for each of their scale / zero point pairs.
#[test]
fn qoperator_parameters_are_checked_pair_by_pair() {
    let conv = |xs: f32, wz: Tensor, ys: f32| {
        GraphBuilder::new()
            .input_typed(
                "x",
                oxiquant_core::DType::U8,
                Some(vec![oxiquant_core::graph::Dim::Fixed(1); 4]),
            )
            .init("xs", Tensor::scalar(xs))
            .init("xz", Tensor::scalar(128u8))
            .init("w", Tensor::from_vec(vec![1, 1, 1, 1], vec![3i8]).unwrap())
            .init("ws", Tensor::scalar(0.5f32))
            .init("wz", wz)
            .init("ys", Tensor::scalar(ys))
            .init("yz", Tensor::scalar(128u8))
            .node("QLinearConv", &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], &["y"])
            .named("qconv")
            .output_typed("y", oxiquant_core::DType::U8)
            .try_build()
    };
    assert!(conv(0.1, Tensor::scalar(0i8), 0.2).is_ok());
    let msg = |r: oxiquant_core::Result<oxiquant_core::Graph>| r.expect_err("refused").to_string();
    assert!(msg(conv(-0.1, Tensor::scalar(0i8), 0.2)).contains("x_scale must be positive"));
    assert!(msg(conv(0.1, Tensor::scalar(0i8), f32::NAN)).contains("y_scale must be positive"));
    let m = msg(conv(0.1, Tensor::scalar(0i32), 0.2));
    assert!(
        m.contains("'qconv'") && m.contains("w_zero_point must be uint8 or int8"),
        "{m}"
    );
    let m = msg(conv(0.1, Tensor::scalar(0u8), 0.2));
    assert!(m.contains("w_zero_point is uint8 but w is int8"), "{m}");
}
