//! Conv: attributes, pad resolution and the glue to the convolution kernel.

use crate::error::{Error, Result};
use crate::kernels::conv::{conv2d, ConvShape, Window2d};
use crate::onnx::attrs::{AttrReader, AttrValue};
use crate::ops::facts::{expect_dtype, fact_error, in_op, optional, required};
use crate::ops::{input, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::DType;
use crate::tensor::Tensor;

/// How padding is given: explicit per-side pads or ONNX `auto_pad`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Padding {
    /// ONNX order: all begins, then all ends.
    Explicit(Vec<usize>),
    SameUpper,
    SameLower,
    Valid,
}

impl Padding {
    pub fn parse(a: &AttrReader<'_>) -> Result<Padding> {
        let auto = a.string("auto_pad", "NOTSET")?;
        let pads = a.usizes_opt("pads")?;
        Ok(match auto.as_str() {
            "NOTSET" | "" => Padding::Explicit(pads.unwrap_or_default()),
            "SAME_UPPER" => Padding::SameUpper,
            "SAME_LOWER" => Padding::SameLower,
            "VALID" => Padding::Valid,
            other => return Err(a.unsupported(format!("auto_pad '{other}'"))),
        })
    }

    pub fn to_attrs(&self, out: &mut Vec<(String, AttrValue)>) {
        match self {
            Padding::Explicit(p) if p.iter().any(|&v| v != 0) => {
                out.push(("pads".into(), AttrValue::Ints(p.iter().map(|&v| v as i64).collect())))
            }
            Padding::Explicit(_) => {}
            Padding::SameUpper => out.push(("auto_pad".into(), AttrValue::String("SAME_UPPER".into()))),
            Padding::SameLower => out.push(("auto_pad".into(), AttrValue::String("SAME_LOWER".into()))),
            Padding::Valid => out.push(("auto_pad".into(), AttrValue::String("VALID".into()))),
        }
    }

    /// Pads [begin..., end...] for spatial sizes `input`, kernel spans and strides.
    pub fn resolve(
        &self,
        input: &[usize],
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
    ) -> Result<Vec<usize>> {
        let r = input.len();
        match self {
            Padding::Explicit(p) if p.is_empty() => Ok(vec![0; 2 * r]),
            Padding::Explicit(p) if p.len() == 2 * r => Ok(p.clone()),
            Padding::Explicit(p) => Err(Error::shape(format!(
                "pads {p:?} should have {} values for {r} spatial dims",
                2 * r
            ))),
            Padding::Valid => Ok(vec![0; 2 * r]),
            Padding::SameUpper | Padding::SameLower => {
                let mut pads = vec![0; 2 * r];
                for d in 0..r {
                    // Saturating: kernel, strides and dilations come from the model file (an
                    // absurd window then fails the output-size check, not an overflow).
                    let out = input[d].div_ceil(strides[d]);
                    let span = kernel[d]
                        .saturating_sub(1)
                        .saturating_mul(dilations[d])
                        .saturating_add(1);
                    let total = out
                        .saturating_sub(1)
                        .saturating_mul(strides[d])
                        .saturating_add(span)
                        .saturating_sub(input[d]);
                    let small = total / 2;
                    let (b, e) = if *self == Padding::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    pads[d] = b;
                    pads[d + r] = e;
                }
                Ok(pads)
            }
        }
    }
}

/// Lifts 1-D spatial parameters to 2-D (height 1) so one kernel serves both.
pub fn window_2d(kernel: &[usize], strides: &[usize], dilations: &[usize], pads: &[usize]) -> Window2d {
    if kernel.len() == 1 {
        Window2d {
            kernel: [1, kernel[0]],
            strides: [1, strides[0]],
            dilations: [1, dilations[0]],
            pads: [0, pads[0], 0, pads[1]],
        }
    } else {
        Window2d {
            kernel: [kernel[0], kernel[1]],
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pads: [pads[0], pads[1], pads[2], pads[3]],
        }
    }
}

