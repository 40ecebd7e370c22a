//! The one table from ONNX node types to op types: `(domain, op_type, opsets) -> parser`.
//! Adding an op is a file under `ops/` and a line here.

use super::control::{If, Loop, Scan};
use super::logic::{Bitwise, BitwiseNot, Compare, IsInf, IsNaN, Logical, Not, Where};
use super::math::{BinaryOp, Clip, Einsum, Mod, PRelu, Pow, Softplus, Sum, Trilu, Unary, Variadic};
use super::math::{Det, EyeLike, Shrink, Window};
use super::math::{MelWeightMatrix, TfIdfVectorizer};
use super::movement::BitCast;
use super::movement::TensorScatter;
use super::movement::{
    Cast, Concat, Constant, ConstantOfShape, Dropout, Flatten, Gather, Identity, Pad, Reshape, Resize, Shape, Slice,
    Squeeze, Transpose, Unsqueeze,
};
use super::movement::{CastLike, CenterCropPad, Compress, ReverseSequence, Unique};
use super::movement::{
    DepthToSpace, Expand, GatherElements, GatherND, NonZero, OneHot, Range, ScatterElements, ScatterND, Size,
    SpaceToDepth, Split, Tile,
};
use super::nn::{
    parse_batch_norm, parse_max_pool, ConvInteger, DynamicQuantizeLinear, MatMulInteger, NonMaxSuppression,
};
use super::nn::{Attention, GroupNorm, LayerNorm, SoftmaxLike};
use super::nn::{CausalConvWithState, LinearAttention};
use super::nn::{Conv, ConvTranspose, Gemm, GlobalPool, LpPool, Lrn, MatMul, Pool, Recurrent, Softmax};
use super::nn::{Loss, LpNorm};
use super::qlinear::{QOp, MS_DOMAIN};
use super::reduce::{ArgReduce, CumSum, Reduce, TopK};
use super::{FromOnnx, Op, ParseCtx};
// sampling and geometry (issue 22)
use super::geometry::{
    AffineGrid, Col2Im, DeformConv, GridSample, MaxUnpool, MeanVarianceNorm, RotaryEmbedding, Swish,
};
use crate::error::Result;
use crate::onnx::attrs::AttrReader;

/// Newest `ai.onnx` opset the loader reads. Each entry's `until` says through which opset
/// the op's definition is the one its type follows; `tests/engine/test_opsets.py` checks
/// against onnx's schemas that no op is read at an opset whose definition changed beyond it.
pub const MAX_OPSET: i64 = 28;

/// One registered ONNX op type.
pub struct OpEntry {
    /// "" for ai.onnx.
    pub domain: &'static str,
    pub op_type: &'static str,
    /// The `ai.onnx` opsets whose version of the op the type follows (both ends included).
    pub since: i64,
    pub until: i64,
    pub parse: fn(&ParseCtx) -> Result<Box<dyn Op>>,
}

fn of<T: FromOnnx>(cx: &ParseCtx) -> Result<Box<dyn Op>> {
    Ok(Box::new(T::from_onnx(cx)?))
}

const fn onnx(op_type: &'static str, parse: fn(&ParseCtx) -> Result<Box<dyn Op>>) -> OpEntry {
    OpEntry {
        domain: "",
        op_type,
        since: 1,
        until: MAX_OPSET,
        parse,
    }
}

const fn ms(op_type: &'static str, parse: fn(&ParseCtx) -> Result<Box<dyn Op>>) -> OpEntry {
    OpEntry {
        domain: MS_DOMAIN,
        op_type,
        since: 1,
        until: MAX_OPSET,
        parse,
    }
}

/// An entry for the opsets from `first` on (the op did not exist before).
const fn since(first: i64, e: OpEntry) -> OpEntry {
    OpEntry { since: first, ..e }
}

