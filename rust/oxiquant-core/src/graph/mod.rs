//! The graph IR: nodes with typed ops joined by named value edges, constant initializers,
//! typed inputs and outputs, kept in topological order, with the editing primitives the
//! passes use.

use crate::error::{Error, Result};
use crate::ops::{Op, ValueFact};
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// One dimension of a declared input/output shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A named or unnamed (empty string) free dimension, such as the batch size.
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(d) => write!(f, "{d}"),
            Dim::Symbolic(s) if s.is_empty() => f.write_str("?"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A graph input or output: name, element type and (possibly partly symbolic) shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    /// `None` when the model declares no shape at all.
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    pub fn shape_string(&self) -> String {
        match &self.shape {
            None => "[any]".to_string(),
            Some(s) => format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }

    /// Checks a concrete tensor against the declaration; the error says what was expected.
    pub fn check(&self, t: &Tensor) -> Result<()> {
        let dims_ok = match &self.shape {
            None => true,
            Some(s) => {
                s.len() == t.rank()
                    && s.iter()
                        .zip(t.shape())
                        .all(|(d, &n)| !matches!(d, Dim::Fixed(f) if *f != n))
            }
        };
        if t.dtype() != self.dtype || !dims_ok {
            return Err(Error::shape(format!(
                "input '{}' expects {} {}, got {} {:?}",
                self.name,
                self.dtype,
                self.shape_string(),
                t.dtype(),
                t.shape()
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op: Box<dyn Op>,
    /// Value names; an empty string is an omitted optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.name == other.name
            && self.op.eq_dyn(other.op.as_ref())
            && self.inputs == other.inputs
            && self.outputs == other.outputs
    }
}

/// A neural network. `nodes` is always in topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub name: String,
    /// The `ai.onnx` opset the ops follow.
    pub opset: i64,
    pub nodes: Vec<Node>,
    pub initializers: BTreeMap<String, Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl Graph {
    /// Index of the node producing `value`, if any.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.outputs.iter().any(|o| o == value))
    }

    /// (node index, input slot) of every use of `value`.
    pub fn consumers(&self, value: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (s, v) in n.inputs.iter().enumerate() {
                if v == value {
                    out.push((i, s));
                }
            }
        }
        out
    }

    pub fn is_graph_output(&self, value: &str) -> bool {
        self.outputs.iter().any(|o| o.name == value)
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Every value name in use (inputs, initializers, node outputs) and node name.
    fn used_names(&self) -> HashSet<String> {
        let mut s: HashSet<String> = self.initializers.keys().cloned().collect();
        s.extend(self.inputs.iter().map(|v| v.name.clone()));
        for n in &self.nodes {
            s.insert(n.name.clone());
            s.extend(n.outputs.iter().cloned());
        }
        s
    }

    /// A name not used by any value or node, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let used = self.used_names();
        if !used.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !used.contains(n))
            .unwrap_or_else(|| base.to_string())
    }

    /// Inserts a single-input node after `value`, so that every former reader of `value`
    /// (including a graph output of that name) now reads the new node's output. Names of
    /// graph outputs are preserved. Returns the new node's index.
    pub fn insert_after(&mut self, value: &str, name: &str, op: impl Op) -> Result<usize> {
        let op: Box<dyn Op> = Box::new(op);
        let node_name = self.fresh_name(name);
        match self.producer(value) {
            Some(p) => {
                // The producer now writes a fresh value; the new node writes `value`.
                let inner = self.fresh_name(&format!("{value}__pre_{node_name}"));
                for o in self.nodes[p].outputs.iter_mut().filter(|o| *o == value) {
                    *o = inner.clone();
                }
                let node = Node {
                    name: node_name,
                    op,
                    inputs: vec![inner],
                    outputs: vec![value.to_string()],
                };
                self.nodes.insert(p + 1, node);
                Ok(p + 1)
            }
            None if self.inputs.iter().any(|i| i.name == value) || self.initializers.contains_key(value) => {
                let out = self.fresh_name(&format!("{value}__{node_name}"));
                for n in &mut self.nodes {
                    for i in n.inputs.iter_mut().filter(|i| *i == value) {
                        *i = out.clone();
                    }
                }
                for o in self.outputs.iter_mut().filter(|o| o.name == value) {
                    o.name = out.clone();
                }
                self.nodes.insert(
                    0,
                    Node {
                        name: node_name,
                        op,
                        inputs: vec![value.to_string()],
                        outputs: vec![out],
                    },
                );
                Ok(0)
            }
            None => Err(Error::format(format!("cannot insert after '{value}': no such value"))),
        }
    }

    /// Inserts a single-input node on one edge only: input `slot` of node `consumer`.
    /// Returns the new node's index (the consumer's index grows by one).
    pub fn insert_on_edge(&mut self, consumer: usize, slot: usize, name: &str, op: impl Op) -> Result<usize> {
        let op: Box<dyn Op> = Box::new(op);
        let value = self
            .nodes
            .get(consumer)
            .and_then(|n| n.inputs.get(slot))
            .cloned()
            .ok_or_else(|| Error::format(format!("no input slot {slot} on node #{consumer}")))?;
        let node_name = self.fresh_name(name);
        let out = self.fresh_name(&format!("{value}__{node_name}"));
        self.nodes[consumer].inputs[slot] = out.clone();
        self.nodes.insert(
            consumer,
            Node {
                name: node_name,
                op,
                inputs: vec![value],
                outputs: vec![out],
            },
        );
        Ok(consumer)
    }

    /// Removes a node whose output equals its first input (Identity, Dropout, a no-op
    /// Reshape ...), reconnecting the readers of its output to its input.
    pub fn remove_passthrough(&mut self, idx: usize) -> Result<()> {
        let node = self
            .nodes
            .get(idx)
            .ok_or_else(|| Error::format(format!("no node #{idx}")))?;
        let (src, dst) = match (node.inputs.first(), node.outputs.first()) {
            (Some(s), Some(d)) if !s.is_empty() => (s.clone(), d.clone()),
            _ => {
                return Err(Error::format(format!(
                    "node '{}' has no input to reconnect to",
                    node.name
                )))
            }
        };
        let src_is_exposed = self.inputs.iter().any(|i| i.name == src)
            || self.initializers.contains_key(&src)
            || self.is_graph_output(&src);
        self.nodes.remove(idx);
        if self.is_graph_output(&dst) && !src_is_exposed {
            // Keep the output name: the producer of `src` writes `dst` directly, and the
            // value's other readers (a transformer's last hidden state, also pooled) read it.
            if let Some(p) = self.producer(&src) {
                for o in self.nodes[p].outputs.iter_mut().filter(|o| **o == src) {
                    *o = dst.clone();
                }
                for n in &mut self.nodes {
                    for i in n.inputs.iter_mut().filter(|i| **i == src) {
                        *i = dst.clone();
                    }
                }
                return Ok(());
            }
        }
        for n in &mut self.nodes {
            for i in n.inputs.iter_mut().filter(|i| **i == dst) {
                *i = src.clone();
            }
        }
        for o in self.outputs.iter_mut().filter(|o| o.name == dst) {
            o.name = src.clone();
        }
        Ok(())
    }

    /// Drops nodes and initializers that no graph output depends on.
    pub fn prune(&mut self) {
        let mut live: HashSet<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
        let mut keep = vec![false; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                live.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
            }
        }
        let mut k = keep.iter();
        self.nodes.retain(|_| *k.next().unwrap_or(&false));
        // A declared input that only named a (now dead) initializer goes with it.
        let inits = &self.initializers;
        self.inputs
            .retain(|i| live.contains(&i.name) || !inits.contains_key(&i.name));
        self.initializers.retain(|name, _| live.contains(name));
    }

    /// Re-establishes topological order after edits; fails on a cycle, naming its nodes.
    pub fn sort(&mut self) -> Result<()> {
        let order = topo_order(&self.nodes, &self.available_roots())?;
        let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes).into_iter().map(Some).collect();
        self.nodes = order.into_iter().filter_map(|i| old[i].take()).collect();
        Ok(())
    }

    fn available_roots(&self) -> HashSet<String> {
        let mut s: HashSet<String> = self.initializers.keys().cloned().collect();
        s.extend(self.inputs.iter().map(|i| i.name.clone()));
        s.insert(String::new());
        s
    }

    /// Number of scalar parameters held in float initializers.
    pub fn num_parameters(&self) -> usize {
        self.initializers
            .values()
            .filter(|t| t.dtype() == DType::F32)
            .map(|t| t.len())
            .sum()
    }

    /// Op type -> number of nodes.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in &self.nodes {
            *m.entry(n.op.op_type().to_string()).or_insert(0) += 1;
        }
        m
    }

    /// What is known of every value before running: the declared inputs' dtypes and shapes
    /// (a named free dimension such as the batch `N` stays a symbol), the initializers', then
    /// each node's outputs in order from its op's `output_facts`, given the facts of its
    /// inputs and the values of those that are constants. Constants are the initializers and
    /// the small outputs of foldable nodes whose inputs are all constants (a Constant node,
    /// shape arithmetic on constants, a Shape of a fully known input), so that a Reshape
    /// reading such a shape knows its output. An op refusing its inputs is an error naming
    /// the node. Outputs a node does not compute (Dropout's mask) get no fact, as they get
    /// no value when it runs.
    pub fn infer_facts(&self) -> Result<HashMap<String, ValueFact>> {
        let inputs = self
            .inputs
            .iter()
            .map(|vi| (vi.name.clone(), ValueFact::of_value_info(vi)))
            .collect();
        self.infer_facts_from(inputs, HashMap::new())
    }

    /// `infer_facts` from the given facts of the inputs instead of the declared ones, and the
    /// values of those inputs that are known (a control-flow body, from what its node is given).
    pub fn infer_facts_from(
        &self,
        inputs: HashMap<String, ValueFact>,
        known: HashMap<String, Tensor>,
    ) -> Result<HashMap<String, ValueFact>> {
        /// Values of up to this many elements computed by a foldable node are constants.
        const SMALL: usize = 1 << 12;
        let mut facts: HashMap<String, ValueFact> = inputs;
        for (name, t) in &self.initializers {
            facts.insert(name.clone(), ValueFact::of_tensor(t));
        }
        let mut computed: HashMap<String, Tensor> = known;
        let mut not_computed: HashSet<&str> = HashSet::new();
        for n in &self.nodes {
            let op = n.op.op_type();
            let at = |e: Error| e.at_node(&n.name, op);
            let mut ins: Vec<Option<&ValueFact>> = Vec::with_capacity(n.inputs.len());
            for v in &n.inputs {
                match facts.get(v) {
                    Some(f) => ins.push(Some(f)),
                    None if v.is_empty() || not_computed.contains(v.as_str()) => ins.push(None),
                    None => {
                        return Err(at(Error::format(format!(
                            "reads '{v}', which no earlier node, initializer or graph input provides"
                        ))))
                    }
                }
            }
            let consts: Vec<Option<&Tensor>> = n
                .inputs
                .iter()
                .map(|v| self.initializers.get(v).or_else(|| computed.get(v)))
                .collect();
            let outs = n.op.output_facts(&ins, &consts).map_err(at)?;
            if outs.len() != n.op.num_outputs() {
                return Err(at(Error::shape(format!(
                    "{} output facts for {} outputs",
                    outs.len(),
                    n.op.num_outputs()
                ))));
            }
            let small = outs.iter().all(|f| f.numel().is_some_and(|k| k <= SMALL));
            let all_const = n.inputs.iter().zip(&consts).all(|(v, c)| v.is_empty() || c.is_some());
            let values: Option<Vec<Tensor>> = if let (Some(s), Some(Some(x))) = (
                n.op.downcast_ref::<crate::ops::Shape>(),
                ins.first().map(|f| f.and_then(|f| f.concrete_shape())),
            ) {
                Some(vec![crate::ops::movement::shape_value(s.start, s.end, &x).map_err(at)?])
            } else if small && all_const && n.op.foldable() {
                Some(n.op.eval(&consts).map_err(at)?)
            } else {
                None
            };
            let outs = match &values {
                Some(v) => v.iter().map(ValueFact::of_tensor).collect(),
                None => outs,
            };
            for (i, o) in n.outputs.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
                match outs.get(i) {
                    Some(f) => {
                        facts.insert(o.clone(), f.clone());
                    }
                    None => {
                        not_computed.insert(o);
                    }
                }
            }
            for (o, t) in n.outputs.iter().zip(values.into_iter().flatten()) {
                computed.insert(o.clone(), t);
            }
        }
        Ok(facts)
    }

    /// Inputs the caller must feed (declared inputs that are not initializers).
    pub fn runtime_inputs(&self) -> impl Iterator<Item = &ValueInfo> {
        self.inputs.iter().filter(|i| !self.initializers.contains_key(&i.name))
    }
}

