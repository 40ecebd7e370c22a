//! Control flow: `If`, `Loop` and `Scan`, ops holding subgraphs (bodies) that run with the
//! core's own executor.
//!
//! A body may read values of the enclosing graphs by name without declaring them. At load
//! (`resolve_outer_scope`, called by `Graph::from_raw`) those names become explicit: they are
//! appended to the control-flow node's inputs and to every body's inputs, so scheduling,
//! liveness, constant folding and dead-code elimination see the dependency; the op remembers
//! how many there are. On export (`Op::onnx_form`) they are dropped from the node and the
//! bodies again (an `Identity` inside the body bridges a value renamed in between).

mod if_op;
mod inline;
mod loop_op;
mod scan;

pub use if_op::If;
pub use inline::inline_constant_ifs;
pub use loop_op::Loop;
pub use scan::Scan;

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Graph, ValueInfo};
use crate::onnx::{AttrValue, RawGraph, RawNode};
use crate::ops::{ParseCtx, ValueFact};
use crate::tensor::{DType, Element, Tensor};
use std::collections::{HashMap, HashSet};

/// The attribute by which the loader tells a control-flow op how many of its node's last
/// inputs are outer-scope values (never written to ONNX).
pub(crate) const CAPTURED_ATTR: &str = "__oxiquant_outer_scope_inputs";

fn has_graph_attr(n: &RawNode) -> bool {
    n.attrs.iter().any(|(_, v)| matches!(v, AttrValue::Graph(_)))
}

/// The names a body reads that it does not define (after its own nested bodies were resolved),
/// in order of first use.
fn free_values(body: &RawGraph) -> Vec<String> {
    let mut defined: HashSet<&str> = body.inputs.iter().map(|v| v.name.as_str()).collect();
    defined.extend(body.initializers.iter().map(|(n, _)| n.as_str()));
    for n in &body.nodes {
        defined.extend(n.outputs.iter().map(String::as_str));
    }
    let mut free: Vec<String> = Vec::new();
    let reads = body
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(body.outputs.iter().map(|o| &o.name));
    for v in reads {
        if !v.is_empty() && !defined.contains(v.as_str()) && !free.contains(v) {
            free.push(v.clone());
        }
    }
    free
}

/// Makes the outer-scope values of one control-flow node (and, first, of the control-flow
/// nodes inside its bodies) explicit inputs of the node and of each of its bodies.
fn capture(n: &mut RawNode) -> Result<()> {
    if n.attrs.iter().any(|(k, _)| k == CAPTURED_ATTR) {
        return Ok(()); // resolved with the enclosing graph
    }
    let mut captured: Vec<String> = Vec::new();
    for (_, v) in n.attrs.iter_mut() {
        if let AttrValue::Graph(body) = v {
            for inner in body.nodes.iter_mut().filter(|m| has_graph_attr(m)) {
                capture(inner)?;
            }
            for name in free_values(body) {
                if !captured.contains(&name) {
                    captured.push(name);
                }
            }
        }
    }
    for (_, v) in n.attrs.iter_mut() {
        if let AttrValue::Graph(body) = v {
            body.inputs.extend(captured.iter().map(|name| ValueInfo {
                name: name.clone(),
                // Never read: a body's inputs take the facts of what the node is given.
                dtype: DType::F32,
                shape: None,
            }));
        }
    }
    n.inputs.extend(captured.iter().cloned());
    n.attrs
        .push((CAPTURED_ATTR.to_string(), AttrValue::Int(captured.len() as i64)));
    Ok(())
}

/// Makes the outer-scope values of every control-flow node of `raw` explicit (see the module
/// doc). Fails naming the node, its op and the value when a body reads a value that `raw`
/// does not define either.
pub(crate) fn resolve_outer_scope(raw: &mut RawGraph) -> Result<()> {
    for n in raw.nodes.iter_mut().filter(|n| has_graph_attr(n)) {
        capture(n)?;
    }
    let mut defined: HashSet<&str> = raw.inputs.iter().map(|v| v.name.as_str()).collect();
    defined.extend(raw.initializers.iter().map(|(n, _)| n.as_str()));
    for n in &raw.nodes {
        defined.extend(n.outputs.iter().map(String::as_str));
    }
    for n in raw.nodes.iter().filter(|n| has_graph_attr(n)) {
        let k = captured_count(&n.attrs);
        let start = n.inputs.len().saturating_sub(k);
        if let Some(v) = n.inputs[start..].iter().find(|v| !defined.contains(v.as_str())) {
            let name = if n.name.is_empty() {
                n.op_type.as_str()
            } else {
                n.name.as_str()
            };
            return Err(Error::format(format!(
                "node '{name}' ({}): its subgraph reads '{v}', which neither the subgraph nor an enclosing graph defines",
                n.op_type
            )));
        }
    }
    Ok(())
}

