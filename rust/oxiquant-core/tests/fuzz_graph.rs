//! Fuzzing the graph builder, constant folding, the executor and the PTQ passes with
//! arbitrary node lists: random op types (supported ones and a few unknown), random
//! attributes of random kinds (zero, negative and huge values included), random input names
//! (dangling, cyclic, omitted, duplicated outputs), random initializers (float weights of
//! random shapes, int64 tensors that end up as shapes, axes and pads), random opsets.
//!
//! The properties: nothing panics or aborts, every call returns `Ok` or an `Err` (what the
//! errors say is checked by the Python tests, tests/engine/test_hostile_inputs.py), and a PTQ step
//! that fails leaves the graph and its PTQ state exactly as they were. The number of
//! cases is bounded so that this runs in seconds: `PROPTEST_CASES=100000 cargo test -p
//! oxiquant-core --test fuzz_graph` searches longer; `FUZZ_DEBUG=1` prints why each graph
//! was refused (to tune the generator).

use oxiquant_core::graph::{Dim, ValueInfo};
use oxiquant_core::onnx::{self, AttrValue, RawGraph, RawNode};
use oxiquant_core::ptq::{self, Clipping, PtqState};
use oxiquant_core::testing::{ints, raw_node as node_of};
use oxiquant_core::{exec, passes, DType, Graph, Tensor};
use proptest::prelude::*;
use std::collections::HashMap;

const OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Clip",
    "Softmax",
    "BatchNormalization",
    "LRN",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Slice",
    "Pad",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Resize",
    "Upsample",
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Gather",
    "Cast",
    "Round",
    // Not supported: must be reported, never run.
    "Bernoulli",
    "NonMaxSuppression",
    "NotAnOp",
];

/// The attributes an op reads (the fuzzer also gives it others, rarely: those are refused).
fn op_attrs(op: &str) -> &'static [&'static str] {
    match op {
        "Conv" => &["kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"],
        "MaxPool" | "AveragePool" => &[
            "kernel_shape",
            "strides",
            "pads",
            "dilations",
            "ceil_mode",
            "count_include_pad",
            "auto_pad",
        ],
        "Gemm" => &["alpha", "beta", "transA", "transB"],
        "LeakyRelu" => &["alpha"],
        "Clip" => &["min", "max"],
        "Softmax" | "Flatten" | "Concat" | "Gather" => &["axis"],
        "BatchNormalization" => &["epsilon", "training_mode"],
        "LRN" => &["size", "alpha", "beta"],
        "Transpose" => &["perm"],
        "Squeeze" | "Unsqueeze" => &["axes"],
        "Slice" => &["starts", "ends", "axes"],
        "Pad" => &["mode", "pads", "value"],
        "Resize" | "Upsample" => &["mode", "scales", "coordinate_transformation_mode", "nearest_mode"],
        "Constant" => &["value", "value_int", "value_ints", "value_float"],
        "ConstantOfShape" => &["value"],
        "Shape" => &["start", "end"],
        "Cast" => &["to"],
        "Reshape" => &["allowzero"],
        _ => &[],
    }
}

/// The kind of value an attribute takes (the fuzzer sometimes gives another kind).
fn attr_kind(name: &str) -> &'static str {
    match name {
        "kernel_shape" | "strides" | "pads" | "dilations" | "axes" | "perm" | "starts" | "ends" | "value_ints" => {
            "ints"
        }
        "alpha" | "beta" | "epsilon" | "min" | "max" | "value_float" => "float",
        "scales" => "floats",
        "auto_pad" | "mode" | "coordinate_transformation_mode" | "nearest_mode" => "string",
        "value" => "tensor",
        _ => "int",
    }
}

/// Integers that break naive arithmetic: zero, negatives, off-by-ones and huge values.
fn hostile_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -3i64..6,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(1i64 << 40),
        1 => Just(1i64 << 31),
        1 => Just(-(1i64 << 40)),
        1 => Just(u32::MAX as i64),
    ]
}

fn hostile_float() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -4.0f32..4.0,
        1 => Just(0.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(-f32::INFINITY),
        1 => Just(1e30f32),
        1 => Just(1e-30f32),
    ]
}

