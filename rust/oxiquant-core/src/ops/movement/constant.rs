//! Constant: a value given as an attribute.

use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::{attr, Class, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub value: Tensor,
}

impl FromOnnx for Constant {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let value = if let Some(t) = a.tensor_opt("value")? {
            t
        } else if let Some(v) = a.float_opt("value_float")? {
            Tensor::scalar(v)
        } else if let Some(v) = a.floats_opt("value_floats")? {
            Tensor::from_vec(vec![v.len()], v)?
        } else if let Some(v) = a.int_opt("value_int")? {
            Tensor::scalar(v)
        } else if let Some(v) = a.ints_opt("value_ints")? {
            Tensor::from_vec(vec![v.len()], v)?
        } else {
            return Err(a.unsupported("Constant without a value, value_float(s) or value_int(s)"));
        };
        Ok(Constant { value })
    }
}

impl Op for Constant {
    fn op_type(&self) -> &'static str {
        "Constant"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("value", AttrValue::Tensor(self.value.clone()))
    }
    fn eval(&self, _inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.value.clone()])
    }
    fn output_facts(&self, _inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![ValueFact::of_tensor(&self.value)])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