/// Spatial attribute with a default of ones; checks its length against the rank.
pub fn spatial(v: &Option<Vec<usize>>, rank: usize, what: &str) -> Result<Vec<usize>> {
    match v {
        None => Ok(vec![1; rank]),
        Some(v) if v.len() == rank && v.iter().all(|&x| x > 0) => Ok(v.clone()),
        Some(v) => Err(Error::shape(format!("{what} {v:?} should be {rank} positive values"))),
    }
}

/// The output sizes of a window (convolution or pooling) sliding over input dimensions
/// `dims`: each known size as `Window2d::output_size` gives it, the others unknown. The same
/// checks as `eval` (strides, dilations and pads fitting the rank, a window that fits).
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_facts(
    op: &'static str,
    dims: &[DimFact],
    kernel: &[usize],
    strides: &Option<Vec<usize>>,
    dilations: &Option<Vec<usize>>,
    padding: &Padding,
    ceil_mode: bool,
) -> Result<Vec<DimFact>> {
    let r = dims.len();
    let strides = spatial(strides, r, "strides").map_err(in_op(op))?;
    let dilations = spatial(dilations, r, "dilations").map_err(in_op(op))?;
    // An unknown size stands in as the window's span (which always fits); each output
    // size depends on its own input size only.
    let sizes: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(d, f)| {
            f.known().unwrap_or_else(|| {
                kernel[d]
                    .saturating_sub(1)
                    .saturating_mul(dilations[d])
                    .saturating_add(1)
            })
        })
        .collect();
    let pads = padding
        .resolve(&sizes, kernel, &strides, &dilations)
        .map_err(in_op(op))?;
    let win = window_2d(kernel, &strides, &dilations, &pads);
    let (h, w) = if r == 1 { (1, sizes[0]) } else { (sizes[0], sizes[1]) };
    let out = win.output_size(h, w, ceil_mode).ok_or_else(|| {
        fact_error(
            op,
            format!("input sizes {dims:?} are smaller than the window {kernel:?} with dilations {dilations:?} and pads {pads:?} (or the window size overflows)"),
        )
    })?;
    let out = if r == 1 { vec![out[1]] } else { out.to_vec() };
    Ok(dims
        .iter()
        .zip(out)
        .map(|(f, o)| {
            if f.known().is_some() {
                DimFact::Known(o)
            } else {
                DimFact::Unknown
            }
        })
        .collect())
}

/// `Conv::resolve`'s result: geometry, bias, output shape.
pub(crate) type Resolved<'a> = (ConvShape, Option<&'a [f32]>, Vec<usize>);

#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    pub padding: Padding,
    pub group: usize,
}

impl Conv {
    pub fn parse(a: &AttrReader<'_>) -> Result<Conv> {
        let group = a.int("group", 1)?;
        if group < 1 {
            return Err(Error::format(format!(
                "node '{}' (Conv): group must be >= 1, got {group}",
                a.node
            )));
        }
        let conv = Conv {
            kernel_shape: a.usizes_opt("kernel_shape")?,
            strides: a.usizes_opt("strides")?,
            dilations: a.usizes_opt("dilations")?,
            padding: Padding::parse(a)?,
            group: group as usize,
        };
        // Refuse 3-D and higher at load when the attributes tell the rank (otherwise the
        // weight's rank is checked when the node runs).
        let mut ranks: Vec<usize> = [&conv.kernel_shape, &conv.strides, &conv.dilations]
            .iter()
            .filter_map(|v| v.as_ref().map(|v| v.len()))
            .collect();
        if let Padding::Explicit(p) = &conv.padding {
            ranks.push(p.len() / 2);
        }
        if let Some(r) = ranks.into_iter().find(|&r| r > 2) {
            return Err(a.unsupported(format!("{r}-D convolution (only 1-D and 2-D are supported)")));
        }
        Ok(conv)
    }

