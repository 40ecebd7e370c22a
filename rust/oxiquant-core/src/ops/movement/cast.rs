//! Cast to another element type.

use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::required;
use crate::ops::{attr, input, Class, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

pub fn cast(to: DType, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    Ok(vec![input(inputs, 0, "input")?.cast(to)])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub to: DType,
}

impl FromOnnx for Cast {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let code = a.int("to", 0)?;
        let to =
            DType::from_onnx_code(code as i32).ok_or_else(|| a.unsupported(format!("cast to ONNX dtype {code}")))?;
        // Both only change casts to float8/float4 types, which the engine refuses above.
        a.ignore(&["saturate", "round_mode"]);
        Ok(Cast { to })
    }
}

impl Op for Cast {
    fn op_type(&self) -> &'static str {
        "Cast"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("to", AttrValue::Int(self.to.onnx_code() as i64))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        cast(self.to, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Cast", "input")?;
        Ok(vec![ValueFact::new(Some(self.to), x.shape.clone())])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland("Cast".into())
    }
    fn carries_activation(&self) -> bool {
        self.to == DType::F32
    }
}
