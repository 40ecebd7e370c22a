//! `Loop`: runs a body while a trip count and/or a condition allow, carrying values from one
//! iteration to the next and stacking per-iteration scan outputs.

use super::{body_facts, body_to_raw, captured_names, empty_stack, fact_at, formal_inputs, graph_attr, owned};
use super::{read_body, read_captured, run_body, settle, split_inputs, stack, truth};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::onnx::AttrValue;
use crate::ops::{Class, DataInputs, DimFact, FromOnnx, NodeFacts, OnnxForm, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

/// `Loop(M, cond, v_initial..., outer values...)`. The body takes the iteration number, the
/// condition and the carried values (then the outer-scope values) and returns the next
/// condition, the next carried values and the scan outputs of the iteration. The node's
/// outputs are the final carried values and each scan output stacked along a new first axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Loop {
    pub body: Graph,
    /// How many outer-scope values end the node's inputs.
    pub captured: usize,
}

impl Loop {
    /// Number of carried values.
    fn carried(&self) -> usize {
        self.body.inputs.len() - self.captured - 2
    }

    /// The trip count when the facts fix it: a constant `M`, no condition (or a constant
    /// true one) and a body that passes its condition through.
    fn known_trips(&self, constants: &[Option<&Tensor>]) -> Option<usize> {
        let m = constants.first().copied().flatten()?.to_i64_vec().ok()?;
        let cond_free = match constants.get(1).copied().flatten() {
            Some(c) => truth("Loop", "cond", c).ok()?,
            None => true,
        };
        let passes = self.body.outputs.first().map(|o| &o.name) == self.body.inputs.get(1).map(|i| &i.name);
        match m.as_slice() {
            // No iteration whatever the condition.
            [m] if *m <= 0 => Some(0),
            [m] if cond_free && passes => Some(*m as usize),
            _ => None,
        }
    }
}

impl FromOnnx for Loop {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let captured = read_captured(cx)?;
        let body = read_body(cx, "body")?;
        let formal = formal_inputs("Loop", &body, captured, 2)?;
        if body.outputs.len() < formal - 1 {
            return Err(Error::format(format!(
                "node '{}' (Loop): the body returns {} values for {} carried ones and the condition",
                cx.attrs.node,
                body.outputs.len(),
                formal - 2
            )));
        }
        Ok(Loop { body, captured })
    }
}

impl Op for Loop {
    fn op_type(&self) -> &'static str {
        "Loop"
    }

    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let mut names = vec![String::new(); 2 + self.carried()];
        names.extend(captured_names(&self.body, self.captured));
        self.onnx_form(&names, opset).map(|(_, a)| a).unwrap_or_default()
    }

    fn onnx_form(&self, inputs: &[String], _opset: i64) -> Result<OnnxForm> {
        let (ins, outer) = split_inputs(inputs, self.captured);
        Ok((
            ins,
            vec![graph_attr("body", body_to_raw(&self.body, self.captured, outer)?)],
        ))
    }

    fn num_outputs(&self) -> usize {
        self.body.outputs.len() - 1
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let n = self.carried();
        let k = self.num_outputs() - n;
        if inputs.len() != 2 + n + self.captured {
            return Err(Error::shape(format!(
                "Loop: {} inputs for {n} carried values and {} outer-scope values",
                inputs.len(),
                self.captured
            )));
        }
        let max = match inputs[0] {
            Some(m) => match m.to_i64_vec()?.as_slice() {
                [m] => Some(*m),
                _ => return Err(Error::shape(format!("Loop: M must be one int64, got {:?}", m.shape()))),
            },
            None => None,
        };
        let mut cond = match inputs[1] {
            Some(c) => truth("Loop", "cond", c)?,
            None => true,
        };
        let mut carried: Vec<Tensor> = Vec::with_capacity(n);
        for (i, v) in inputs[2..2 + n].iter().enumerate() {
            carried.push(
                v.ok_or_else(|| Error::shape(format!("Loop: carried value #{i} is missing")))?
                    .clone(),
            );
        }
        let outer = owned(inputs, 2 + n, "Loop")?;
        let exec = Executor::new(&self.body)?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); k];
        let mut i: i64 = 0;
        while cond && max.is_none_or(|m| i < m) {
            let mut ins = Vec::with_capacity(2 + n + outer.len());
            ins.push(Tensor::scalar(i));
            ins.push(Tensor::scalar(cond));
            ins.append(&mut carried);
            ins.extend(outer.iter().cloned());
            let outs = run_body(&exec, ins)?;
            let mut it = outs.into_iter();
            let c = it
                .next()
                .ok_or_else(|| Error::shape("Loop: the body returned nothing"))?;
            cond = truth("Loop", "the body's condition", &c)?;
            carried.extend(it.by_ref().take(n));
            for s in scans.iter_mut() {
                s.push(
                    it.next()
                        .ok_or_else(|| Error::shape("Loop: the body returned too few values"))?,
                );
            }
            i += 1;
        }
        let mut out = carried;
        if scans.iter().any(Vec::is_empty) {
            // No iteration: the scan outputs are empty, their element facts from the body.
            let facts = self.body_step(
                &inputs.iter().map(|t| t.map(ValueFact::of_tensor)).collect::<Vec<_>>(),
                inputs,
            )?;
            for j in 0..k {
                out.push(empty_stack(facts.get(1 + n + j).unwrap_or(&ValueFact::unknown()), 0));
            }
            return Ok(out);
        }
        for s in &scans {
            out.push(stack("Loop", s, 0)?);
        }
        Ok(out)
    }

    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let n = self.carried();
        let first: Vec<ValueFact> = (0..n).map(|i| fact_at(inputs, 2 + i)).collect();
        let owned_inputs: Vec<Option<ValueFact>> = inputs.iter().map(|f| f.cloned()).collect();
        let carried = settle(first.clone(), |cur| {
            let mut ins = owned_inputs.clone();
            for (i, f) in cur.iter().enumerate() {
                ins[2 + i] = Some(f.clone());
            }
            let outs = self.body_step(&ins, constants)?;
            Ok(outs[1..=n].to_vec())
        })?;
        let mut ins = owned_inputs;
        for (i, f) in carried.iter().enumerate() {
            ins[2 + i] = Some(f.clone());
        }
        let outs = self.body_step(&ins, constants)?;
        let trips = self.known_trips(constants);
        let mut facts = if trips == Some(0) { first } else { carried };
        for elem in &outs[1 + n..] {
            let len = trips.map_or(DimFact::Unknown, DimFact::Known);
            let shape = elem.shape.as_ref().map(|s| {
                let mut s = s.clone();
                s.insert(0, len.clone());
                s
            });
            facts.push(ValueFact::new(elem.dtype, shape));
        }
        Ok(facts)
    }

    fn ptq_class(&self, _node: &NodeFacts) -> Class {
        Class::FloatIsland("Loop is control flow: its body runs in float".into())
    }

    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
}

impl Loop {
    /// The facts of the body's outputs for one iteration on the node's input facts
    /// (`inputs[2..]` as the carried and outer values; the outer ones known when constant).
    fn body_step(&self, inputs: &[Option<ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let mut ins = vec![
            ValueFact::concrete(DType::I64, &[]),
            ValueFact::concrete(DType::Bool, &[]),
        ];
        ins.extend(inputs.iter().skip(2).map(|f| f.clone().unwrap_or_default()));
        let n = self.carried();
        let mut consts: Vec<Option<&Tensor>> = vec![None; 2 + n];
        consts.extend(constants.iter().skip(2 + n).copied());
        body_facts(&self.body, &ins, &consts)
    }
}