/// Every op the engine reads. Opset-dependent attributes are read by the op itself (it is
/// given the opset); a range narrower than all opsets means the op does not exist (or is not
/// followed) outside it.
pub static REGISTRY: &[OpEntry] = &[
    // nn
    onnx("Conv", of::<Conv>),
    onnx("Gemm", of::<Gemm>),
    onnx("MatMul", of::<MatMul>),
    onnx("BatchNormalization", parse_batch_norm),
    onnx("LRN", of::<Lrn>),
    onnx("Softmax", of::<Softmax>),
    onnx("MaxPool", parse_max_pool),
    onnx("AveragePool", of::<Pool>),
    onnx("GlobalAveragePool", of::<GlobalPool>),
    onnx("GlobalMaxPool", of::<GlobalPool>),
    onnx("ConvTranspose", of::<ConvTranspose>),
    onnx("LSTM", of::<Recurrent>),
    onnx("GRU", of::<Recurrent>),
    onnx("RNN", of::<Recurrent>),
    onnx("LpPool", of::<LpPool>),
    onnx("GlobalLpPool", of::<LpPool>),
    // math
    onnx("Add", of::<BinaryOp>),
    onnx("Sub", of::<BinaryOp>),
    onnx("Mul", of::<BinaryOp>),
    onnx("Div", of::<BinaryOp>),
    onnx("Sum", of::<Sum>),
    onnx("Clip", of::<Clip>),
    onnx("Relu", of::<Unary>),
    onnx("LeakyRelu", of::<Unary>),
    onnx("Sigmoid", of::<Unary>),
    onnx("Tanh", of::<Unary>),
    onnx("HardSigmoid", of::<Unary>),
    onnx("HardSwish", of::<Unary>),
    onnx("Exp", of::<Unary>),
    onnx("Neg", of::<Unary>),
    onnx("Abs", of::<Unary>),
    onnx("Sqrt", of::<Unary>),
    onnx("Round", of::<Unary>),
    onnx("Floor", of::<Unary>),
    onnx("Softplus", of::<Softplus>),
    // activations and elementary functions
    since(9, onnx("Erf", of::<Unary>)),
    since(20, onnx("Gelu", of::<Unary>)),
    onnx("Elu", of::<Unary>),
    onnx("Selu", of::<Unary>),
    since(12, onnx("Celu", of::<Unary>)),
    onnx("Softsign", of::<Unary>),
    since(18, onnx("Mish", of::<Unary>)),
    since(10, onnx("ThresholdedRelu", of::<Unary>)),
    onnx("Reciprocal", of::<Unary>),
    onnx("Ceil", of::<Unary>),
    since(9, onnx("Sign", of::<Unary>)),
    onnx("Log", of::<Unary>),
    onnx("Sin", of::<Unary>),
    onnx("Cos", of::<Unary>),
    onnx("Tan", of::<Unary>),
    onnx("Asin", of::<Unary>),
    onnx("Acos", of::<Unary>),
    onnx("Atan", of::<Unary>),
    since(9, onnx("Sinh", of::<Unary>)),
    since(9, onnx("Cosh", of::<Unary>)),
    since(9, onnx("Asinh", of::<Unary>)),
    since(9, onnx("Acosh", of::<Unary>)),
    since(9, onnx("Atanh", of::<Unary>)),
    onnx("PRelu", of::<PRelu>),
    onnx("Pow", of::<Pow>),
    since(10, onnx("Mod", of::<Mod>)),
    onnx("Min", of::<Variadic>),
    onnx("Max", of::<Variadic>),
    onnx("Mean", of::<Variadic>),
    // comparisons, logic and selection
    onnx("Equal", of::<Compare>),
    onnx("Less", of::<Compare>),
    onnx("Greater", of::<Compare>),
    since(12, onnx("LessOrEqual", of::<Compare>)),
    since(12, onnx("GreaterOrEqual", of::<Compare>)),
    onnx("And", of::<Logical>),
    onnx("Or", of::<Logical>),
    onnx("Xor", of::<Logical>),
    onnx("Not", of::<Not>),
    since(9, onnx("Where", of::<Where>)),
    since(9, onnx("IsNaN", of::<IsNaN>)),
    since(10, onnx("IsInf", of::<IsInf>)),
    since(18, onnx("BitwiseAnd", of::<Bitwise>)),
    since(18, onnx("BitwiseOr", of::<Bitwise>)),
    since(18, onnx("BitwiseXor", of::<Bitwise>)),
    since(18, onnx("BitwiseNot", of::<BitwiseNot>)),
    since(11, onnx("BitShift", of::<Bitwise>)),
    since(14, onnx("Trilu", of::<Trilu>)),
    since(12, onnx("Einsum", of::<Einsum>)),
    since(15, onnx("CastLike", of::<CastLike>)),
    // data movement and shapes
    onnx("Flatten", of::<Flatten>),
    onnx("Reshape", of::<Reshape>),
    onnx("Transpose", of::<Transpose>),
    onnx("Concat", of::<Concat>),
    onnx("Slice", of::<Slice>),
    onnx("Pad", of::<Pad>),
    onnx("Squeeze", of::<Squeeze>),
    onnx("Unsqueeze", of::<Unsqueeze>),
    onnx("Identity", of::<Identity>),
    onnx("Dropout", of::<Dropout>),
    onnx("Resize", of::<Resize>),
    onnx("Upsample", of::<Resize>),
    onnx("Constant", of::<Constant>),
    onnx("ConstantOfShape", of::<ConstantOfShape>),
    onnx("Shape", of::<Shape>),
    onnx("Gather", of::<Gather>),
    onnx("Cast", of::<Cast>),
    // shape and index ops
    OpEntry {
        since: 2,
        ..onnx("Split", of::<Split>)
    },
    onnx("Expand", of::<Expand>),
    onnx("Range", of::<Range>),
    onnx("Tile", of::<Tile>),
    onnx("Size", of::<Size>),
    onnx("GatherElements", of::<GatherElements>),
    onnx("GatherND", of::<GatherND>),
    onnx("ScatterND", of::<ScatterND>),
    onnx("ScatterElements", of::<ScatterElements>),
    OpEntry {
        until: 10,
        ..onnx("Scatter", of::<ScatterElements>)
    },
    onnx("DepthToSpace", of::<DepthToSpace>),
    onnx("SpaceToDepth", of::<SpaceToDepth>),
    onnx("OneHot", of::<OneHot>),
    onnx("NonZero", of::<NonZero>),
    since(18, onnx("CenterCropPad", of::<CenterCropPad>)),
    since(9, onnx("Compress", of::<Compress>)),
    since(10, onnx("ReverseSequence", of::<ReverseSequence>)),
    since(11, onnx("Unique", of::<Unique>)),
    // reductions
    onnx("ReduceMean", of::<Reduce>),
    onnx("ReduceSum", of::<Reduce>),
    onnx("ReduceMax", of::<Reduce>),
    onnx("ReduceMin", of::<Reduce>),
    onnx("ReduceProd", of::<Reduce>),
    onnx("ReduceL1", of::<Reduce>),
    onnx("ReduceL2", of::<Reduce>),
    onnx("ReduceLogSum", of::<Reduce>),
    onnx("ReduceLogSumExp", of::<Reduce>),
    onnx("ReduceSumSquare", of::<Reduce>),
    onnx("ArgMax", of::<ArgReduce>),
    onnx("ArgMin", of::<ArgReduce>),
    onnx("TopK", of::<TopK>),
    onnx("CumSum", of::<CumSum>),
    since(26, onnx("CumProd", of::<CumSum>)),
    // normalization and softmax variants
    OpEntry {
        since: 17,
        ..onnx("LayerNormalization", of::<LayerNorm>)
    },
    OpEntry {
        since: 23,
        ..onnx("RMSNormalization", of::<LayerNorm>)
    },
    // attention (opset 25 adds the sliding window)
    OpEntry {
        since: 23,
        ..onnx("Attention", of::<Attention>)
    },
    OpEntry {
        since: 18,
        ..onnx("GroupNormalization", of::<GroupNorm>)
    },
    onnx("InstanceNormalization", of::<GroupNorm>),
    onnx("LogSoftmax", of::<SoftmaxLike>),
    onnx("Hardmax", of::<SoftmaxLike>),
    // losses
    since(12, onnx("NegativeLogLikelihoodLoss", of::<Loss>)),
    since(12, onnx("SoftmaxCrossEntropyLoss", of::<Loss>)),
    onnx("LpNormalization", of::<LpNorm>),
    // elementary functions and generators
    since(9, onnx("Shrink", of::<Shrink>)),
    since(11, onnx("Det", of::<Det>)),
    since(9, onnx("EyeLike", of::<EyeLike>)),
    since(17, onnx("HannWindow", of::<Window>)),
    since(17, onnx("HammingWindow", of::<Window>)),
    since(17, onnx("BlackmanWindow", of::<Window>)),
    // detection, dynamically quantized models and the op tail
    since(10, onnx("NonMaxSuppression", of::<NonMaxSuppression>)),
    since(11, onnx("DynamicQuantizeLinear", of::<DynamicQuantizeLinear>)),
    since(10, onnx("MatMulInteger", of::<MatMulInteger>)),
    since(10, onnx("ConvInteger", of::<ConvInteger>)),
    since(9, onnx("TfIdfVectorizer", of::<TfIdfVectorizer>)),
    since(24, onnx("TensorScatter", of::<TensorScatter>)),
    since(17, onnx("MelWeightMatrix", of::<MelWeightMatrix>)),
    since(27, onnx("CausalConvWithState", of::<CausalConvWithState>)),
    since(27, onnx("LinearAttention", of::<LinearAttention>)),
    // quantized models of other tools
    onnx("QuantizeLinear", of::<QOp>),
    onnx("DequantizeLinear", of::<QOp>),
    onnx("QLinearConv", of::<QOp>),
    onnx("QLinearMatMul", of::<QOp>),
    ms("QGemm", of::<QOp>),
    ms("QLinearAdd", of::<QOp>),
    ms("QLinearConcat", of::<QOp>),
    ms("QLinearAveragePool", of::<QOp>),
    ms("QLinearGlobalAveragePool", of::<QOp>),
    ms("QLinearLeakyRelu", of::<QOp>),
    ms("QLinearSigmoid", of::<QOp>),
    // element types
    since(26, onnx("BitCast", of::<BitCast>)),
    // sampling and geometry (GridSample-16 spells its modes bilinear/bicubic and is 4-D only;
    // the op reads the opset)
    since(16, onnx("GridSample", of::<GridSample>)),
    since(20, onnx("AffineGrid", of::<AffineGrid>)),
    since(18, onnx("Col2Im", of::<Col2Im>)),
    since(19, onnx("DeformConv", of::<DeformConv>)),
    since(23, onnx("RotaryEmbedding", of::<RotaryEmbedding>)),
    since(9, onnx("MaxUnpool", of::<MaxUnpool>)),
    since(24, onnx("Swish", of::<Swish>)),
    since(9, onnx("MeanVarianceNormalization", of::<MeanVarianceNorm>)),
    // control flow (ops/control)
    onnx("If", of::<If>),
    onnx("Loop", of::<Loop>),
    since(9, onnx("Scan", of::<Scan>)),
];

