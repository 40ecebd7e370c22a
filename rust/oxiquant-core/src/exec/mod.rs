//! Runs a graph on concrete inputs: a plan resolved once (value slots, last uses), then the
//! nodes in topological order, each intermediate freed as soon as its last reader has run.
//! An observer can see every value as it is produced (the calibration hook).

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::tensor::Tensor;
use std::collections::HashMap;

enum Src<'g> {
    Slot(usize),
    Init(&'g Tensor),
    Absent,
}

impl<'g> Src<'g> {
    /// The tensor this source names, if it is present.
    fn get<'a>(&'a self, slots: &'a [Option<Tensor>]) -> Option<&'a Tensor> {
        match self {
            Src::Slot(k) => slots[*k].as_ref(),
            Src::Init(t) => Some(*t),
            Src::Absent => None,
        }
    }
}

struct Step<'g> {
    node: usize,
    inputs: Vec<Src<'g>>,
    outputs: Vec<usize>,
    /// Slots whose last reader is this step.
    free_after: Vec<usize>,
}

/// A graph prepared for repeated runs.
pub struct Executor<'g> {
    graph: &'g Graph,
    steps: Vec<Step<'g>>,
    n_slots: usize,
    /// (graph input name, slot) for the inputs the caller feeds.
    feeds: Vec<(usize, usize)>,
    outputs: Vec<Src<'g>>,
    slot_names: Vec<String>,
    /// Declared inputs that no node or output reads: they may be omitted.
    unused_inputs: Vec<usize>,
}

/// Receives every value as it is produced: graph inputs first, then each node's outputs.
pub type Observer<'a> = dyn FnMut(&str, &Tensor) + 'a;

