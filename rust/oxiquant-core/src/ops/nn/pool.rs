//! MaxPool and AveragePool (max pooling also on 8-bit integers, as QOperator models pool).

use super::conv::{spatial, window_2d, window_facts, Padding};
use crate::error::{Error, Result};
use crate::kernels::pool::{pool2d, PoolKind};
use crate::onnx::attrs::{AttrReader, AttrValue};
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub max: bool,
    pub kernel_shape: Vec<usize>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    pub padding: Padding,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl Pool {
    pub fn parse(a: &AttrReader<'_>, max: bool) -> Result<Pool> {
        let kernel_shape = a
            .usizes_opt("kernel_shape")?
            .ok_or_else(|| Error::format(format!("node '{}' ({}): kernel_shape is required", a.node, a.op)))?;
        if !(1..=2).contains(&kernel_shape.len()) {
            return Err(a.unsupported(format!(
                "{}-D pooling (only 1-D and 2-D are supported)",
                kernel_shape.len()
            )));
        }
        if kernel_shape.contains(&0) {
            return Err(Error::format(format!(
                "node '{}' ({}): kernel_shape {kernel_shape:?} must be positive",
                a.node, a.op
            )));
        }
        if max {
            // storage_order only changes the optional Indices output, which is not produced.
            a.ignore(&["storage_order"]);
        }
        Ok(Pool {
            max,
            kernel_shape,
            strides: a.usizes_opt("strides")?,
            dilations: a.usizes_opt("dilations")?,
            padding: Padding::parse(a)?,
            ceil_mode: a.int("ceil_mode", 0)? != 0,
            count_include_pad: !max && a.int("count_include_pad", 0)? != 0,
        })
    }

    pub fn attrs(&self) -> Vec<(String, AttrValue)> {
        let ints = |v: &Vec<usize>| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        let mut out = vec![("kernel_shape".to_string(), ints(&self.kernel_shape))];
        if let Some(s) = &self.strides {
            out.push(("strides".into(), ints(s)));
        }
        if let Some(d) = &self.dilations {
            if d.iter().any(|&x| x != 1) {
                out.push(("dilations".into(), ints(d)));
            }
        }
        self.padding.to_attrs(&mut out);
        if self.ceil_mode {
            out.push(("ceil_mode".into(), AttrValue::Int(1)));
        }
        if self.count_include_pad {
            out.push(("count_include_pad".into(), AttrValue::Int(1)));
        }
        out
    }

    /// Resolves the window for input shape `xs`: `(planes, h, w, window, out, output shape)`.
    pub fn plan(&self, xs: &[usize]) -> Result<PoolPlan> {
        let r = self.kernel_shape.len();
        if !(r == 1 || r == 2) || xs.len() != r + 2 {
            return Err(Error::shape(format!(
                "pooling supports 1-D and 2-D inputs [N, C, (H,) W]; got input {xs:?} with kernel {:?}",
                self.kernel_shape
            )));
        }
        let strides = spatial(&self.strides, r, "strides")?;
        let dilations = spatial(&self.dilations, r, "dilations")?;
        let pads = self
            .padding
            .resolve(&xs[2..], &self.kernel_shape, &strides, &dilations)?;
        let win = window_2d(&self.kernel_shape, &strides, &dilations, &pads);
        let (h, w) = if r == 1 { (1, xs[2]) } else { (xs[2], xs[3]) };
        let out = win.output_size(h, w, self.ceil_mode).ok_or_else(|| {
            Error::shape(format!(
                "input {xs:?} is smaller than the pooling window {:?} (or the window size overflows)",
                self.kernel_shape
            ))
        })?;
        let mut shape = vec![xs[0], xs[1]];
        if r == 1 {
            shape.push(out[1]);
        } else {
            shape.extend_from_slice(&out);
        }
        let kind = if self.max {
            PoolKind::Max
        } else {
            PoolKind::Avg {
                count_include_pad: self.count_include_pad,
            }
        };
        crate::tensor::check_alloc(&[xs[0], xs[1], out[0], out[1]], 4)?;
        Ok(PoolPlan {
            planes: xs[0] * xs[1],
            h,
            w,
            win,
            out,
            shape,
            kind,
        })
    }

    /// The output of `plan` as far as `x` tells: `[N, C, spatial...]`, of the input's dtype
    /// (float32; max pooling also uint8 and int8), named `op` in errors.
    pub(crate) fn facts(&self, op: &'static str, x: &ValueFact) -> Result<ValueFact> {
        let r = self.kernel_shape.len();
        if !(r == 1 || r == 2) || x.rank().is_some_and(|xr| xr != r + 2) {
            return Err(fact_error(
                op,
                format!(
                    "supports 1-D and 2-D inputs [N, C, (H,) W]; got input {x} with kernel {:?}",
                    self.kernel_shape
                ),
            ));
        }
        let dtype = if self.max {
            expect_dtype(op, x, "X", &[DType::F32, DType::U8, DType::I8])?;
            x.dtype
        } else {
            expect_dtype(op, x, "X", &[DType::F32])?;
            Some(DType::F32)
        };
        let dims: Vec<_> = (2..r + 2).map(|d| x.dim(d)).collect();
        let out = window_facts(
            op,
            &dims,
            &self.kernel_shape,
            &self.strides,
            &self.dilations,
            &self.padding,
            self.ceil_mode,
        )?;
        let mut shape = vec![x.dim(0), x.dim(1)];
        shape.extend(out);
        Ok(ValueFact::new(dtype, Some(shape)))
    }

    pub fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let p = self.plan(x.shape())?;
        let y = pool2d(x.as_slice::<f32>()?, p.planes, p.h, p.w, &p.win, p.out, p.kind);
        Ok(vec![Tensor::from_vec(p.shape, y)?])
    }
}

/// A pooling window resolved for one input shape.
pub struct PoolPlan {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub win: crate::kernels::conv::Window2d,
    pub out: [usize; 2],
    pub shape: Vec<usize>,
    pub kind: PoolKind,
}

/// Whether the first input is an 8-bit integer tensor.
pub(crate) fn is_8bit(inputs: &[Option<&Tensor>]) -> bool {
    matches!(
        inputs.first().copied().flatten().map(Tensor::dtype),
        Some(crate::tensor::DType::U8 | crate::tensor::DType::I8)
    )
}

impl FromOnnx for Pool {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Pool::parse(cx.attrs, cx.op_type == "MaxPool")
    }
}

impl Op for Pool {
    fn op_type(&self) -> &'static str {
        if self.max {
            "MaxPool"
        } else {
            "AveragePool"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.attrs()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if self.max && is_8bit(inputs) {
            return crate::int::IntOp::Pool(self.clone()).eval(inputs);
        }
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        Ok(vec![self.facts(op, required(inputs, 0, op, "X")?)?])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Seamless
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::FollowsInputs
    }
    fn needs_round(&self) -> bool {
        !self.max
    }
}