fn small_shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..5, 0..=max_rank)
}

fn float_tensor(shape: Vec<usize>, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect::<Vec<f32>>();
    Tensor::from_vec(shape, v).expect("length matches the shape")
}

fn any_attr_value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        hostile_int().prop_map(AttrValue::Int),
        hostile_float().prop_map(AttrValue::Float),
        prop::collection::vec(hostile_int(), 0..6).prop_map(AttrValue::Ints),
        prop::collection::vec(hostile_float(), 0..5).prop_map(AttrValue::Floats),
        string_attr(),
        prop::collection::vec(Just("a".to_string()), 0..3).prop_map(AttrValue::Strings),
        tensor_attr(),
    ]
}

fn string_attr() -> impl Strategy<Value = AttrValue> {
    prop::sample::select(vec![
        "NOTSET",
        "SAME_UPPER",
        "SAME_LOWER",
        "VALID",
        "nearest",
        "linear",
        "constant",
        "reflect",
        "edge",
        "half_pixel",
        "asymmetric",
        "align_corners",
        "floor",
        "ceil",
        "",
    ])
    .prop_map(|s| AttrValue::String(s.to_string()))
}

fn tensor_attr() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        (small_shape(3), any::<u64>()).prop_map(|(s, seed)| AttrValue::Tensor(float_tensor(s, seed))),
        prop::collection::vec(hostile_int(), 0..5)
            .prop_map(|v| AttrValue::Tensor(Tensor::from_vec(vec![v.len()], v).expect("1-D"))),
    ]
}

/// A value of the attribute's own kind (usually), or of any kind.
fn attr_value(name: &'static str) -> BoxedStrategy<AttrValue> {
    let own: BoxedStrategy<AttrValue> = match attr_kind(name) {
        "ints" => prop::collection::vec(hostile_int(), 0..6)
            .prop_map(AttrValue::Ints)
            .boxed(),
        "float" => hostile_float().prop_map(AttrValue::Float).boxed(),
        "floats" => prop::collection::vec(hostile_float(), 0..5)
            .prop_map(AttrValue::Floats)
            .boxed(),
        "string" => string_attr().boxed(),
        "tensor" => tensor_attr().boxed(),
        _ => hostile_int().prop_map(AttrValue::Int).boxed(),
    };
    prop_oneof![12 => own, 1 => any_attr_value()].boxed()
}

