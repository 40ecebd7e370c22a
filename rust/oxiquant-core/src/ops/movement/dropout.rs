//! Dropout for inference: the identity.

use crate::error::{Error, Result};
use crate::ops::facts::required;
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

/// Opset 12 and newer can ask for training through the `training_mode` input; with a
/// non-zero ratio that drops random elements, which the engine does not do, so it is refused
/// rather than silently computed as the identity.
fn check_inference(inputs: &[Option<&Tensor>]) -> Result<()> {
    let first = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|t| t.to_f32_vec().first().copied())
    };
    let training = first(2).is_some_and(|v| v != 0.0);
    if training && first(1).unwrap_or(0.5) != 0.0 {
        return Err(Error::UnsupportedOp(vec![crate::error::UnsupportedEntry {
            op_type: "Dropout".into(),
            domain: String::new(),
            // The executor prefixes the error with the node's name.
            first_node: "this node".into(),
            count: 1,
            reason: "training_mode=true with a non-zero ratio (only inference is supported)".into(),
        }]));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dropout;

impl FromOnnx for Dropout {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        cx.attrs.ignore(&["ratio", "seed", "is_test"]);
        Ok(Dropout)
    }
}

impl Op for Dropout {
    fn op_type(&self) -> &'static str {
        "Dropout"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        check_inference(inputs)?;
        Ok(vec![input(inputs, 0, "data")?.clone()])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        // The identity (the mask output is not produced).
        Ok(vec![required(inputs, 0, "Dropout", "data")?.clone()])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let mut all: Vec<Option<&Tensor>> = Vec::with_capacity(rest.len() + 1);
        all.push(None);
        all.extend_from_slice(rest);
        check_inference(&all)?;
        Ok(x)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
