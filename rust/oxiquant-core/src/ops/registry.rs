//! The one table from ONNX node types to op types: `(domain, op_type, opsets) -> parser`.
//! Adding an op is a file under `ops/` and a line here.

use super::math::{BinaryOp, Clip, Softplus, Sum, Unary};
use super::movement::{
    Cast, Concat, Constant, ConstantOfShape, Dropout, Flatten, Gather, Identity, Pad, Reshape, Resize, Shape, Slice,
    Squeeze, Transpose, Unsqueeze,
};
use super::nn::{BatchNorm, Conv, ConvTranspose, Gemm, GlobalPool, LpPool, Lrn, MatMul, Pool, Recurrent, Softmax};
use super::qlinear::{QOp, MS_DOMAIN};
use super::{FromOnnx, Op, ParseCtx};
use crate::error::Result;
use crate::onnx::attrs::AttrReader;

/// Newest `ai.onnx` opset whose semantics the engine follows for every op it knows.
pub const MAX_OPSET: i64 = 23;

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

/// Every op the engine reads. Opset-dependent attributes are read by the op itself (it is
/// given the opset); a range narrower than all opsets means the op does not exist (or is not
/// followed) outside it.
pub static REGISTRY: &[OpEntry] = &[
    // nn
    onnx("Conv", of::<Conv>),
    onnx("Gemm", of::<Gemm>),
    onnx("MatMul", of::<MatMul>),
    onnx("BatchNormalization", of::<BatchNorm>),
    onnx("LRN", of::<Lrn>),
    onnx("Softmax", of::<Softmax>),
    onnx("MaxPool", of::<Pool>),
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
];

/// Maps an ONNX node to its op, reading every attribute; an attribute the op does not read
/// is refused (it would otherwise be silently ignored).
pub fn parse(op_type: &str, domain: &str, attrs: &AttrReader<'_>, opset: i64) -> Result<Box<dyn Op>> {
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
    let op = (entry.parse)(&ParseCtx { op_type, opset, attrs })?;
    attrs.finish()?;
    Ok(op)
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
