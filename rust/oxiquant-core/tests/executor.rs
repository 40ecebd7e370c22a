//! The executor: nodes run in topological order whatever order the model lists them in,
//! `fetch` returns intermediate values, and handing a dead input's buffer to an op that
//! computes in place gives the values that computing out of place gives. Checked against
//! plain loops and against a naive interpreter (every node out of place, every value kept).
// Tests may unwrap (clippy.toml); this covers their helper functions too.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ptq_until, Steps};
use oxiquant_core::ptq::Stage;
use oxiquant_core::testing::networks::{cnn_batch, residual_cnn};
use oxiquant_core::testing::{feeds, raw_node, tensor, GraphBuilder};
use oxiquant_core::{exec, Graph, Tensor};
use std::collections::HashMap;

/// Every value of `g` on `inputs`, each node evaluated out of place by `Op::eval` on
/// inputs that are never freed or reused.
fn naive(g: &Graph, inputs: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let mut vals: HashMap<String, Tensor> = inputs.clone();
    for (k, t) in &g.initializers {
        vals.insert(k.clone(), t.clone());
    }
    for n in &g.nodes {
        let args: Vec<Option<&Tensor>> = n
            .inputs
            .iter()
            .map(|v| if v.is_empty() { None } else { Some(&vals[v]) })
            .collect();
        let outs = n.op.eval(&args).unwrap();
        for (o, t) in n.outputs.iter().zip(outs) {
            vals.insert(o.clone(), t);
        }
    }
    vals
}

fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        oxiquant_core::DType::F32 => t
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        _ => t.to_i64_vec().unwrap().iter().map(|&x| x as u64).collect(),
    }
}

/// `exec::run_fetching` of every value equals the naive interpreter bit for bit.
fn assert_executor_matches_naive(g: &Graph, x: &Tensor) {
    let names: Vec<String> = g.nodes.iter().flat_map(|n| n.outputs.clone()).collect();
    let want = naive(g, &feeds(&[("x", x)]));
    let (outs, fetched) = exec::run_fetching(g, feeds(&[("x", x)]), &names).unwrap();
    let mut got: HashMap<String, Tensor> = fetched.into_iter().collect();
    got.extend(outs);
    for v in &names {
        assert_eq!(got[v].shape(), want[v].shape(), "'{v}'");
        assert!(
            bits(&got[v]) == bits(&want[v]),
            "'{v}' differs from the out-of-place value"
        );
    }
    // And the plain run (no observer: intermediate values freed and reused in place).
    for (name, t) in exec::run(g, feeds(&[("x", x)])).unwrap() {
        assert!(bits(&t) == bits(&want[&name]), "output '{name}'");
    }
}

#[test]
fn nodes_listed_in_any_order_run_in_topological_order() {
    // out = Relu(x * a + b) - x, listed backwards.
    let a = tensor(&[6], 1, 2.0);
    let b = tensor(&[6], 2, 1.0);
    let g = GraphBuilder::new()
        .input("x", &[2, 6])
        .init("a", a.clone())
        .init("b", b.clone())
        .node("Sub", &["r", "x"], &["out"])
        .node("Relu", &["s"], &["r"])
        .node("Add", &["m", "b"], &["s"])
        .node("Mul", &["x", "a"], &["m"])
        .output("out")
        .build();
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.op_type()).collect();
    assert_eq!(ops, ["Mul", "Add", "Relu", "Sub"]);
    let x = tensor(&[2, 6], 3, 5.0);
    let (xv, av, bv) = (x.to_f32_vec(), a.to_f32_vec(), b.to_f32_vec());
    let want: Vec<f32> = (0..12)
        .map(|i| (xv[i] * av[i % 6] + bv[i % 6]).max(0.0) - xv[i])
        .collect();
    assert_eq!(common::run(&g, &x), want);
}

