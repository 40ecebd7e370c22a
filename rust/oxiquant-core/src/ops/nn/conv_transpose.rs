//! ConvTranspose: attributes, output size and pad resolution, and the glue to the kernel.

use crate::error::{Error, Result};
use crate::kernels::conv_transpose::{conv_transpose, ConvTransposeShape};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, in_op, optional, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, DType, Tensor};

/// How the pads of a transposed convolution are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransposePad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose {
    pub auto_pad: TransposePad,
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    /// ONNX order: all begins, then all ends.
    pub pads: Option<Vec<usize>>,
    pub output_padding: Option<Vec<usize>>,
    /// The spatial output sizes (or `[N, C, spatial...]`, of which the spatial part counts).
    pub output_shape: Option<Vec<usize>>,
    pub group: usize,
}

/// One spatial axis: its output size and the pad before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Axis {
    out: usize,
    pad_begin: usize,
}

fn overflow() -> Error {
    Error::shape("ConvTranspose: the output size overflows".to_string())
}

impl ConvTranspose {
    /// Per-axis attribute of `r` values (default `default`), checked.
    fn per_axis(v: &Option<Vec<usize>>, r: usize, default: usize, what: &str, positive: bool) -> Result<Vec<usize>> {
        match v {
            None => Ok(vec![default; r]),
            Some(v) if v.len() == r && (!positive || v.iter().all(|&x| x > 0)) => Ok(v.clone()),
            Some(v) => Err(Error::shape(format!(
                "ConvTranspose: {what} {v:?} should be {r} {}values",
                if positive { "positive " } else { "" }
            ))),
        }
    }

    /// The output size and leading pad of spatial axis `d` of `r`, for input size `len` and
    /// kernel size `k`, as onnxruntime computes them.
    fn axis(&self, d: usize, r: usize, len: usize, k: usize) -> Result<Axis> {
        let s = Self::per_axis(&self.strides, r, 1, "strides", true)?[d];
        let dil = Self::per_axis(&self.dilations, r, 1, "dilations", true)?[d];
        let adj = Self::per_axis(&self.output_padding, r, 0, "output_padding", false)?[d];
        if len == 0 || k == 0 {
            return Err(Error::shape(format!(
                "ConvTranspose: spatial axis {d} has input size {len} and kernel size {k}; both must be positive"
            )));
        }
        // The extent of the full transposed convolution: (len - 1) * s + adj + (k - 1) * dil + 1.
        let full = (len - 1)
            .checked_mul(s)
            .and_then(|v| v.checked_add(adj))
            .and_then(|v| v.checked_add((k - 1).checked_mul(dil)?))
            .and_then(|v| v.checked_add(1))
            .ok_or_else(overflow)?;
        // The total padding split between the two ends: SAME_UPPER puts the odd one at the
        // end, SAME_LOWER and an output_shape without auto_pad at the beginning.
        let split = |target: usize| -> Axis {
            let total = full.saturating_sub(target);
            let pad_begin = if self.auto_pad == TransposePad::SameUpper {
                total / 2
            } else {
                total - total / 2
            };
            Axis { out: target, pad_begin }
        };
        if let Some(os) = &self.output_shape {
            if os.len() != r && os.len() != r + 2 {
                return Err(Error::shape(format!(
                    "ConvTranspose: output_shape {os:?} should have {r} spatial values"
                )));
            }
            let target = os[os.len() - r + d];
            // Longer than the full output by a stride or more: the input would be longer too.
            if target.saturating_sub(full) >= s {
                return Err(Error::shape(format!(
                    "ConvTranspose: output_shape {os:?} is inconsistent with input size {len} on spatial axis {d} (at most {} for stride {s})",
                    full + s - 1
                )));
            }
            return Ok(split(target));
        }
        match self.auto_pad {
            TransposePad::SameUpper | TransposePad::SameLower => Ok(split(len.checked_mul(s).ok_or_else(overflow)?)),
            TransposePad::Valid => Ok(Axis {
                out: full,
                pad_begin: 0,
            }),
            TransposePad::NotSet => {
                let pads = Self::per_axis(&self.pads, 2 * r, 0, "pads", false)?;
                let (b, e) = (pads[d], pads[d + r]);
                let out = full
                    .checked_sub(b.saturating_add(e))
                    .filter(|&o| o > 0)
                    .ok_or_else(|| {
                        Error::shape(format!(
                            "ConvTranspose: pads {b} and {e} of spatial axis {d} leave no output of the {full} computed"
                        ))
                    })?;
                Ok(Axis { out, pad_begin: b })
            }
        }
    }