/// Attributes for `op`: a few of its own (for a pooling op, a sane `kernel_shape` most of
/// the time, as it is required), and rarely one it does not read.
fn attrs(op: &'static str) -> impl Strategy<Value = Vec<(String, AttrValue)>> {
    let own = op_attrs(op);
    let named = |name: &'static str| attr_value(name).prop_map(move |v| (name.to_string(), v));
    let own_list = if own.is_empty() {
        Just(Vec::new()).boxed()
    } else {
        prop::collection::vec(prop::sample::select(own).prop_flat_map(named), 0..3).boxed()
    };
    let kernel = if op == "MaxPool" || op == "AveragePool" {
        prop_oneof![
            4 => (1i64..4).prop_map(|k| vec![("kernel_shape".to_string(), AttrValue::Ints(vec![k, k]))]),
            1 => Just(Vec::new()),
        ]
        .boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    let stray = prop_oneof![
        20 => Just(Vec::new()),
        1 => prop::sample::select(vec!["axis", "alpha", "bogus"]).prop_flat_map(named).prop_map(|a| vec![a]),
    ];
    (kernel, own_list, stray).prop_map(|(mut k, o, s)| {
        // The first occurrence of a name wins in the reader; keep the sane kernel first.
        let has_kernel = !k.is_empty();
        k.extend(o.into_iter().filter(|(n, _)| !(has_kernel && n == "kernel_shape")));
        k.extend(s);
        k
    })
}

/// An input reference: the graph input, an initializer, the output of any node (earlier:
/// fine; later or itself: a cycle), a dangling name, or an omitted optional input.
fn input_ref(i: usize, n_nodes: usize) -> impl Strategy<Value = String> {
    let earlier = if i == 0 { "x".to_string() } else { format!("v{}", i - 1) };
    prop_oneof![
        6 => Just("x".to_string()),
        8 => (0..N_FLOAT_INITS).prop_map(|i| format!("w{i}")),
        4 => (0..N_INT_INITS).prop_map(|i| format!("k{i}")),
        4 => (0..i.max(1)).prop_map(move |j| if i == 0 { "x".to_string() } else { format!("v{j}") }),
        2 => Just(earlier),
        1 => (0..n_nodes).prop_map(|j| format!("v{j}")),
        1 => Just("ghost".to_string()),
        1 => Just(String::new()),
    ]
}

/// The data input of node `i`: usually the previous node's output (a chain), sometimes
/// the graph input, rarely anything (a later node: a cycle; a dangling name).
fn data_input(i: usize, n_nodes: usize) -> impl Strategy<Value = String> {
    let prev = if i == 0 { "x".to_string() } else { format!("v{}", i - 1) };
    prop_oneof![12 => Just(prev), 3 => Just("x".to_string()), 1 => input_ref(i, n_nodes)]
}

const N_FLOAT_INITS: usize = 4;
const N_INT_INITS: usize = 3;

#[derive(Debug, Clone)]
struct Case {
    opset: i64,
    input_shape: Vec<usize>,
    feed_shape: Vec<usize>,
    float_inits: Vec<(Vec<usize>, u64)>,
    int_inits: Vec<Vec<i64>>,
    nodes: Vec<RawNode>,
    outputs: Vec<String>,
}

fn raw_node(i: usize, n_nodes: usize) -> impl Strategy<Value = RawNode> {
    prop::sample::select(OPS).prop_flat_map(move |op| {
        (
            data_input(i, n_nodes),
            prop::collection::vec(input_ref(i, n_nodes), 0..3),
            prop_oneof![30 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)],
            attrs(op),
            prop_oneof![40 => Just(String::new()), 1 => Just("com.example".to_string())],
        )
            .prop_map(move |(first, rest, out_kind, attrs, domain)| {
                let outputs = match out_kind {
                    // Usually one fresh output; rarely a duplicate producer or two outputs.
                    0 => vec![format!("v{i}")],
                    1 => vec![format!("v{}", i.saturating_sub(1))],
                    _ => vec![format!("v{i}"), format!("v{i}_extra")],
                };
                let mut inputs = if op == "Constant" { Vec::new() } else { vec![first] };
                inputs.extend(rest);
                RawNode {
                    name: if i.is_multiple_of(3) {
                        String::new()
                    } else {
                        format!("n{}", i % 4)
                    },
                    op_type: op.to_string(),
                    domain,
                    inputs,
                    outputs,
                    attrs,
                }
            })
    })
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..8).prop_flat_map(|n_nodes| {
        let nodes: Vec<_> = (0..n_nodes).map(|i| raw_node(i, n_nodes)).collect();
        (
            prop_oneof![1 => Just(6i64), 8 => prop::sample::select(vec![7i64, 10, 11, 13, 18, 23]), 1 => Just(99i64)],
            prop::collection::vec(1usize..5, 1..5),
            prop::bool::weighted(0.9),
            prop::collection::vec((small_shape(4), any::<u64>()), N_FLOAT_INITS),
            prop::collection::vec(prop::collection::vec(hostile_int(), 0..5), N_INT_INITS),
            nodes,
            prop::collection::vec(
                prop_oneof![4 => Just(n_nodes - 1), 1 => 0..n_nodes].prop_map(|i| format!("v{i}")),
                1..3,
            ),
        )
            .prop_map(
                |(opset, input_shape, feed_ok, float_inits, int_inits, nodes, outputs)| {
                    let mut feed_shape = input_shape.clone();
                    if !feed_ok {
                        feed_shape.push(2);
                    }
                    Case {
                        opset,
                        input_shape,
                        feed_shape,
                        float_inits,
                        int_inits,
                        nodes,
                        outputs,
                    }
                },
            )
    })
}