/// Maps an ONNX node to its op, reading every attribute; an attribute the op does not read
/// is refused (it would otherwise be silently ignored).
pub fn parse(op_type: &str, domain: &str, attrs: &AttrReader<'_>, opset: i64) -> Result<Box<dyn Op>> {
    parse_node(op_type, domain, attrs, opset, 1)
}

/// [`parse`] for a node declaring `outputs` outputs (the op count of Split's equal parts).
pub fn parse_node(
    op_type: &str,
    domain: &str,
    attrs: &AttrReader<'_>,
    opset: i64,
    outputs: usize,
) -> Result<Box<dyn Op>> {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    let mut known_domain = false;
    let mut other_opsets = false;
    let mut entry = None;
    for e in REGISTRY {
        if e.domain != domain {
            continue;
        }
        known_domain = true;
        if e.op_type == op_type {
            if (e.since..=e.until).contains(&opset) {
                entry = Some(e);
                break;
            }
            other_opsets = true;
        }
    }
    let Some(entry) = entry else {
        return Err(if !known_domain {
            attrs.unsupported(format!("domain '{domain}' is not supported"))
        } else if other_opsets {
            attrs.unsupported(format!("not in ai.onnx opset {opset}"))
        } else if domain == MS_DOMAIN {
            attrs.unsupported(format!("com.microsoft op {op_type} is not supported"))
        } else {
            attrs.unsupported("")
        });
    };
    let op = (entry.parse)(&ParseCtx {
        op_type,
        opset,
        attrs,
        outputs,
    })?;
    attrs.finish()?;
    Ok(op)
}

