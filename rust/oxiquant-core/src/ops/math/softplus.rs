//! Softplus: `ln(1 + e^x)`, element-wise on float32.

use crate::error::Result;
use crate::kernels::elementwise::unary_inplace;
use crate::ops::facts::float_like;
use crate::ops::{input, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct Softplus;

/// `ln(1 + e^x)` without overflow: for `x > 0` it is `x + ln(1 + e^-x)`.
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

impl FromOnnx for Softplus {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Softplus)
    }
}

impl Op for Softplus {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        "Softplus"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mut y = input(inputs, 0, "X")?.clone();
        unary_inplace(y.as_mut_slice::<f32>()?, softplus);
        Ok(vec![y])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        float_like("Softplus", inputs, "X") // float32 in, the same shape out
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, mut x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
        unary_inplace(x.as_mut_slice::<f32>()?, softplus);
        Ok(x)
    }
    // Not scale-invariant: the trait's default class (a float island) applies.
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::NonNegative
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The overflow-free form against the definition in f64, where it does not overflow.
        #[test]
        fn matches_the_definition(x in -80f32..80f32) {
            let want = (1.0 + (x as f64).exp()).ln();
            let got = softplus(x) as f64;
            prop_assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-30) + 1e-7, "{x}: {got} vs {want}");
        }
    }

    #[test]
    fn large_inputs_do_not_overflow_and_nan_propagates() {
        assert_eq!(softplus(1000.0), 1000.0);
        assert_eq!(softplus(-1000.0), 0.0);
        assert!(softplus(f32::NAN).is_nan());
        assert_eq!(softplus(f32::INFINITY), f32::INFINITY);
    }
}
