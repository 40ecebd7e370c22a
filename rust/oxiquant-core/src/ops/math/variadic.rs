//! Min, Max and Mean: any number of operands, broadcast together. Min and Max run on every
//! numeric type (a NaN operand gives NaN, as in onnxruntime), Mean on float32.

use crate::error::{Error, Result};
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::logic::{broadcast_facts, map2, same_dtype2};
use crate::ops::{input, DataInputs, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variadic {
    Min,
    Max,
    Mean,
}

/// `a < b` picks `a` for Min; NaN wins either way.
fn pick<T: PartialOrd + Copy>(min: bool, a: T, b: T) -> T {
    #[allow(clippy::eq_op)]
    let nan = |v: T| v != v;
    if nan(a) {
        a
    } else if nan(b) || (min && b < a) || (!min && b > a) {
        b
    } else {
        a
    }
}

impl Variadic {
    pub fn name(self) -> &'static str {
        match self {
            Variadic::Min => "Min",
            Variadic::Max => "Max",
            Variadic::Mean => "Mean",
        }
    }

    fn types(self) -> &'static [DType] {
        match self {
            Variadic::Mean => &[DType::F32],
            _ => &DType::NUMERIC,
        }
    }

    fn combine(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let min = self == Variadic::Min;
        let mismatch = || {
            Error::shape(format!(
                "{} needs operands of one dtype ({}), got {} {:?} and {} {:?}",
                self.name(),
                self.types().iter().map(|d| d.name()).collect::<Vec<_>>().join(", "),
                a.dtype(),
                a.shape(),
                b.dtype(),
                b.shape()
            ))
        };
        if !self.types().contains(&a.dtype()) {
            return Err(mismatch());
        }
        if self == Variadic::Mean {
            let (x, y) = (a.as_slice::<f32>()?, b.as_slice::<f32>().map_err(|_| mismatch())?);
            return map2(x, a.shape(), y, b.shape(), |p, q| p + q);
        }
        same_dtype2!(a, b, x, y => map2(x, a.shape(), y, b.shape(), |p, q| pick(min, p, q)), Err(mismatch()))
    }
}

impl FromOnnx for Variadic {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(match cx.op_type {
            "Min" => Variadic::Min,
            "Max" => Variadic::Max,
            "Mean" => Variadic::Mean,
            other => return Err(cx.attrs.unsupported(format!("{other} is not Min, Max or Mean"))),
        })
    }
}

impl Op for Variadic {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let first = input(inputs, 0, "data_0")?;
        if !self.types().contains(&first.dtype()) {
            return Err(Error::shape(format!(
                "{} cannot run on {} {:?}",
                self.name(),
                first.dtype(),
                first.shape()
            )));
        }
        let mut acc = first.clone();
        for i in 1..inputs.len() {
            acc = self.combine(&acc, input(inputs, i, "data_i")?)?;
        }
        if *self == Variadic::Mean && inputs.len() > 1 {
            let n = inputs.len() as f32;
            acc.as_mut_slice::<f32>()?.iter_mut().for_each(|v| *v /= n);
        }
        Ok(vec![acc])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.name();
        let mut facts = Vec::with_capacity(inputs.len());
        let mut dtype = None;
        for i in 0..inputs.len().max(1) {
            let f = required(inputs, i, op, "data_i")?;
            expect_dtype(op, f, "every input", self.types())?;
            match (dtype, f.dtype) {
                (Some(d), Some(e)) if d != e => {
                    return Err(fact_error(op, format!("operands must have one dtype, got {d} and {f}")))
                }
                (None, Some(e)) => dtype = Some(e),
                _ => {}
            }
            facts.push(f);
        }
        if *self == Variadic::Mean {
            dtype = Some(DType::F32);
        }
        Ok(vec![ValueFact::new(dtype, broadcast_facts(op, &facts)?)])
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
}