    /// The kernel's geometry for input shape `xs` and weight shape `ws`.
    fn geometry(&self, xs: &[usize], ws: &[usize]) -> Result<ConvTransposeShape> {
        let rank = xs.len();
        if !(3..=5).contains(&rank) || ws.len() != rank {
            return Err(Error::shape(format!(
                "ConvTranspose supports 1-D to 3-D inputs [N, C, spatial...] with a weight of the same rank; got input {xs:?} and weight {ws:?}"
            )));
        }
        let r = rank - 2;
        if let Some(k) = &self.kernel_shape {
            if k[..] != ws[2..] {
                return Err(Error::shape(format!(
                    "ConvTranspose: kernel_shape {k:?} does not match weight {ws:?}"
                )));
            }
        }
        let g = self.group;
        if ws[0] != xs[1] || !xs[1].is_multiple_of(g) {
            return Err(Error::shape(format!(
                "ConvTranspose: input {xs:?} has {} channels but weight {ws:?} with group {g} expects {} (a multiple of the group)",
                xs[1], ws[0]
            )));
        }
        let m = ws[1].checked_mul(g).ok_or_else(overflow)?;
        let mut s = ConvTransposeShape {
            n: xs[0],
            c: xs[1],
            m,
            group: g,
            input: [1; 3],
            kernel: [1; 3],
            strides: [1; 3],
            dilations: [1; 3],
            pads_begin: [0; 3],
            out: [1; 3],
        };
        let strides = Self::per_axis(&self.strides, r, 1, "strides", true)?;
        let dilations = Self::per_axis(&self.dilations, r, 1, "dilations", true)?;
        for d in 0..r {
            let a = self.axis(d, r, xs[2 + d], ws[2 + d])?;
            let at = 3 - r + d;
            s.input[at] = xs[2 + d];
            s.kernel[at] = ws[2 + d];
            s.strides[at] = strides[d];
            s.dilations[at] = dilations[d];
            s.pads_begin[at] = a.pad_begin;
            s.out[at] = a.out;
        }
        Ok(s)
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let w = input(inputs, 1, "W")?;
        let s = self.geometry(x.shape(), w.shape())?;
        let bias = match inputs.get(2).copied().flatten() {
            Some(b) if b.rank() == 1 && b.len() == s.m => Some(b.as_slice::<f32>()?),
            Some(b) => {
                return Err(Error::shape(format!(
                    "ConvTranspose: bias of shape {:?} should have {} values",
                    b.shape(),
                    s.m
                )))
            }
            None => None,
        };
        let r = x.rank() - 2;
        let mut shape = vec![s.n, s.m];
        shape.extend_from_slice(&s.out[3 - r..]);
        check_alloc(&shape, 4)?;
        // The columns of one image and group.
        check_alloc(
            &[
                s.m / s.group.max(1),
                s.kernel.iter().product(),
                s.input.iter().product(),
            ],
            4,
        )?;
        let y = conv_transpose(x.as_slice::<f32>()?, w.as_slice::<f32>()?, bias, &s);
        Ok(vec![Tensor::from_vec(shape, y)?])
    }

