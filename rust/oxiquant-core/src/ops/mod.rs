//! Typed ops. Every op is a type implementing [`Op`]: what the engine, the passes and the
//! exporters need to know of it lives on that type, in its own file. [`registry`] maps an
//! ONNX node `(domain, op_type, opset)` to the type that parses it; the rest of the crate
//! reaches a specific op through `downcast_ref`, and generic facts through the trait.
//!
//! Families: `nn/` (convolution, products, normalization, pooling), `math/` (element-wise
//! arithmetic and activations), `movement/` (shape and data movement, any element type),
//! `qlinear` (the quantized ops of ONNX and com.microsoft, as other tools write them),
//! `scaling` (the PTQ's own op). The integer engine's ops live in `crate::int`, the
//! inference plan's fused convolution in `nn::fused_conv`.

pub mod control;
pub mod facts;
#[cfg(test)]
mod facts_props;
pub mod logic;
pub mod math;
pub mod movement;
pub mod nn;
pub mod ptq_rules;
pub mod qlinear;
pub mod reduce;
pub mod registry;
pub mod scaling;
// sampling and geometry (issue 22)
pub mod geometry;

use crate::error::{Error, Result};
use crate::onnx::attrs::{AttrReader, AttrValue};
use crate::tensor::Tensor;
use std::any::Any;
use std::fmt;

pub use facts::{DimFact, ValueFact};
pub use math::{clamp_interval, BinaryOp, Clip, Sum, Unary};
pub use movement::{
    Cast, Concat, Constant, ConstantOfShape, Dropout, Flatten, Gather, Identity, Pad, PadMode, Reshape, Resize, Shape,
    Slice, SliceAttrs, Squeeze, Transpose, Unsqueeze,
};
pub use nn::{BatchNorm, Conv, FusedConv, Gemm, GlobalPool, Lrn, MatMul, Padding, Pool, Softmax};
pub use ptq_rules::{Class, DataInputs, NodeFacts, SignRule};
pub use qlinear::QOp;
pub use registry::{parse, MAX_OPSET};
pub use scaling::{QuantBounds, Scaling};

/// An op of the graph. Implementations are plain data (attributes, packed weights); the
/// trait's defaults describe an op that is exported as itself, evaluated out of place and a
/// float island for the PTQ, so an op states only where it differs.
pub trait Op: OpObject + fmt::Debug + Send + Sync {
    /// The ONNX op type it is read from and written back as (or the internal op's name).
    fn op_type(&self) -> &'static str;