/// Hands out names that no value or node of a graph uses and that it has not given out
/// before (for nodes and initializers created while exporting).
pub struct NameGen {
    used: HashSet<String>,
}

impl NameGen {
    pub fn new(graph: &Graph) -> NameGen {
        NameGen {
            used: graph.used_names(),
        }
    }

    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.used.insert(name.clone());
        name
    }
}

/// Kahn's algorithm, stable with respect to the given order. `roots` are the values
/// available before any node runs.
pub(crate) fn topo_order(nodes: &[Node], roots: &HashSet<String>) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(o, i);
        }
    }
    let mut indeg = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for v in &n.inputs {
            if roots.contains(v) {
                continue;
            }
            match producer.get(v.as_str()) {
                Some(&p) => {
                    indeg[i] += 1;
                    users[p].push(i);
                }
                None => {
                    return Err(Error::format(format!(
                        "node '{}' ({}) reads '{v}', which no node, initializer or graph input provides",
                        n.name,
                        n.op.op_type()
                    )))
                }
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != nodes.len() {
        // The unsorted nodes are the cycles and everything downstream of them; peel off
        // the downstream ones (no unsorted reader) so that the message names the cycle.
        let mut on_cycle: Vec<bool> = indeg.iter().map(|&d| d > 0).collect();
        loop {
            let sinks: Vec<usize> = (0..nodes.len())
                .filter(|&i| on_cycle[i] && !users[i].iter().any(|&u| on_cycle[u]))
                .collect();
            if sinks.is_empty() {
                break;
            }
            for i in sinks {
                on_cycle[i] = false;
            }
        }
        let stuck: Vec<&str> = (0..nodes.len())
            .filter(|&i| on_cycle[i])
            .take(8)
            .map(|i| nodes[i].name.as_str())
            .collect();
        return Err(Error::format(format!(
            "the graph has a cycle through node(s) {stuck:?}"
        )));
    }
    Ok(order)
}