    fn facts(&self, inputs: &[Option<&ValueFact>]) -> Result<ValueFact> {
        let op = "ConvTranspose";
        let x = required(inputs, 0, op, "X")?;
        let w = required(inputs, 1, op, "W")?;
        expect_dtype(op, x, "X", &[DType::F32])?;
        expect_dtype(op, w, "W", &[DType::F32])?;
        let Some(rank) = x.rank().or(w.rank()) else {
            return Ok(ValueFact::new(Some(DType::F32), None));
        };
        if !(3..=5).contains(&rank) || x.rank().is_some_and(|r| r != rank) || w.rank().is_some_and(|r| r != rank) {
            return Err(fact_error(
                op,
                format!("supports 1-D to 3-D inputs [N, C, spatial...] with a weight of the same rank; got input {x} and weight {w}"),
            ));
        }
        let r = rank - 2;
        let g = self.group;
        if let (Some(c), Some(wc)) = (x.dim(1).known(), w.dim(0).known()) {
            if c != wc || !c.is_multiple_of(g) {
                return Err(fact_error(
                    op,
                    format!("input {x} has {c} channels but weight {w} with group {g} expects {wc} (a multiple of the group)"),
                ));
            }
        }
        let mut kernel: Vec<Option<usize>> = (2..rank).map(|d| w.dim(d).known()).collect();
        if let Some(k) = &self.kernel_shape {
            if k.len() != r || kernel.iter().zip(k).any(|(a, b)| a.is_some_and(|a| a != *b)) {
                return Err(fact_error(op, format!("kernel_shape {k:?} does not match weight {w}")));
            }
            kernel = k.iter().map(|&v| Some(v)).collect();
        }
        let m = match w.dim(1).known() {
            Some(mg) => DimFact::Known(mg.checked_mul(g).ok_or_else(overflow).map_err(in_op(op))?),
            None => DimFact::Unknown,
        };
        let mut shape = vec![x.dim(0), m.clone()];
        for d in 0..r {
            let (len, k) = (x.dim(2 + d).known(), kernel[d]);
            shape.push(match (len, k) {
                (Some(len), Some(k)) => DimFact::Known(self.axis(d, r, len, k).map_err(in_op(op))?.out),
                _ => match &self.output_shape {
                    // The output size does not depend on the input's.
                    Some(os) if os.len() == r || os.len() == r + 2 => DimFact::Known(os[os.len() - r + d]),
                    _ => DimFact::Unknown,
                },
            });
        }
        if let (Some(b), Some(m)) = (optional(inputs, 2), m.known()) {
            if b.rank().is_some_and(|br| br != 1) || b.numel().is_some_and(|n| n != m) {
                return Err(fact_error(op, format!("bias {b} should have {m} values")));
            }
        }
        Ok(ValueFact::new(Some(DType::F32), Some(shape)))
    }
}

impl FromOnnx for ConvTranspose {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let group = a.int("group", 1)?;
        if group < 1 {
            return Err(Error::format(format!(
                "node '{}' (ConvTranspose): group must be >= 1, got {group}",
                a.node
            )));
        }
        let auto_pad = match a.string("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => TransposePad::NotSet,
            "SAME_UPPER" => TransposePad::SameUpper,
            "SAME_LOWER" => TransposePad::SameLower,
            "VALID" => TransposePad::Valid,
            other => return Err(a.unsupported(format!("auto_pad '{other}'"))),
        };
        let op = ConvTranspose {
            auto_pad,
            kernel_shape: a.usizes_opt("kernel_shape")?,
            strides: a.usizes_opt("strides")?,
            dilations: a.usizes_opt("dilations")?,
            pads: a.usizes_opt("pads")?,
            output_padding: a.usizes_opt("output_padding")?,
            output_shape: a.usizes_opt("output_shape")?,
            group: group as usize,
        };
        let ranks = [&op.kernel_shape, &op.strides, &op.dilations, &op.output_padding]
            .into_iter()
            .filter_map(|v| v.as_ref().map(|v| v.len()))
            .chain(op.pads.as_ref().map(|p| p.len() / 2));
        if let Some(r) = ranks.into_iter().find(|&r| r > 3) {
            return Err(a.unsupported(format!("{r}-D transposed convolution (only 1-D to 3-D are supported)")));
        }
        Ok(op)
    }
}

impl Op for ConvTranspose {
    fn op_type(&self) -> &'static str {
        "ConvTranspose"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let ints = |v: &Vec<usize>| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        let mut out = Vec::new();
        let named = [
            ("kernel_shape", &self.kernel_shape),
            ("strides", &self.strides),
            ("dilations", &self.dilations),
            ("pads", &self.pads),
            ("output_padding", &self.output_padding),
            ("output_shape", &self.output_shape),
        ];
        for (name, v) in named {
            if let Some(v) = v {
                out.push((name.to_string(), ints(v)));
            }
        }
        let auto = match self.auto_pad {
            TransposePad::NotSet => None,
            TransposePad::SameUpper => Some("SAME_UPPER"),
            TransposePad::SameLower => Some("SAME_LOWER"),
            TransposePad::Valid => Some("VALID"),
        };
        if let Some(a) = auto {
            out.push(("auto_pad".into(), AttrValue::String(a.into())));
        }
        if self.group != 1 {
            out.push(("group".into(), AttrValue::Int(self.group as i64)));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![self.facts(inputs)?])
    }
}