    pub fn attrs(&self) -> Vec<(String, AttrValue)> {
        let mut out = Vec::new();
        let ints = |v: &Vec<usize>| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        if let Some(k) = &self.kernel_shape {
            out.push(("kernel_shape".into(), ints(k)));
        }
        if let Some(s) = &self.strides {
            out.push(("strides".into(), ints(s)));
        }
        if let Some(d) = &self.dilations {
            out.push(("dilations".into(), ints(d)));
        }
        self.padding.to_attrs(&mut out);
        if self.group != 1 {
            out.push(("group".into(), AttrValue::Int(self.group as i64)));
        }
        out
    }

    /// Resolves the geometry for an input shape [n, c, spatial...] and weight shape.
    pub fn geometry(&self, xs: &[usize], ws: &[usize]) -> Result<ConvShape> {
        let r = xs.len().saturating_sub(2);
        if !(r == 1 || r == 2) || ws.len() != xs.len() {
            return Err(Error::shape(format!(
                "Conv supports 1-D and 2-D inputs [N, C, (H,) W] with a weight of the same rank; got input {xs:?} and weight {ws:?}"
            )));
        }
        let kernel = ws[2..].to_vec();
        if let Some(k) = &self.kernel_shape {
            if *k != kernel {
                return Err(Error::shape(format!("kernel_shape {k:?} does not match weight {ws:?}")));
            }
        }
        let g = self.group;
        if ws[1].checked_mul(g) != Some(xs[1]) || !ws[0].is_multiple_of(g) {
            return Err(Error::shape(format!(
                "input {xs:?} has {} channels but weight {ws:?} with group {g} expects {}",
                xs[1],
                ws[1].saturating_mul(g)
            )));
        }
        let strides = spatial(&self.strides, r, "strides")?;
        let dilations = spatial(&self.dilations, r, "dilations")?;
        let pads = self.padding.resolve(&xs[2..], &kernel, &strides, &dilations)?;
        let win = window_2d(&kernel, &strides, &dilations, &pads);
        let (h, w) = if r == 1 { (1, xs[2]) } else { (xs[2], xs[3]) };
        let out = win.output_size(h, w, false).ok_or_else(|| {
            Error::shape(format!(
                "input {xs:?} is smaller than the kernel {kernel:?} with dilations {dilations:?} and pads {pads:?} (or the window size overflows)"
            ))
        })?;
        Ok(ConvShape {
            n: xs[0],
            c: xs[1],
            h,
            w,
            m: ws[0],
            group: g,
            win,
            out,
        })
    }