/// Every registered `(domain, op_type, since, until)`, in table order.
pub fn entries() -> Vec<(&'static str, &'static str, i64, i64)> {
    REGISTRY
        .iter()
        .map(|e| (e.domain, e.op_type, e.since, e.until))
        .collect()
}

/// The op types registered for a domain ("" for ai.onnx), in table order, without repeats.
pub fn op_types(domain: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for e in REGISTRY.iter().filter(|e| e.domain == domain) {
        if !out.contains(&e.op_type) {
            out.push(e.op_type);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::attrs::AttrValue;

    #[test]
    fn every_entry_is_unique_and_parses_to_its_own_type() {
        for (i, e) in REGISTRY.iter().enumerate() {
            assert!(
                !REGISTRY[..i]
                    .iter()
                    .any(|o| o.domain == e.domain && o.op_type == e.op_type),
                "{} registered twice",
                e.op_type
            );
        }
        // Ops that parse without attributes come back as the op type they were read from.
        for op_type in ["Relu", "Add", "MatMul", "Identity", "Flatten", "Concat", "Sum"] {
            let r = AttrReader::new("n", op_type, &[]);
            let op = parse(op_type, "", &r, 13).expect(op_type);
            assert_eq!(op.op_type(), op_type);
        }
    }

    #[test]
    fn refuses_unknown_ops_domains_and_unread_attributes() {
        let r = AttrReader::new("n", "NoSuchOp", &[]);
        let e = parse("NoSuchOp", "", &r, 13).unwrap_err().to_string();
        assert!(e.contains("NoSuchOp") && e.contains("'n'"), "{e}");
        let e = parse("Relu", "my.domain", &r, 13).unwrap_err().to_string();
        assert!(e.contains("domain 'my.domain'"), "{e}");
        let attrs = vec![("bogus".to_string(), AttrValue::Int(1))];
        let r = AttrReader::new("n", "Relu", &attrs);
        let e = parse("Relu", "", &r, 13).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
