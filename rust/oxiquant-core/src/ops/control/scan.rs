//! `Scan` (opset 9 on): runs a body once per slice of its scan inputs along their axes,
//! carrying state values and stacking the per-iteration scan outputs.

use super::{body_facts, body_to_raw, captured_names, empty_stack, fact_at, formal_inputs, graph_attr, owned};
use super::{read_body, read_captured, run_body, settle, slice_axis, split_inputs, stack};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::onnx::AttrValue;
use crate::ops::{norm_axis, Class, DataInputs, DimFact, FromOnnx, NodeFacts, OnnxForm, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

/// `Scan(states..., scan inputs..., outer values...)`: the body takes the states and one
/// slice of each scan input (then the outer-scope values) and returns the next states and
/// one element of each scan output. The node returns the final states and the scan outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    pub body: Graph,
    pub num_scan_inputs: usize,
    /// Per scan input: 0 forward, 1 reverse.
    pub input_directions: Vec<i64>,
    /// Per scan output: 0 appends each element, 1 prepends it.
    pub output_directions: Vec<i64>,
    pub input_axes: Vec<i64>,
    pub output_axes: Vec<i64>,
    /// How many outer-scope values end the node's inputs.
    pub captured: usize,
}

impl Scan {
    fn states(&self) -> usize {
        self.body.inputs.len() - self.captured - self.num_scan_inputs
    }
    fn scan_outputs(&self) -> usize {
        self.body.outputs.len() - self.states()
    }
}

fn per(cx: &ParseCtx, name: &str, n: usize, allowed: impl Fn(i64) -> bool) -> Result<Vec<i64>> {
    match cx.attrs.ints_opt(name)? {
        None => Ok(vec![0; n]),
        Some(v) if v.len() == n && v.iter().all(|&x| allowed(x)) => Ok(v),
        Some(v) => Err(cx.attrs.unsupported(format!("{name} {v:?} (expected {n} values)"))),
    }
}

impl FromOnnx for Scan {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let captured = read_captured(cx)?;
        let body = read_body(cx, "body")?;
        let m = usize::try_from(cx.attrs.int_opt("num_scan_inputs")?.unwrap_or(-1))
            .map_err(|_| cx.attrs.unsupported("num_scan_inputs must be given and non-negative"))?;
        let formal = formal_inputs("Scan", &body, captured, m.max(1))?;
        let states = formal - m;
        if body.outputs.len() < states {
            return Err(Error::format(format!(
                "node '{}' (Scan): the body returns {} values for {states} states",
                cx.attrs.node,
                body.outputs.len()
            )));
        }
        let k = body.outputs.len() - states;
        let dir = |d: i64| d == 0 || d == 1;
        let axis = |a: i64| a >= 0 || cx.opset >= 11;
        Ok(Scan {
            input_directions: per(cx, "scan_input_directions", m, dir)?,
            output_directions: per(cx, "scan_output_directions", k, dir)?,
            input_axes: per(cx, "scan_input_axes", m, axis)?,
            output_axes: per(cx, "scan_output_axes", k, axis)?,
            num_scan_inputs: m,
            body,
            captured,
        })
    }
}

fn ints_attr(name: &str, v: &[i64]) -> Option<(String, AttrValue)> {
    v.iter()
        .any(|&x| x != 0)
        .then(|| (name.to_string(), AttrValue::Ints(v.to_vec())))
}

