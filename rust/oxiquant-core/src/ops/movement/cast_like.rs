//! CastLike: Cast to the element type of a second input (whose values are not read).

use crate::error::Result;
use crate::ops::facts::required;
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct CastLike;

impl FromOnnx for CastLike {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        // As Cast: saturation only concerns float8 types, which the engine does not have.
        // Both only change casts to float8/float4 types, which the engine refuses.
        cx.attrs.ignore(&["saturate", "round_mode"]);
        Ok(CastLike)
    }
}

impl Op for CastLike {
    fn op_type(&self) -> &'static str {
        "CastLike"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let to = input(inputs, 1, "target_type")?.dtype();
        Ok(vec![input(inputs, 0, "input")?.cast(to)])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "CastLike", "input")?;
        let t = required(inputs, 1, "CastLike", "target_type")?;
        Ok(vec![ValueFact::new(t.dtype, x.shape.clone())])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland("Cast".into())
    }
}
