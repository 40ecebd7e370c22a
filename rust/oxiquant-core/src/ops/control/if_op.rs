//! `If`: runs one of two subgraphs on a boolean condition.

use super::{body_facts, body_to_raw, captured_names, graph_attr, merge, owned, read_body, read_captured};
use super::{run_body, split_inputs, truth};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::onnx::AttrValue;
use crate::ops::{input, Class, DataInputs, FromOnnx, NodeFacts, OnnxForm, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

/// `If(cond, outer values...)`: the outputs of `then_branch` when `cond` holds, else of
/// `else_branch`. The inputs after `cond` are the outer-scope values the branches read.
#[derive(Debug, Clone, PartialEq)]
pub struct If {
    pub then_branch: Graph,
    pub else_branch: Graph,
    /// How many outer-scope values follow `cond` among the node's inputs.
    pub captured: usize,
}

impl If {
    fn branch(&self, cond: bool) -> &Graph {
        if cond {
            &self.then_branch
        } else {
            &self.else_branch
        }
    }

    fn branch_facts(
        &self,
        cond: bool,
        inputs: &[Option<&ValueFact>],
        constants: &[Option<&Tensor>],
    ) -> Result<Vec<ValueFact>> {
        let ins: Vec<ValueFact> = inputs.iter().skip(1).map(|f| f.cloned().unwrap_or_default()).collect();
        let consts: Vec<Option<&Tensor>> = constants.iter().skip(1).copied().collect();
        body_facts(self.branch(cond), &ins, &consts)
    }
}

impl FromOnnx for If {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let captured = read_captured(cx)?;
        let then_branch = read_body(cx, "then_branch")?;
        let else_branch = read_body(cx, "else_branch")?;
        if then_branch.outputs.len() != else_branch.outputs.len() {
            return Err(Error::format(format!(
                "node '{}' (If): then_branch has {} outputs, else_branch {}",
                cx.attrs.node,
                then_branch.outputs.len(),
                else_branch.outputs.len()
            )));
        }
        Ok(If {
            then_branch,
            else_branch,
            captured,
        })
    }
}

impl Op for If {
    fn op_type(&self) -> &'static str {
        "If"
    }

    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let mut names = vec![String::new()];
        names.extend(captured_names(&self.then_branch, self.captured));
        self.onnx_form(&names, opset).map(|(_, a)| a).unwrap_or_default()
    }

    fn onnx_form(&self, inputs: &[String], _opset: i64) -> Result<OnnxForm> {
        let (ins, outer) = split_inputs(inputs, self.captured);
        Ok((
            ins,
            vec![
                graph_attr("then_branch", body_to_raw(&self.then_branch, self.captured, outer)?),
                graph_attr("else_branch", body_to_raw(&self.else_branch, self.captured, outer)?),
            ],
        ))
    }

    fn num_outputs(&self) -> usize {
        self.then_branch.outputs.len()
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let cond = truth("If", "the condition", input(inputs, 0, "cond")?)?;
        let branch = self.branch(cond);
        let exec = Executor::new(branch)?;
        run_body(&exec, owned(inputs, 1, "If")?)
    }

    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        if let Some(Some(c)) = constants.first() {
            return self.branch_facts(truth("If", "the condition", c)?, inputs, constants);
        }
        // A branch whose facts contradict the inputs cannot be the one that runs.
        match (
            self.branch_facts(true, inputs, constants),
            self.branch_facts(false, inputs, constants),
        ) {
            (Ok(a), Ok(b)) => Ok(a.iter().zip(&b).map(|(x, y)| merge(x, y)).collect()),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(e), Err(_)) => Err(e),
        }
    }

    fn ptq_class(&self, _node: &NodeFacts) -> Class {
        Class::FloatIsland("If is control flow: its branches run in float".into())
    }

    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
}