    /// The ONNX domain ("" for ai.onnx).
    fn domain(&self) -> &'static str {
        ""
    }

    /// Attributes to write back to ONNX (only non-defaults, so they are valid in old opsets).
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        Vec::new()
    }

    /// Why the op cannot be written as ONNX (ops of the integer engine or of an inference
    /// plan); `None` for an ONNX op.
    fn no_onnx_form(&self) -> Option<&'static str> {
        None
    }

    /// Runs the op on its inputs (`None` for an omitted optional input).
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>>;

    /// The dtype and shape of each output (`num_outputs` of them) from what is known of the
    /// inputs before running (`None` for an omitted optional input, as in `eval`);
    /// `constants` are the inputs whose value is known (initializers), for the ops whose
    /// output shape depends on a value (Reshape's `shape`, Slice's `starts`, ...). With
    /// concrete inputs (and those values) the facts are exactly what `eval` returns; with less
    /// known, whatever they state still holds when `eval` succeeds (see `facts`). Inputs that
    /// contradict the op are an `Error::Shape` naming the op and what it expected. Required:
    /// `ops::facts_props` checks every registered float op against `eval` on random inputs,
    /// `tests/facts.rs` the quantized, integer and fused ops on whole graphs.
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>>;

    /// Refuses constant inputs the op defines no computation for (a quantized op's zero or
    /// NaN scale, say), so that a model holding them fails at load time naming the node.
    /// `inputs` are the node's inputs that are initializers (`None` for the others);
    /// `eval` checks the values it is given in the same way.
    fn check_constant_inputs(&self, _inputs: &[Option<&Tensor>]) -> Result<()> {
        Ok(())
    }

    /// Whether `eval_in_place` can reuse the first input's buffer as the output.
    fn has_in_place(&self) -> bool {
        false
    }

    /// Runs the op writing into its first input `x`, which no one else needs any more (the
    /// executor hands it over after its last reader): saves an allocation and a copy per
    /// activation. `rest` are the inputs after the first.
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let mut all: Vec<Option<&Tensor>> = Vec::with_capacity(rest.len() + 1);
        all.push(Some(&x));
        all.extend_from_slice(rest);
        let mut out = self.eval(&all)?;
        if out.is_empty() {
            return Err(Error::shape(format!("{} produced no output", self.op_type())));
        }
        Ok(out.swap_remove(0))
    }

    /// Number of outputs the engine computes (extra ONNX outputs such as Dropout's mask or
    /// MaxPool's indices are not produced).
    fn num_outputs(&self) -> usize {
        1
    }

    /// Whether constant folding may evaluate the op.
    fn foldable(&self) -> bool {
        true
    }

    /// Whether the op only moves or selects elements (any dtype, values unchanged): it runs
    /// on integers as it is, in the integer engine and between quantizers.
    fn moves_data_only(&self) -> bool {
        false
    }

    // ---- PTQ (see `ptq_rules` and docs/algorithm.md) ----

    /// How scales flow through the op. Called only for nodes that read an activation. An op
    /// that only moves data passes scales through; any other is a float island unless it says
    /// otherwise.
    fn ptq_class(&self, _node: &NodeFacts) -> Class {
        if self.moves_data_only() {
            Class::Seamless
        } else {
            Class::FloatIsland(format!("{} is not scale-invariant", self.op_type()))
        }
    }

    /// Which inputs carry data (not shapes, pads, bounds or parameters).
    fn data_inputs(&self) -> DataInputs {
        DataInputs::First
    }

    /// When the output is provably non-negative (data movement: when its input is).
    fn sign_rule(&self, _node: &NodeFacts) -> SignRule {
        if self.moves_data_only() {
            SignRule::FollowsInputs
        } else {
            SignRule::Unknown
        }
    }

    /// Whether the op maps every negative value of its first input to 0 (so a quantizer
    /// before it needs no code for negatives).
    fn clamps_negatives(&self, _node: &NodeFacts) -> bool {
        false
    }

    /// Whether the output of an integer input may be fractional (an average), so that the
    /// quantized graph rounds it.
    fn needs_round(&self) -> bool {
        false
    }

    /// Whether the output is a float activation when the op reads one (false for shape
    /// arithmetic and casts to other types).
    fn carries_activation(&self) -> bool {
        true
    }

    /// Whether each output element is a function of the same-position elements of the
    /// inputs only (broadcast), so that a float island of such ops on one 8-bit tensor can
    /// become a lookup table in the integer engine.
    fn elementwise(&self) -> bool {
        false
    }

    // ---- control flow (ops/control) ----

    /// The node's ONNX inputs and attributes when its inputs are named `inputs` in the graph.
    /// Control-flow ops drop the outer-scope values their bodies read (explicit inputs in the
    /// core, implicit in ONNX) and write their bodies back; the others are as they are.
    fn onnx_form(&self, inputs: &[String], opset: i64) -> Result<OnnxForm> {
        Ok((inputs.to_vec(), self.to_attrs(opset)))
    }
}

/// A node's ONNX inputs and attributes (`Op::onnx_form`).
pub type OnnxForm = (Vec<String>, Vec<(String, AttrValue)>);

/// Object-safe plumbing every op gets from its `Clone + PartialEq` implementation.
pub trait OpObject: Any {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clone_box(&self) -> Box<dyn Op>;
    fn eq_dyn(&self, other: &dyn Op) -> bool;
}

impl<T: Op + Clone + PartialEq> OpObject for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_box(&self) -> Box<dyn Op> {
        Box::new(self.clone())
    }
    fn eq_dyn(&self, other: &dyn Op) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

impl dyn Op {
    /// The op as its concrete type, if it is one.
    pub fn downcast_ref<T: Op>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }
    pub fn downcast_mut<T: Op>(&mut self) -> Option<&mut T> {
        self.as_any_mut().downcast_mut::<T>()
    }
    pub fn is<T: Op>(&self) -> bool {
        self.as_any().is::<T>()
    }
}

impl Clone for Box<dyn Op> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

impl PartialEq for Box<dyn Op> {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref().eq_dyn(other.as_ref())
    }
}

/// What an op type is read from: the node's name, type, opset and attributes. Each op's
/// `from_onnx` reads every attribute it honours and refuses the values it does not; the
/// registry then refuses any attribute left unread.
pub struct ParseCtx<'a, 'r> {
    pub op_type: &'a str,
    pub opset: i64,
    pub attrs: &'a AttrReader<'r>,
    /// How many outputs the node declares (Split without sizes splits into that many).
    pub outputs: usize,
}

/// An op type that can be read from an ONNX node.
pub trait FromOnnx: Op + Sized {
    fn from_onnx(cx: &ParseCtx) -> Result<Self>;
}

/// The required input `i` of a node, or an error naming it.
pub(crate) fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize, name: &str) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::shape(format!("missing required input #{i} ({name})")))
}

/// A possibly negative axis, checked against the rank (a scalar has no axis: callers index
/// the shape with the result).
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::shape(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Shorthand for one attribute.
pub(crate) fn attr(name: &str, v: AttrValue) -> Vec<(String, AttrValue)> {
    vec![(name.to_string(), v)]
}