fn captured_count(attrs: &[(String, AttrValue)]) -> usize {
    attrs
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            (CAPTURED_ATTR, AttrValue::Int(n)) => usize::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// The subgraph attribute `attr` of the node being parsed, checked as a graph at the node's
/// opset.
pub(crate) fn read_body(cx: &ParseCtx, attr: &str) -> Result<Graph> {
    let mut raw = cx.attrs.graph(attr)?;
    raw.opset = cx.opset;
    if raw.name.is_empty() {
        raw.name = attr.to_string();
    }
    Graph::from_raw(raw)
}

/// How many of the node's last inputs are outer-scope values of its bodies.
pub(crate) fn read_captured(cx: &ParseCtx) -> Result<usize> {
    let k = cx.attrs.int(CAPTURED_ATTR, 0)?;
    usize::try_from(k).map_err(|_| Error::format(format!("node '{}': bad outer-scope count {k}", cx.attrs.node)))
}

/// A body's formal inputs (those before its outer-scope values), checked against a minimum.
pub(crate) fn formal_inputs(op: &str, body: &Graph, captured: usize, at_least: usize) -> Result<usize> {
    match body.inputs.len().checked_sub(captured) {
        Some(n) if n >= at_least => Ok(n),
        _ => Err(Error::format(format!(
            "{op}: its body '{}' declares {} input(s), at least {at_least} expected",
            body.name,
            body.inputs.len().saturating_sub(captured)
        ))),
    }
}

/// Runs a body (prepared once by the caller) on its inputs in declaration order.
pub(crate) fn run_body(exec: &Executor<'_>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
    exec.run_positional(inputs)
}

/// The owned values of inputs `from..` (the outer-scope values a body reads).
pub(crate) fn owned(inputs: &[Option<&Tensor>], from: usize, op: &str) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .skip(from)
        .enumerate()
        .map(|(i, t)| {
            t.cloned()
                .ok_or_else(|| Error::shape(format!("{op}: outer-scope input #{} is missing", from + i)))
        })
        .collect()
}

/// The facts of a body's outputs given the facts (and known values) of its inputs, in
/// declaration order.
pub(crate) fn body_facts(body: &Graph, inputs: &[ValueFact], consts: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
    let mut facts = HashMap::new();
    let mut known = HashMap::new();
    for (i, vi) in body.inputs.iter().enumerate() {
        facts.insert(vi.name.clone(), inputs.get(i).cloned().unwrap_or_default());
        if let Some(Some(t)) = consts.get(i) {
            known.insert(vi.name.clone(), (*t).clone());
        }
    }
    let all = body.infer_facts_from(facts, known)?;
    Ok(body
        .outputs
        .iter()
        .map(|o| all.get(&o.name).cloned().unwrap_or_default())
        .collect())
}

/// What two facts have in common: the dtype if they agree, the rank if they agree, each
/// dimension where they agree (unknown where they do not).
pub(crate) fn merge(a: &ValueFact, b: &ValueFact) -> ValueFact {
    let dtype = if a.dtype == b.dtype { a.dtype } else { None };
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) if x.len() == y.len() => Some(
            x.iter()
                .zip(y)
                .map(|(p, q)| {
                    if p == q {
                        p.clone()
                    } else {
                        crate::ops::DimFact::Unknown
                    }
                })
                .collect(),
        ),
        _ => None,
    };
    ValueFact::new(dtype, shape)
}

/// The optional input `i` as a fact (unknown when absent).
pub(crate) fn fact_at(inputs: &[Option<&ValueFact>], i: usize) -> ValueFact {
    inputs.get(i).copied().flatten().cloned().unwrap_or_default()
}

/// Carried values through a body until their facts stop changing: `step` gives the facts of
/// the next values from the current ones. The facts hold for the first values and every
/// later one; when they do not settle in a few rounds, only the dtypes are kept.
pub(crate) fn settle(
    first: Vec<ValueFact>,
    mut step: impl FnMut(&[ValueFact]) -> Result<Vec<ValueFact>>,
) -> Result<Vec<ValueFact>> {
    let mut cur = first;
    for _ in 0..4 {
        let next = step(&cur)?;
        let merged: Vec<ValueFact> = cur
            .iter()
            .enumerate()
            .map(|(i, c)| next.get(i).map_or_else(ValueFact::unknown, |n| merge(c, n)))
            .collect();
        if merged == cur {
            return Ok(cur);
        }
        cur = merged;
    }
    Ok(cur.into_iter().map(|f| ValueFact::new(f.dtype, None)).collect())
}

fn slice_typed<T: Element>(v: &[T], outer: usize, len: usize, inner: usize, i: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        let start = (o * len + i) * inner;
        out.extend_from_slice(&v[start..start + inner]);
    }
    out
}

/// Element `i` of `t` along `axis` (the axis removed).
pub(crate) fn slice_axis(t: &Tensor, axis: usize, i: usize) -> Result<Tensor> {
    let shape = t.shape();
    let (Some(&len), true) = (shape.get(axis), i < shape.get(axis).copied().unwrap_or(0)) else {
        return Err(Error::shape(format!("index {i} on axis {axis} of shape {shape:?}")));
    };
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    crate::dispatch_data!(t.data(), v => Tensor::from_vec(out_shape, slice_typed(v, outer, len, inner, i)))
}

