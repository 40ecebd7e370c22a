//! Building a checked `Graph` from ONNX-shaped parts, and writing it back.
//!
//! The parts are what the Python side reads out of an ONNX protobuf; no protobuf parsing
//! happens in the core.

use super::{AttrReader, AttrValue};
use crate::error::{Error, Result, UnsupportedEntry};
use crate::graph::{topo_order, Graph, NameGen, Node, ValueInfo};
use crate::ops::{Scaling, MAX_OPSET};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Oldest `ai.onnx` opset accepted (older ones use broadcast attributes and other forms the
/// engine does not model).
pub const MIN_OPSET: i64 = 7;

/// One ONNX node as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct RawNode {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, AttrValue)>,
}

/// An ONNX graph as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct RawGraph {
    pub name: String,
    pub opset: i64,
    pub nodes: Vec<RawNode>,
    pub initializers: Vec<(String, Tensor)>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl Graph {
    /// Checks and types a raw graph. Every unsupported op is reported at once, each op type
    /// with its first node; structural problems (dangling edges, cycles, duplicate producers)
    /// name the node and value at fault.
    pub fn from_raw(mut raw: RawGraph) -> Result<Graph> {
        if raw.opset > MAX_OPSET {
            return Err(Error::format(format!(
                "the model uses ai.onnx opset {}, newer than the newest oxiquant knows ({MAX_OPSET})",
                raw.opset
            )));
        }
        if raw.opset < MIN_OPSET {
            return Err(Error::format(format!(
                "the model uses ai.onnx opset {}; oxiquant supports opsets {MIN_OPSET} to {MAX_OPSET} (convert it with onnx.version_converter)",
                raw.opset
            )));
        }
        // Outer-scope values read by control-flow bodies become explicit inputs.
        crate::ops::control::resolve_outer_scope(&mut raw)?;
        let mut initializers = BTreeMap::new();
        for (name, t) in raw.initializers {
            if name.is_empty() {
                return Err(Error::format("an initializer has an empty name"));
            }
            if initializers.insert(name.clone(), t).is_some() {
                return Err(Error::format(format!("initializer '{name}' is defined twice")));
            }
        }
        let mut seen_inputs = HashSet::new();
        for i in &raw.inputs {
            if i.name.is_empty() || !seen_inputs.insert(i.name.clone()) {
                return Err(Error::format(format!(
                    "graph input '{}' is empty or declared twice",
                    i.name
                )));
            }
        }

        // Name every node uniquely (ONNX allows empty and repeated node names).
        let mut node_names = HashSet::new();
        let mut named: Vec<(String, RawNode)> = Vec::with_capacity(raw.nodes.len());
        for (i, n) in raw.nodes.into_iter().enumerate() {
            let base = if n.name.is_empty() {
                format!("{}_{i}", n.op_type)
            } else {
                n.name.clone()
            };
            let mut name = base.clone();
            let mut k = 1;
            while !node_names.insert(name.clone()) {
                name = format!("{base}_{k}");
                k += 1;
            }
            named.push((name, n));
        }

        // Type every op, collecting all unsupported ones before failing.
        let mut unsupported: Vec<UnsupportedEntry> = Vec::new();
        let mut first_error: Option<Error> = None;
        let mut nodes = Vec::with_capacity(named.len());
        for (name, n) in named {
            let reader = AttrReader::new(&name, &n.op_type, &n.attrs);
            match crate::ops::registry::parse_node(&n.op_type, &n.domain, &reader, raw.opset, n.outputs.len()) {
                Ok(op) => nodes.push(Node {
                    name,
                    op,
                    inputs: n.inputs,
                    outputs: n.outputs,
                }),
                Err(Error::UnsupportedOp(entries)) => {
                    for mut e in entries {
                        e.domain = n.domain.clone();
                        match unsupported
                            .iter_mut()
                            .find(|u| u.op_type == e.op_type && u.domain == e.domain)
                        {
                            Some(u) => u.count += 1,
                            None => unsupported.push(e),
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !unsupported.is_empty() {
            return Err(Error::UnsupportedOp(unsupported));
        }
        if let Some(e) = first_error {
            return Err(e);
        }

        // Drop optional outputs the engine does not compute, unless something reads them.
        let mut read: HashSet<String> = raw.outputs.iter().map(|o| o.name.clone()).collect();
        for n in &nodes {
            read.extend(n.inputs.iter().cloned());
        }
        let mut taken: HashSet<String> = nodes.iter().flat_map(|n| n.outputs.iter().cloned()).collect();
        taken.extend(initializers.keys().cloned());
        taken.extend(raw.inputs.iter().map(|i| i.name.clone()));
        for n in &mut nodes {
            if n.outputs.is_empty() || n.outputs.iter().all(String::is_empty) {
                return Err(Error::format(format!(
                    "node '{}' ({}) has no output",
                    n.name,
                    n.op.op_type()
                )));
            }
            let k = n.op.num_outputs();
            if let Some(extra) = n.outputs.iter().skip(k).find(|o| !o.is_empty() && read.contains(*o)) {
                return Err(Error::UnsupportedOp(vec![UnsupportedEntry {
                    op_type: n.op.op_type().to_string(),
                    domain: String::new(),
                    first_node: n.name.clone(),
                    count: 1,
                    reason: format!("its optional output '{extra}' is used but not computed"),
                }]));
            }
            n.outputs.truncate(k);
            // An output omitted with an empty name (an LSTM read for Y_h only) is computed
            // and dropped: it gets a name no other value has.
            for (i, o) in n.outputs.iter_mut().enumerate() {
                if o.is_empty() {
                    let mut name = format!("{}:omitted_output_{i}", n.name);
                    while read.contains(&name) || taken.contains(&name) {
                        name.push('_');
                    }
                    taken.insert(name.clone());
                    *o = name;
                }
            }
        }

        // Each value has exactly one source.
        let mut source: HashMap<String, String> = HashMap::new();
        for name in initializers.keys() {
            source.insert(name.clone(), format!("initializer '{name}'"));
        }
        for i in &raw.inputs {
            source
                .entry(i.name.clone())
                .or_insert_with(|| format!("graph input '{}'", i.name));
        }
        for n in &nodes {
            for o in &n.outputs {
                if let Some(prev) = source.insert(o.clone(), format!("node '{}'", n.name)) {
                    return Err(Error::format(format!(
                        "value '{o}' is produced by both {prev} and node '{}' ({})",
                        n.name,
                        n.op.op_type()
                    )));
                }
            }
        }
        for o in &raw.outputs {
            if !source.contains_key(&o.name) {
                return Err(Error::format(format!(
                    "graph output '{}' is not produced by any node",
                    o.name
                )));
            }
        }

        let mut roots: HashSet<String> = initializers.keys().cloned().collect();
        roots.extend(raw.inputs.iter().map(|i| i.name.clone()));
        roots.insert(String::new());
        let order = topo_order(&nodes, &roots)?;
        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        let nodes = order.into_iter().filter_map(|i| slots[i].take()).collect();
        let g = Graph {
            name: raw.name,
            opset: raw.opset,
            nodes,
            initializers,
            inputs: raw.inputs,
            outputs: raw.outputs,
        };
        g.check_constant_inputs()?;
        Ok(g)
    }

    /// Every node's `Op::check_constant_inputs` on the initializers it reads, in topological
    /// order (so a bad constant is reported at its first reader); the error names the node.
    pub fn check_constant_inputs(&self) -> Result<()> {
        for n in &self.nodes {
            let consts: Vec<Option<&Tensor>> = n.inputs.iter().map(|v| self.initializers.get(v)).collect();
            n.op.check_constant_inputs(&consts)
                .map_err(|e| e.at_node(&n.name, n.op.op_type()))?;
        }
        Ok(())
    }

    /// The graph as ONNX-shaped parts (inverse of `from_raw`). PTQ Scaling nodes, which are
    /// not ONNX ops, are lowered to standard ones (see `lower_scaling`).
    pub fn to_raw(&self) -> Result<RawGraph> {
        let mut names = NameGen::new(self);
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut initializers: Vec<(String, Tensor)> =
            self.initializers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for n in &self.nodes {
            let op = &n.op;
            if let Some(sc) = op.downcast_ref::<Scaling>() {
                lower_scaling(n, sc, self.opset, &mut names, &mut nodes, &mut initializers)?;
            } else if let Some(why) = op.no_onnx_form() {
                return Err(Error::InvalidArgument(format!(
                    "node '{}' ({}) {why}",
                    n.name,
                    op.op_type()
                )));
            } else {
                let (inputs, attrs) = op.onnx_form(&n.inputs, self.opset)?;
                nodes.push(RawNode {
                    name: n.name.clone(),
                    op_type: op.op_type().to_string(),
                    domain: op.domain().to_string(),
                    inputs,
                    outputs: n.outputs.clone(),
                    attrs,
                });
            }
        }
        Ok(RawGraph {
            name: self.name.clone(),
            opset: self.opset,
            nodes,
            initializers,
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        })
    }
}

/// A Scaling node as `Mul(x, factor)`, and for a quantizer `Round` (`Floor(x + 0.5)` before
/// opset 11, which has no Round: ties then round up instead of to even) and `Clip`.
fn lower_scaling(
    n: &Node,
    sc: &Scaling,
    opset: i64,
    names: &mut NameGen,
    nodes: &mut Vec<RawNode>,
    inits: &mut Vec<(String, Tensor)>,
) -> Result<()> {
    let (x, y) = match (n.inputs.first(), n.outputs.first()) {
        (Some(x), Some(y)) => (x.clone(), y.clone()),
        _ => {
            return Err(Error::format(format!(
                "Scaling node '{}' needs one input and one output",
                n.name
            )))
        }
    };
    let factor = names.fresh(&format!("{}_factor", n.name));
    inits.push((factor.clone(), sc.factor_tensor()?));
    let mut raw = |name: String, op: &str, inputs: Vec<String>, output: String, attrs: Vec<(String, AttrValue)>| {
        nodes.push(RawNode {
            name,
            op_type: op.to_string(),
            domain: String::new(),
            inputs,
            outputs: vec![output],
            attrs,
        });
    };
    let Some(q) = sc.quant else {
        raw(n.name.clone(), "Mul", vec![x, factor], y, Vec::new());
        return Ok(());
    };
    let scaled = names.fresh(&format!("{y}_scaled"));
    raw(n.name.clone(), "Mul", vec![x, factor], scaled.clone(), Vec::new());
    let rounded = names.fresh(&format!("{y}_rounded"));
    if opset >= 11 {
        raw(
            names.fresh(&format!("{}_round", n.name)),
            "Round",
            vec![scaled],
            rounded.clone(),
            Vec::new(),
        );
    } else {
        let half = names.fresh(&format!("{}_half", n.name));
        inits.push((half.clone(), Tensor::scalar(0.5f32)));
        let shifted = names.fresh(&format!("{y}_shifted"));
        raw(
            names.fresh(&format!("{}_add_half", n.name)),
            "Add",
            vec![scaled, half],
            shifted.clone(),
            Vec::new(),
        );
        raw(
            names.fresh(&format!("{}_floor", n.name)),
            "Floor",
            vec![shifted],
            rounded.clone(),
            Vec::new(),
        );
    }
    let clip_name = names.fresh(&format!("{}_clip", n.name));
    if opset >= 11 {
        let (lo, hi) = (
            names.fresh(&format!("{}_lo", n.name)),
            names.fresh(&format!("{}_hi", n.name)),
        );
        inits.push((lo.clone(), Tensor::scalar(q.lo)));
        inits.push((hi.clone(), Tensor::scalar(q.hi)));
        raw(clip_name, "Clip", vec![rounded, lo, hi], y, Vec::new());
    } else {
        let attrs = vec![
            ("min".to_string(), AttrValue::Float(q.lo)),
            ("max".to_string(), AttrValue::Float(q.hi)),
        ];
        raw(clip_name, "Clip", vec![rounded], y, attrs);
    }
    Ok(())
}
