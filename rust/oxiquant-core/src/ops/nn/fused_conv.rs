//! Ops that exist only in inference plans (`passes::inference_plan`): never parsed from
//! ONNX, never exported. A `FusedConv` is a convolution with its weights prepared once per
//! model and the ops that read only its output (a residual Add, then a Relu or Clip)
//! applied as each value is stored, instead of one pass over the activation each.

use super::conv::Conv;
use crate::error::Result;
use crate::kernels::conv::{conv2d_fused, PackedWeights};
use crate::kernels::elementwise::unary_inplace;
use crate::ops::facts::{in_op, required};
use crate::ops::{input, BinaryOp, Class, Clip, NodeFacts, Op, ValueFact};
use crate::tensor::Tensor;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct FusedConv {
    pub conv: Conv,
    /// The weights prepared for the kernel that runs the layer (direct or Winograd), when
    /// it takes them prepared.
    pub packed: Option<Arc<PackedWeights>>,
    /// Inputs are `[residual, X, W, B]` when true (the residual is added to the
    /// convolution), else `[X, W, B]`.
    pub residual: bool,
    /// Clamp after the sum: a fused Relu is `[0, inf]`.
    pub lo: f32,
    pub hi: f32,
}

impl FusedConv {
    /// Op type in summaries and profiles, e.g. "Conv+Add+Relu".
    pub fn kind_name(&self) -> &'static str {
        let act = self.lo != f32::NEG_INFINITY || self.hi != f32::INFINITY;
        match (self.residual, act) {
            (false, false) => "Conv(packed)",
            (false, true) => "Conv+Clip",
            (true, false) => "Conv+Add",
            (true, true) => "Conv+Add+Clip",
        }
    }

    /// Runs with the residual's buffer (owned: no other reader needs it) as the output.
    pub fn eval_into(&self, residual: Option<Tensor>, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let (x, w) = (input(rest, 0, "X")?, input(rest, 1, "W")?);
        let (s, bias, shape) = self.conv.resolve(rest)?;
        let residual = match residual {
            Some(r) if r.shape() == shape.as_slice() => Some(r.into_vec::<f32>()?),
            Some(r) => {
                // A broadcasting add (shapes are only known at run time): the convolution
                // alone, then the graph's own Add and clamp, so the result is the same.
                let plain = FusedConv {
                    residual: false,
                    lo: f32::NEG_INFINITY,
                    hi: f32::INFINITY,
                    ..self.clone()
                };
                let y = plain.eval_into(None, rest)?;
                let mut sum = BinaryOp::Add.apply(&y, &r)?;
                let (lo, hi) = (self.lo, self.hi);
                unary_inplace(sum.as_mut_slice::<f32>()?, |v| Clip::apply(v, lo, hi));
                return Ok(sum);
            }
            None => None,
        };
        if s.n == 0 || s.m == 0 {
            return Ok(Tensor::zeros::<f32>(shape));
        }
        let y = conv2d_fused(
            x.as_slice::<f32>()?,
            w.as_slice::<f32>()?,
            self.packed.as_deref(),
            bias,
            &s,
            residual,
            self.lo,
            self.hi,
        );
        Tensor::from_vec(shape, y)
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if self.residual {
            let r = input(inputs, 0, "residual")?.clone();
            Ok(vec![self.eval_into(Some(r), &inputs[1..])?])
        } else {
            Ok(vec![self.eval_into(None, inputs)?])
        }
    }
}

impl Op for FusedConv {
    fn op_type(&self) -> &'static str {
        self.kind_name()
    }
    fn no_onnx_form(&self) -> Option<&'static str> {
        Some("belongs to an inference plan and has no ONNX form; export the model it was planned from")
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.kind_name();
        if !self.residual {
            return Ok(vec![self.conv.facts(op, inputs)?]);
        }
        // The convolution plus the residual, broadcast as the graph's Add would (both f32).
        let residual = required(inputs, 0, op, "residual")?;
        let y = self.conv.facts(op, inputs.get(1..).unwrap_or(&[]))?;
        Ok(vec![BinaryOp::Add.facts(&y, residual).map_err(in_op(op))?])
    }
    fn has_in_place(&self) -> bool {
        // Its first input is the residual, whose buffer becomes the output.
        self.residual
    }
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        if self.residual {
            self.eval_into(Some(x), rest)
        } else {
            let mut all: Vec<Option<&Tensor>> = vec![Some(&x)];
            all.extend_from_slice(rest);
            Ok(self.eval_into(None, &all)?)
        }
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland(format!("{} is an op of an inference plan", self.kind_name()))
    }
}