impl Op for Scan {
    fn op_type(&self) -> &'static str {
        "Scan"
    }

    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let mut names = vec![String::new(); self.states() + self.num_scan_inputs];
        names.extend(captured_names(&self.body, self.captured));
        self.onnx_form(&names, opset).map(|(_, a)| a).unwrap_or_default()
    }

    fn onnx_form(&self, inputs: &[String], _opset: i64) -> Result<OnnxForm> {
        let (ins, outer) = split_inputs(inputs, self.captured);
        let mut attrs = vec![
            graph_attr("body", body_to_raw(&self.body, self.captured, outer)?),
            (
                "num_scan_inputs".to_string(),
                AttrValue::Int(self.num_scan_inputs as i64),
            ),
        ];
        attrs.extend(ints_attr("scan_input_directions", &self.input_directions));
        attrs.extend(ints_attr("scan_output_directions", &self.output_directions));
        attrs.extend(ints_attr("scan_input_axes", &self.input_axes));
        attrs.extend(ints_attr("scan_output_axes", &self.output_axes));
        Ok((ins, attrs))
    }

    fn num_outputs(&self) -> usize {
        self.body.outputs.len()
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (n, m, k) = (self.states(), self.num_scan_inputs, self.scan_outputs());
        if inputs.len() != n + m + self.captured {
            return Err(Error::shape(format!(
                "Scan: {} inputs for {n} states, {m} scan inputs and {} outer-scope values",
                inputs.len(),
                self.captured
            )));
        }
        let mut states: Vec<Tensor> = Vec::with_capacity(n);
        for (i, v) in inputs[..n].iter().enumerate() {
            states.push(
                v.ok_or_else(|| Error::shape(format!("Scan: state #{i} is missing")))?
                    .clone(),
            );
        }
        let mut scanned: Vec<(&Tensor, usize)> = Vec::with_capacity(m);
        let mut len: Option<usize> = None;
        for (j, v) in inputs[n..n + m].iter().enumerate() {
            let t = v.ok_or_else(|| Error::shape(format!("Scan: scan input #{j} is missing")))?;
            let a = norm_axis(self.input_axes[j], t.rank())?;
            match len {
                Some(l) if l != t.shape()[a] => {
                    return Err(Error::shape(format!(
                        "Scan: scan input #{j} has {} elements on axis {a}, the first one {l}",
                        t.shape()[a]
                    )))
                }
                _ => len = Some(t.shape()[a]),
            }
            scanned.push((t, a));
        }
        let len = len.unwrap_or(0);
        let outer = owned(inputs, n + m, "Scan")?;
        let exec = Executor::new(&self.body)?;
        let mut outs: Vec<Vec<Tensor>> = vec![Vec::new(); k];
        for step in 0..len {
            let mut ins = Vec::with_capacity(n + m + outer.len());
            ins.append(&mut states);
            for (j, (t, a)) in scanned.iter().enumerate() {
                let i = if self.input_directions[j] == 1 {
                    len - 1 - step
                } else {
                    step
                };
                ins.push(slice_axis(t, *a, i)?);
            }
            ins.extend(outer.iter().cloned());
            let mut it = run_body(&exec, ins)?.into_iter();
            states.extend(it.by_ref().take(n));
            for o in outs.iter_mut() {
                o.push(
                    it.next()
                        .ok_or_else(|| Error::shape("Scan: the body returned too few values"))?,
                );
            }
        }
        let elem_facts = if len == 0 {
            let given: Vec<Option<ValueFact>> = inputs.iter().map(|t| t.map(ValueFact::of_tensor)).collect();
            let refs: Vec<Option<&ValueFact>> = given.iter().map(Option::as_ref).collect();
            self.step_facts(
                &refs,
                &states.iter().map(ValueFact::of_tensor).collect::<Vec<_>>(),
                inputs,
            )?
        } else {
            Vec::new()
        };
        let mut result = states;
        for (j, mut o) in outs.into_iter().enumerate() {
            if o.is_empty() {
                let elem = elem_facts.get(n + j).cloned().unwrap_or_default();
                let a = norm_axis(self.output_axes[j], elem.rank().unwrap_or(0) + 1).unwrap_or(0);
                result.push(empty_stack(&elem, a));
                continue;
            }
            if self.output_directions[j] == 1 {
                o.reverse();
            }
            let a = norm_axis(self.output_axes[j], o[0].rank() + 1)?;
            result.push(stack("Scan", &o, a)?);
        }
        Ok(result)
    }

    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let (n, m) = (self.states(), self.num_scan_inputs);
        let first: Vec<ValueFact> = (0..n).map(|i| fact_at(inputs, i)).collect();
        let states = settle(first.clone(), |cur| {
            Ok(self.step_facts(inputs, cur, constants)?[..n].to_vec())
        })?;
        let outs = self.step_facts(inputs, &states, constants)?;
        // The sequence length: known when a scan input's axis is.
        let mut len = DimFact::Unknown;
        for j in 0..m {
            let f = fact_at(inputs, n + j);
            if let Some(r) = f.rank() {
                let d = f.dim(norm_axis(self.input_axes[j], r)?);
                if len == DimFact::Unknown || d.known().is_some() {
                    len = d;
                }
            }
        }
        let mut facts = if len == DimFact::Known(0) { first } else { states };
        for (j, elem) in outs[n..].iter().enumerate() {
            let shape = match &elem.shape {
                Some(s) => {
                    let a = norm_axis(self.output_axes[j], s.len() + 1)?;
                    let mut s = s.clone();
                    s.insert(a, len.clone());
                    Some(s)
                }
                None => None,
            };
            facts.push(ValueFact::new(elem.dtype, shape));
        }
        Ok(facts)
    }

    fn ptq_class(&self, _node: &NodeFacts) -> Class {
        Class::FloatIsland("Scan is control flow: its body runs in float".into())
    }

    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
}

impl Scan {
    /// The facts of the body's outputs for one step, given the states' facts.
    fn step_facts(
        &self,
        inputs: &[Option<&ValueFact>],
        states: &[ValueFact],
        constants: &[Option<&Tensor>],
    ) -> Result<Vec<ValueFact>> {
        let (n, m) = (self.states(), self.num_scan_inputs);
        let mut ins: Vec<ValueFact> = states.to_vec();
        for j in 0..m {
            let f = fact_at(inputs, n + j);
            let shape = match &f.shape {
                Some(s) => {
                    let a = norm_axis(self.input_axes[j], s.len())?;
                    let mut s = s.clone();
                    s.remove(a);
                    Some(s)
                }
                None => None,
            };
            ins.push(ValueFact::new(f.dtype, shape));
        }
        ins.extend((n + m..inputs.len()).map(|i| fact_at(inputs, i)));
        let mut consts: Vec<Option<&Tensor>> = vec![None; n + m];
        consts.extend(constants.iter().skip(n + m).copied());
        body_facts(&self.body, &ins, &consts)
    }
}