fn to_raw(c: &Case) -> RawGraph {
    let mut initializers: Vec<(String, Tensor)> = c
        .float_inits
        .iter()
        .enumerate()
        .map(|(i, (s, seed))| (format!("w{i}"), float_tensor(s.clone(), *seed)))
        .collect();
    // Weights that fit the input often enough for Conv/Gemm to run: w0 as a conv weight
    // [m, C, k, k] (when it has rank 4), w2 as a matrix [last dim of x, m].
    if let (Some((s0, _)), Some(&ci)) = (c.float_inits.first(), c.input_shape.get(1)) {
        if s0.len() == 4 {
            let shape = vec![s0[0], ci, s0[2].clamp(1, 3), s0[2].clamp(1, 3)];
            initializers[0].1 = float_tensor(shape, 11);
        }
    }
    if let (Some((s2, _)), Some(&last)) = (c.float_inits.get(2), c.input_shape.last()) {
        if s2.len() == 2 {
            initializers[2].1 = float_tensor(vec![last, s2[1].max(1)], 12);
        }
    }
    for (i, v) in c.int_inits.iter().enumerate() {
        initializers.push((
            format!("k{i}"),
            Tensor::from_vec(vec![v.len()], v.clone()).expect("1-D"),
        ));
    }
    let mut outputs: Vec<ValueInfo> = Vec::new();
    for o in &c.outputs {
        if !outputs.iter().any(|v| &v.name == o) {
            outputs.push(ValueInfo {
                name: o.clone(),
                dtype: DType::F32,
                shape: None,
            });
        }
    }
    RawGraph {
        name: "fuzz".into(),
        opset: c.opset,
        nodes: c.nodes.clone(),
        initializers,
        inputs: vec![ValueInfo {
            name: "x".into(),
            dtype: DType::F32,
            shape: Some(c.input_shape.iter().map(|&d| Dim::Fixed(d)).collect()),
        }],
        outputs,
    }
}

/// How far `exercise` got.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Reached {
    Refused,
    Built,
    Ran,
    Quantized,
}

/// Everything a model file can drive, in order, stopping at the first error (an error is a
/// fine outcome; a panic fails the test, an abort kills it).
fn exercise(c: &Case) -> Reached {
    let mut g = match Graph::from_raw(to_raw(c)) {
        Ok(g) => g,
        Err(e) => {
            if std::env::var("FUZZ_DEBUG").is_ok() {
                let m = e.to_string();
                eprintln!("REFUSED {}", m.split(':').take(2).collect::<Vec<_>>().join(":"));
            }
            return Reached::Refused;
        }
    };
    let x = float_tensor(c.feed_shape.clone(), 7);
    let feeds = || -> HashMap<String, Tensor> { [("x".to_string(), x.clone())].into_iter().collect() };
    let _ = g.to_raw();
    let _ = passes::fold_constants(&mut g);
    if exec::run(&g, feeds()).is_err() {
        return Reached::Built;
    }
    // The PTQ passes on a graph that runs.
    let mut st = PtqState::default();
    // Every step either succeeds or leaves the graph and the PTQ state exactly as they were
    // (a failed call must not modify the user's model). Compared through Debug, which sees
    // every field and treats a NaN attribute as equal to itself.
    let snapshot = |g: &Graph, st: &PtqState| format!("{g:?}\n{st:?}");
    macro_rules! atomic {
        ($g:expr, $st:expr, $step:expr) => {{
            let before = snapshot(&$g, &$st);
            let r = $step;
            if r.is_err() {
                assert!(snapshot(&$g, &$st) == before, "a failed step modified the model: {r:?}");
            }
            r?
        }};
    }
    let mut steps = || -> oxiquant_core::Result<()> {
        atomic!(g, st, ptq::prepare::prepare(&mut g, &mut st));
        atomic!(g, st, ptq::insert_scaling::insert_scaling_nodes(&mut g, &mut st));
        atomic!(
            g,
            st,
            ptq::normalize_params::normalize_parameters(&mut g, &mut st, true)
        );
        atomic!(g, st, {
            ptq::calibrate::begin(&mut st, true)
                .and_then(|()| ptq::calibrate::observe_batch(&g, &mut st, feeds()))
                .and_then(|()| ptq::calibrate::finish(&mut st))
                .inspect_err(|_| ptq::calibrate::abort(&mut st))
        });
        atomic!(g, st, ptq::adjust::adjust_ranges(&g, &mut st, Clipping::Mse, 4, true));
        atomic!(g, st, ptq::normalize_acts::normalize_activations(&mut g, &mut st));
        let opts = ptq::quantize::QuantizeOptions {
            act_bits: 4,
            weight_bits: 4,
            optimize_signs: true,
            single_shift: true,
            no_quant: false,
            dequantize_outputs: true,
            weight_clipping: Clipping::Mse,
        };
        atomic!(g, st, ptq::quantize::quantize_network(&mut g, &mut st, &opts));
        exec::run(&g, feeds())?;
        g.to_raw()?;
        onnx::export_qdq::to_qdq(&g, &st, onnx::export_qdq::WeightType::Uint8)?;
        // The integer engine: lowering, one run and the QOperator export.
        let ig = oxiquant_core::int::lower::lower_to_integer(&g, &st)?;
        exec::run(&ig, feeds())?;
        onnx::export_qop::to_qoperator(&ig, onnx::export_qdq::WeightType::Uint8)?;
        Ok(())
    };
    match steps() {
        Ok(()) => Reached::Quantized,
        Err(_) => Reached::Ran,
    }
}