fn stack_typed<T: Element>(ts: &[Tensor], outer: usize, inner: usize, _first: &[T]) -> Result<Vec<T>> {
    let slices = ts.iter().map(|t| t.as_slice::<T>()).collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(outer * inner * ts.len());
    for o in 0..outer {
        for s in &slices {
            out.extend_from_slice(&s[o * inner..(o + 1) * inner]);
        }
    }
    Ok(out)
}

/// The tensors (all of one dtype and shape) stacked along a new axis `axis`.
pub(crate) fn stack(op: &str, ts: &[Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = ts.first() else {
        return Err(Error::shape(format!("{op}: nothing to stack")));
    };
    if let Some(t) = ts
        .iter()
        .find(|t| t.shape() != first.shape() || t.dtype() != first.dtype())
    {
        return Err(Error::shape(format!(
            "{op}: the body's scan outputs change from {} {:?} to {} {:?} between iterations",
            first.dtype(),
            first.shape(),
            t.dtype(),
            t.shape()
        )));
    }
    let shape = first.shape();
    if axis > shape.len() {
        return Err(Error::shape(format!(
            "{op}: axis {axis} out of range for rank {}",
            shape.len() + 1
        )));
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape.insert(axis, ts.len());
    crate::dispatch_data!(first.data(), v => Tensor::from_vec(out_shape, stack_typed(ts, outer, inner, v)?))
}

/// An empty stack (no iteration ran): `len` 0 inserted at `axis` of the element's facts when
/// they are concrete, else shape `[0]`.
pub(crate) fn empty_stack(elem: &ValueFact, axis: usize) -> Tensor {
    let dtype = elem.dtype.unwrap_or(DType::F32);
    let shape = match elem.concrete_shape() {
        Some(mut s) if axis <= s.len() => {
            s.insert(axis, 0);
            s
        }
        _ => vec![0],
    };
    Tensor::zeros::<f32>(shape).cast(dtype)
}

/// A scalar condition (a bool tensor of one element).
pub(crate) fn truth(op: &str, what: &str, t: &Tensor) -> Result<bool> {
    match t.as_slice::<bool>() {
        Ok([b]) => Ok(*b),
        _ => Err(Error::shape(format!(
            "{op}: {what} must be one bool, got {} {:?}",
            t.dtype(),
            t.shape()
        ))),
    }
}

/// A body written back as ONNX: its outer-scope inputs dropped again (the body reads them by
/// name). Where the enclosing graph now names such a value `outer[i]` (a pass put a node in
/// between), the body reads it by that name; an `Identity` bridges it only when the body
/// itself uses that name for something else.
pub(crate) fn body_to_raw(body: &Graph, captured: usize, outer: &[String]) -> Result<RawGraph> {
    let mut g = body.clone();
    let first = g.inputs.len().saturating_sub(captured);
    let mut bridges: Vec<RawNode> = Vec::new();
    for (k, o) in outer.iter().enumerate() {
        let Some(old) = g.inputs.get(first + k).map(|v| v.name.clone()) else {
            break;
        };
        if old == *o {
            continue;
        }
        let taken = g.nodes.iter().any(|n| n.outputs.contains(o))
            || g.initializers.contains_key(o)
            || g.inputs.iter().any(|v| v.name == *o);
        if taken {
            bridges.push(RawNode {
                name: format!("{old}_outer"),
                op_type: "Identity".into(),
                domain: String::new(),
                inputs: vec![o.clone()],
                outputs: vec![old.clone()],
                attrs: Vec::new(),
            });
            continue;
        }
        for n in &mut g.nodes {
            for v in n.inputs.iter_mut().filter(|v| **v == old) {
                *v = o.clone();
            }
        }
        for v in g.outputs.iter_mut().filter(|v| v.name == old) {
            v.name = o.clone();
        }
        g.inputs[first + k].name = o.clone();
    }
    let mut raw = g.to_raw()?;
    raw.inputs.truncate(first);
    bridges.append(&mut raw.nodes);
    raw.nodes = bridges;
    Ok(raw)
}

/// The node's ONNX inputs (its outer-scope values dropped) and the names those values have
/// in the enclosing graph.
pub(crate) fn split_inputs(inputs: &[String], captured: usize) -> (Vec<String>, &[String]) {
    let n = inputs.len().saturating_sub(captured);
    (inputs[..n].to_vec(), &inputs[n..])
}

/// The body's own names of its outer-scope inputs (what `to_attrs` writes without the node).
pub(crate) fn captured_names(body: &Graph, captured: usize) -> Vec<String> {
    let n = body.inputs.len().saturating_sub(captured);
    body.inputs[n..].iter().map(|v| v.name.clone()).collect()
}

pub(crate) fn graph_attr(name: &str, g: RawGraph) -> (String, AttrValue) {
    (name.to_string(), AttrValue::Graph(Box::new(g)))
}
