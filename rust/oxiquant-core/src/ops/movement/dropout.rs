//! Dropout for inference: the identity, and its mask output (all true: nothing dropped).

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
pub struct Dropout {
    /// Whether the node asks for the (bool) mask output, opset 12 and newer.
    pub mask: bool,
}

impl FromOnnx for Dropout {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        cx.attrs.ignore(&["ratio", "seed", "is_test"]);
        // Before opset 10 the mask had the data's type; in opsets 10 and 11 onnxruntime writes
        // it all false, the ONNX definition all true: not produced there (refused when read).
        Ok(Dropout {
            mask: cx.outputs >= 2 && cx.opset >= 12,
        })
    }
}

impl Op for Dropout {
    fn op_type(&self) -> &'static str {
        "Dropout"
    }
    fn num_outputs(&self) -> usize {
        1 + self.mask as usize
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        check_inference(inputs)?;
        let x = input(inputs, 0, "data")?;
        let mut out = vec![x.clone()];
        if self.mask {
            // Nothing is dropped in inference (or with a zero ratio): every element is kept.
            out.push(Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?);
        }
        Ok(out)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        // The identity, and a bool mask of the same shape.
        let x = required(inputs, 0, "Dropout", "data")?;
        let mut out = vec![x.clone()];
        if self.mask {
            out.push(ValueFact::new(Some(crate::tensor::DType::Bool), x.shape.clone()));
        }
        Ok(out)
    }
    fn has_in_place(&self) -> bool {
        !self.mask
    }
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let mut all: Vec<Option<&Tensor>> = Vec::with_capacity(rest.len() + 1);
        all.push(None);
        all.extend_from_slice(rest);
        check_inference(&all)?;
        Ok(x)
    }
    fn moves_data_only(&self) -> bool {
        !self.mask
    }
}