/// Runs the fuzz cases and counts how far each got. Fails on a panic (proptest reports the
/// shrunk case) and when too few cases get far enough to exercise the executor and the PTQ
/// passes, so that the generator cannot silently degenerate into graphs refused at once.
#[test]
fn arbitrary_node_lists_never_panic() {
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::RefCell;
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let counts = RefCell::new([0usize; 4]);
    let result = runner.run(&case(), |c| {
        let reached = exercise(&c);
        counts.borrow_mut()[reached as usize] += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let [refused, built, ran, quantized] = *counts.borrow();
    let total = (refused + built + ran + quantized) as f64;
    eprintln!("fuzz: {refused} refused, {built} built, {ran} ran, {quantized} quantized");
    // Most random node lists are refused (that is much of the point); these floors (about
    // half of what the generator gives) make sure enough get further.
    assert!(
        (built + ran + quantized) as f64 >= 0.05 * total,
        "too few graphs were built"
    );
    assert!((ran + quantized) as f64 >= 0.015 * total, "too few graphs ran");
    assert!(
        quantized as f64 >= 0.005 * total,
        "too few graphs went through every PTQ step"
    );
}

/// A fixed chain that certainly loads and runs: makes sure `exercise` reaches the PTQ passes
/// (the fuzz cases above are mostly invalid graphs and would not notice if it never did).
#[test]
fn a_valid_chain_goes_through_every_step() {
    let node = |name: &str, op: &str, inputs: &[&str], out: &str, attrs| node_of(name, op, inputs, &[out], attrs);
    let c = Case {
        opset: 13,
        input_shape: vec![1, 2, 4, 4],
        feed_shape: vec![1, 2, 4, 4],
        float_inits: vec![(vec![3, 2, 3, 3], 1), (vec![3], 2), (vec![1], 3), (vec![1], 4)],
        int_inits: vec![vec![1, -1], vec![], vec![]],
        nodes: vec![
            node(
                "conv",
                "Conv",
                &["x", "w0", "w1"],
                "v0",
                vec![("pads".into(), ints(&[1; 4]))],
            ),
            node("relu", "Relu", &["v0"], "v1", vec![]),
            node("reshape", "Reshape", &["v1", "k0"], "v2", vec![]),
        ],
        outputs: vec!["v2".into()],
    };
    assert_eq!(exercise(&c), Reached::Quantized);
    // The same chain with its Reshape reading a dangling value is refused at load.
    let mut bad = c.clone();
    bad.nodes[2].inputs[1] = "ghost".into();
    assert_eq!(exercise(&bad), Reached::Refused);
}