    /// The geometry, the checked bias and the output shape for inputs `[X, W, B?]` (shared
    /// with the inference plan's `FusedConv`).
    pub(crate) fn resolve<'a>(&self, inputs: &[Option<&'a Tensor>]) -> Result<Resolved<'a>> {
        let x = input(inputs, 0, "X")?;
        let w = input(inputs, 1, "W")?;
        let s = self.geometry(x.shape(), w.shape())?;
        let bias = match inputs.get(2).copied().flatten() {
            Some(b) if b.len() == s.m => Some(b.as_slice::<f32>()?),
            Some(b) => {
                return Err(Error::shape(format!(
                    "bias of shape {:?} should have {} values",
                    b.shape(),
                    s.m
                )))
            }
            None => None,
        };
        crate::tensor::check_alloc(&[s.n, s.m, s.out[0], s.out[1]], 4)?;
        let mut shape = vec![s.n, s.m];
        if x.rank() == 3 {
            shape.push(s.out[1]);
        } else {
            shape.extend_from_slice(&s.out);
        }
        Ok((s, bias, shape))
    }

    /// The output of `resolve` on inputs `[X, W, B?]` as far as their facts tell: `[N, M,
    /// spatial...]` float32 (shared with `FusedConv` and `QLinearConv`, named `op`).
    pub(crate) fn facts(&self, op: &'static str, inputs: &[Option<&ValueFact>]) -> Result<ValueFact> {
        let x = required(inputs, 0, op, "X")?;
        let w = required(inputs, 1, op, "W")?;
        let b = optional(inputs, 2);
        expect_dtype(op, x, "X", &[DType::F32])?;
        expect_dtype(op, w, "W", &[DType::F32])?;
        let Some(rank) = x.rank().or(w.rank()) else {
            return Ok(ValueFact::new(Some(DType::F32), None));
        };
        if !(rank == 3 || rank == 4) || x.rank().is_some_and(|r| r != rank) || w.rank().is_some_and(|r| r != rank) {
            return Err(fact_error(
                op,
                format!("supports 1-D and 2-D inputs [N, C, (H,) W] with a weight of the same rank; got input {x} and weight {w}"),
            ));
        }
        let mut kernel: Vec<Option<usize>> = (2..rank).map(|d| w.dim(d).known()).collect();
        if let Some(k) = &self.kernel_shape {
            if k.len() != rank - 2 || kernel.iter().zip(k).any(|(a, b)| a.is_some_and(|a| a != *b)) {
                return Err(fact_error(op, format!("kernel_shape {k:?} does not match weight {w}")));
            }
            kernel = k.iter().map(|&v| Some(v)).collect();
        }
        let g = self.group;
        if let (Some(c), Some(wc)) = (x.dim(1).known(), w.dim(1).known()) {
            if wc.checked_mul(g) != Some(c) {
                return Err(fact_error(
                    op,
                    format!(
                        "input {x} has {c} channels but weight {w} with group {g} expects {}",
                        wc.saturating_mul(g)
                    ),
                ));
            }
        }
        let m = w.dim(0);
        if m.known().is_some_and(|m| !m.is_multiple_of(g)) {
            return Err(fact_error(
                op,
                format!("weight {w} has output channels that group {g} does not divide"),
            ));
        }
        let dims: Vec<DimFact> = (2..rank).map(|d| x.dim(d)).collect();
        let out = match kernel.iter().copied().collect::<Option<Vec<usize>>>() {
            Some(k) => window_facts(op, &dims, &k, &self.strides, &self.dilations, &self.padding, false)?,
            None => vec![DimFact::Unknown; rank - 2],
        };
        if let Some(b) = b {
            if let (Some(n), Some(m)) = (b.numel(), m.known()) {
                if n != m {
                    return Err(fact_error(op, format!("bias {b} should have {m} values")));
                }
            }
        }
        let mut shape = vec![x.dim(0), m];
        shape.extend(out);
        Ok(ValueFact::new(Some(DType::F32), Some(shape)))
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w) = (input(inputs, 0, "X")?, input(inputs, 1, "W")?);
        let (s, bias, shape) = self.resolve(inputs)?;
        if s.n == 0 || s.m == 0 {
            // An empty batch or a weight without output channel: an empty output (the
            // kernels split their work per image and channel group).
            return Ok(vec![Tensor::zeros::<f32>(shape)]);
        }
        let y = conv2d(x.as_slice::<f32>()?, w.as_slice::<f32>()?, bias, &s);
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}

/// The PTQ's affine test shared by Conv, Gemm and MatMul: a layer with no output channel or
/// no input feature has no scale to take out (the passes index a weight's first channel).
pub(crate) fn empty_weight(n: &NodeFacts) -> bool {
    n.constant(1).is_some_and(|w| w.is_empty())
}

impl FromOnnx for Conv {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Conv::parse(cx.attrs)
    }
}

impl Op for Conv {
    fn op_type(&self) -> &'static str {
        "Conv"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.attrs()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![self.facts("Conv", inputs)?])
    }
    fn ptq_class(&self, n: &NodeFacts) -> Class {
        if empty_weight(n) {
            Class::FloatIsland("an empty weight tensor".into())
        } else if n.is_constant(1) && n.is_omitted_or_constant(2) {
            Class::Affine
        } else {
            Class::FloatIsland("Conv with non-constant weights or bias".into())
        }
    }
}