#[test]
fn fetch_returns_intermediate_values_and_refuses_unknown_names() {
    let g = GraphBuilder::new()
        .input("x", &[5])
        .node("Relu", &["x"], &["r"])
        .node("Neg", &["r"], &["n"])
        .node("Abs", &["n"], &["out"])
        .output("out")
        .try_build();
    // Neg may not be an op of the engine: build the same with Mul by -1 then.
    let g = g.unwrap_or_else(|_| {
        GraphBuilder::new()
            .input("x", &[5])
            .init("m1", Tensor::scalar(-1.0f32))
            .node("Relu", &["x"], &["r"])
            .node("Mul", &["r", "m1"], &["n"])
            .node("Abs", &["n"], &["out"])
            .output("out")
            .build()
    });
    let x = Tensor::from_vec(vec![5], vec![-2.0f32, -0.5, 0.0, 0.5, 3.0]).unwrap();
    let names = ["n".to_string(), "r".to_string(), "out".to_string(), "r".to_string()];
    let (outs, fetched) = exec::run_fetching(&g, feeds(&[("x", &x)]), &names).unwrap();
    let got: HashMap<String, Vec<f32>> = fetched.into_iter().map(|(n, t)| (n, t.to_f32_vec())).collect();
    assert_eq!(got["r"], [0.0, 0.0, 0.0, 0.5, 3.0]);
    assert_eq!(got["n"], [-0.0, -0.0, -0.0, -0.5, -3.0]);
    assert_eq!(outs[0].1.to_f32_vec(), [0.0, 0.0, 0.0, 0.5, 3.0]);
    let e = exec::run_fetching(&g, feeds(&[("x", &x)]), &["ghost".to_string()]).unwrap_err();
    assert!(e.to_string().contains("'ghost'"), "{e}");
}

/// Values still needed after a node that could compute in place: a graph output, a value
/// read again later, a value read twice by one node. Plain loops give the expected values.
#[test]
fn in_place_reuse_never_clobbers_a_value_still_needed() {
    let c = tensor(&[8], 4, 1.0);
    let g = GraphBuilder::new()
        .input("x", &[8])
        .init("c", c.clone())
        .node("Relu", &["x"], &["a"]) // x is read again by the last node
        .node("Add", &["a", "c"], &["b"]) // a is a graph output and read again
        .node("Mul", &["b", "b"], &["d"]) // the same value twice
        .node("Sigmoid", &["d"], &["e"])
        .node("Sub", &["e", "a"], &["f"])
        .node("Add", &["f", "x"], &["out"])
        .output("a")
        .output("out")
        .build();
    let x = tensor(&[8], 5, 3.0);
    let (xv, cv) = (x.to_f32_vec(), c.to_f32_vec());
    let a: Vec<f32> = xv.iter().map(|v| v.max(0.0)).collect();
    let out: Vec<f32> = (0..8)
        .map(|i| {
            let b = a[i] + cv[i];
            let d = b * b;
            let e = 1.0 / (1.0 + (-d).exp());
            ((e - a[i]) + xv[i], e)
        })
        .map(|(o, _)| o)
        .collect();
    let got = exec::run(&g, feeds(&[("x", &x)])).unwrap();
    assert_eq!(got[0].1.to_f32_vec(), a);
    let o = got[1].1.to_f32_vec();
    // The Sigmoid kernel may differ from exp() by an ulp or two.
    for (g, w) in o.iter().zip(&out) {
        assert!((g - w).abs() <= 1e-6, "{o:?} vs {out:?}");
    }
    assert_executor_matches_naive(&g, &x);
}

/// The float CNN, its quantized graph (Scaling nodes compute in place) and the integer
/// engine's graph: the executor gives the naive interpreter's values for every value.
#[test]
fn in_place_execution_gives_the_out_of_place_values_on_real_graphs() {
    let x = cnn_batch(3, 9, 2.0);
    let float = residual_cnn(true);
    assert_executor_matches_naive(&float, &x);
    let mut q = residual_cnn(true);
    let st = ptq_until(
        &mut q,
        Stage::Quantized,
        Steps {
            dequantize_outputs: false,
            ..Steps::default()
        },
    );
    assert_executor_matches_naive(&q, &x);
    let ig = oxiquant_core::int::lower::lower_to_integer(&q, &st).unwrap();
    assert_executor_matches_naive(&ig, &x);
}

#[test]
fn a_cycle_and_a_dangling_input_are_refused_naming_the_value() {
    let mut raw = GraphBuilder::new()
        .input("x", &[2])
        .node("Relu", &["x"], &["a"])
        .output("a")
        .raw();
    raw.nodes.push(raw_node("loop1", "Relu", &["l2"], &["l1"], Vec::new()));
    raw.nodes.push(raw_node("loop2", "Relu", &["l1"], &["l2"], Vec::new()));
    let e = Graph::from_raw(raw.clone()).unwrap_err().to_string();
    assert!(e.contains("cycle") || e.contains("l1") || e.contains("l2"), "{e}");
    raw.nodes.truncate(1);
    raw.nodes
        .push(raw_node("dangling", "Relu", &["ghost"], &["g"], Vec::new()));
    let e = Graph::from_raw(raw).unwrap_err().to_string();
    assert!(e.contains("ghost"), "{e}");
}