impl<'g> Executor<'g> {
    pub fn new(graph: &'g Graph) -> Result<Executor<'g>> {
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        let mut slot_names = Vec::new();
        let mut feeds = Vec::new();
        for (i, vi) in graph.inputs.iter().enumerate() {
            if graph.initializers.contains_key(&vi.name) {
                continue;
            }
            slot_of.insert(&vi.name, slot_names.len());
            feeds.push((i, slot_names.len()));
            slot_names.push(vi.name.clone());
        }
        let resolve = |name: &str, slot_of: &HashMap<&str, usize>| -> Option<Src<'g>> {
            if name.is_empty() {
                Some(Src::Absent)
            } else if let Some(&s) = slot_of.get(name) {
                Some(Src::Slot(s))
            } else {
                graph.initializers.get(name).map(Src::Init)
            }
        };
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for (idx, n) in graph.nodes.iter().enumerate() {
            let inputs = n
                .inputs
                .iter()
                .map(|v| {
                    resolve(v, &slot_of).ok_or_else(|| {
                        Error::format(format!(
                            "node '{}' ({}) reads '{v}' before it is produced",
                            n.name,
                            n.op.op_type()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut outputs = Vec::with_capacity(n.outputs.len());
            for o in &n.outputs {
                slot_of.insert(o, slot_names.len());
                outputs.push(slot_names.len());
                slot_names.push(o.clone());
            }
            steps.push(Step {
                node: idx,
                inputs,
                outputs,
                free_after: Vec::new(),
            });
        }
        let outputs = graph
            .outputs
            .iter()
            .map(|o| {
                resolve(&o.name, &slot_of)
                    .ok_or_else(|| Error::format(format!("graph output '{}' is never produced", o.name)))
            })
            .collect::<Result<Vec<_>>>()?;
        // Last reader of every slot; graph outputs are kept to the end.
        let mut last_use: Vec<Option<usize>> = vec![None; slot_names.len()];
        for (si, st) in steps.iter().enumerate() {
            for s in &st.inputs {
                if let Src::Slot(k) = s {
                    last_use[*k] = Some(si);
                }
            }
        }
        for o in &outputs {
            if let Src::Slot(k) = o {
                last_use[*k] = None;
            }
        }
        for (k, lu) in last_use.iter().enumerate() {
            if let Some(si) = lu {
                steps[*si].free_after.push(k);
            }
        }
        let unused_inputs = feeds
            .iter()
            .filter(|&&(_, slot)| {
                last_use[slot].is_none() && !outputs.iter().any(|o| matches!(o, Src::Slot(k) if *k == slot))
            })
            .map(|&(i, _)| i)
            .collect();
        Ok(Executor {
            graph,
            steps,
            n_slots: slot_names.len(),
            feeds,
            outputs,
            slot_names,
            unused_inputs,
        })
    }

    /// Checks the feeds against the declared inputs (names, dtypes, shapes).
    fn bind(&self, mut feeds: HashMap<String, Tensor>) -> Result<Vec<Option<Tensor>>> {
        let mut slots: Vec<Option<Tensor>> = (0..self.n_slots).map(|_| None).collect();
        for &(i, slot) in &self.feeds {
            let vi = &self.graph.inputs[i];
            let Some(t) = feeds.remove(&vi.name) else {
                if self.unused_inputs.contains(&i) {
                    continue; // declared but read by nothing
                }
                return Err(Error::shape(format!(
                    "missing input '{}' ({} {})",
                    vi.name,
                    vi.dtype,
                    vi.shape_string()
                )));
            };
            vi.check(&t)?;
            slots[slot] = Some(t);
        }
        if let Some(extra) = feeds.keys().next() {
            let names: Vec<&str> = self
                .feeds
                .iter()
                .map(|&(i, _)| self.graph.inputs[i].name.as_str())
                .collect();
            return Err(Error::shape(format!(
                "unknown input '{extra}'; the model's inputs are {names:?}"
            )));
        }
        Ok(slots)
    }

    /// Runs the graph on its declared inputs in order, unchecked (a control-flow body, whose
    /// inputs the facts of its node's inputs describe); returns the outputs in order.
    pub fn run_positional(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(Error::shape(format!(
                "subgraph '{}' takes {} inputs, given {}",
                self.graph.name,
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        let mut slots: Vec<Option<Tensor>> = (0..self.n_slots).map(|_| None).collect();
        let mut given: Vec<Option<Tensor>> = inputs.into_iter().map(Some).collect();
        for &(i, slot) in &self.feeds {
            slots[slot] = given[i].take();
        }
        Ok(self.execute(slots, None)?.into_iter().map(|(_, t)| t).collect())
    }

    /// Runs the graph; returns the graph outputs in declaration order.
    pub fn run(
        &self,
        feeds: HashMap<String, Tensor>,
        observer: Option<&mut Observer<'_>>,
    ) -> Result<Vec<(String, Tensor)>> {
        let slots = self.bind(feeds)?;
        self.execute(slots, observer)
    }

    fn execute(
        &self,
        mut slots: Vec<Option<Tensor>>,
        mut observer: Option<&mut Observer<'_>>,
    ) -> Result<Vec<(String, Tensor)>> {
        if let Some(obs) = observer.as_deref_mut() {
            for &(_, slot) in &self.feeds {
                if let Some(t) = &slots[slot] {
                    obs(&self.slot_names[slot], t);
                }
            }
        }
        let mut profile = Profile::from_env();
        for st in &self.steps {
            let node = &self.graph.nodes[st.node];
            let started = profile.as_ref().map(|_| std::time::Instant::now());
            // Hand the first input over when this node is its last reader (and reads it once).
            let owned = match st.inputs.first() {
                Some(Src::Slot(k))
                    if node.op.has_in_place()
                        && st.free_after.contains(k)
                        && !st.inputs[1..].iter().any(|s| matches!(s, Src::Slot(j) if j == k)) =>
                {
                    slots[*k].take()
                }
                _ => None,
            };
            let results = if let Some(x) = owned {
                let rest: Vec<Option<&Tensor>> = st.inputs[1..].iter().map(|s| s.get(&slots)).collect();
                vec![node
                    .op
                    .eval_in_place(x, &rest)
                    .map_err(|e| e.at_node(&node.name, node.op.op_type()))?]
            } else {
                let args: Vec<Option<&Tensor>> = st.inputs.iter().map(|s| s.get(&slots)).collect();
                node.op
                    .eval(&args)
                    .map_err(|e| e.at_node(&node.name, node.op.op_type()))?
            };
            if let (Some(p), Some(t)) = (profile.as_mut(), started) {
                p.add(&node.name, node.op.op_type(), t.elapsed());
            }
            for (slot, t) in st.outputs.iter().zip(results) {
                if let Some(obs) = observer.as_deref_mut() {
                    obs(&self.slot_names[*slot], &t);
                }
                slots[*slot] = Some(t);
            }
            for k in &st.free_after {
                slots[*k] = None;
            }
        }
        self.graph
            .outputs
            .iter()
            .zip(&self.outputs)
            .enumerate()
            .map(|(i, (o, src))| {
                let t = match src {
                    // Move the tensor out unless a later output names the same value.
                    Src::Slot(k)
                        if self.outputs[i + 1..]
                            .iter()
                            .any(|s| matches!(s, Src::Slot(j) if j == k)) =>
                    {
                        slots[*k].clone()
                    }
                    Src::Slot(k) => slots[*k].take(),
                    Src::Init(t) => Some((*t).clone()),
                    Src::Absent => None,
                };
                t.map(|t| (o.name.clone(), t))
                    .ok_or_else(|| Error::format(format!("graph output '{}' was not computed", o.name)))
            })
            .collect()
    }
}

/// Per-op-type wall time, printed to stderr when `OXIQUANT_PROFILE=1`, per node with
/// `OXIQUANT_PROFILE=2` (a developer aid for finding where a model spends its time).
struct Profile {
    per_node: bool,
    entries: Vec<(String, std::time::Duration, usize)>,
}

impl Profile {
    fn from_env() -> Option<Profile> {
        match std::env::var("OXIQUANT_PROFILE").as_deref() {
            Ok("1") => Some(Profile {
                per_node: false,
                entries: Vec::new(),
            }),
            Ok("2") => Some(Profile {
                per_node: true,
                entries: Vec::new(),
            }),
            _ => None,
        }
    }
    fn add(&mut self, node: &str, op: &str, d: std::time::Duration) {
        let key = if self.per_node {
            format!("{node} ({op})")
        } else {
            op.to_string()
        };
        match self.entries.iter_mut().find(|e| e.0 == key) {
            Some(e) => {
                e.1 += d;
                e.2 += 1;
            }
            None => self.entries.push((key, d, 1)),
        }
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.1));
        let total: f64 = self.entries.iter().map(|e| e.1.as_secs_f64()).sum();
        for (op, d, n) in &self.entries {
            eprintln!(
                "{op:>20} {:9.3} ms {:5.1}% ({n} runs)",
                d.as_secs_f64() * 1e3,
                100.0 * d.as_secs_f64() / total.max(1e-12)
            );
        }
    }
}

/// Runs `graph` once without an observer.
pub fn run(graph: &Graph, feeds: HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>> {
    Executor::new(graph)?.run(feeds, None)
}

/// Runs `graph` once and also returns copies of the intermediate values named in `fetch`, in
/// that order (for per-layer comparisons). A name the graph does not produce is an error that
/// lists what was asked for.
#[allow(clippy::type_complexity)]
pub fn run_fetching(
    graph: &Graph,
    feeds: HashMap<String, Tensor>,
    fetch: &[String],
) -> Result<(Vec<(String, Tensor)>, Vec<(String, Tensor)>)> {
    if fetch.is_empty() {
        return Ok((run(graph, feeds)?, Vec::new()));
    }
    let mut got: HashMap<String, Tensor> = HashMap::new();
    let wanted: std::collections::HashSet<&str> = fetch.iter().map(String::as_str).collect();
    let mut obs = |name: &str, t: &Tensor| {
        if wanted.contains(name) {
            got.insert(name.to_string(), t.clone());
        }
    };
    let outs = Executor::new(graph)?.run(feeds, Some(&mut obs))?;
    let out_names: std::collections::HashSet<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
    let mut fetched = Vec::with_capacity(fetch.len());
    for name in fetch {
        let seen = fetched.iter().any(|(n, _): &(String, Tensor)| n == name);
        // Moved out, not copied again (a name asked twice is returned once).
        if let Some(t) = got.remove(name) {
            fetched.push((name.clone(), t));
        } else if seen {
            continue;
        } else if let Some(t) = graph.initializers.get(name) {
            fetched.push((name.clone(), t.clone()));
        } else if !out_names.contains(name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "cannot fetch '{name}': no node of the graph produces a value of that name"
            )));
        }
    }
    Ok((outs, fetched))
}
