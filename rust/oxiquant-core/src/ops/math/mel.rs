//! MelWeightMatrix (opset 17): the triangular filters that map the `dft_length / 2 + 1` bins
//! of a spectrum to `num_mel_bins` mel-scale bins, as onnxruntime builds them: band edges
//! equally spaced in mels (`2595 log10(1 + f / 700)`) between the two edge frequencies, each
//! put on its spectrum bin `floor((dft_length + 1) f / sample_rate)`; computed in f64.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct MelWeightMatrix {
    pub dtype: DType,
}

impl FromOnnx for MelWeightMatrix {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let code = cx.attrs.int("output_datatype", 1)?;
        // float16 and float64 are computed in float32, as everywhere in the engine.
        let dtype = match code {
            10 | 11 => Some(DType::F32),
            c => DType::from_onnx_code(c as i32),
        };
        Ok(MelWeightMatrix {
            dtype: dtype.ok_or_else(|| cx.attrs.unsupported(format!("output_datatype={code}")))?,
        })
    }
}

/// The `[dft_length / 2 + 1, num_mel_bins]` filters, row-major.
/// Filters reaching past the spectrum's last bin (an upper edge above what `dft_length` and
/// `sample_rate` resolve) are an error, as in onnxruntime.
pub fn mel_weights(
    mel_bins: usize,
    dft_length: usize,
    sample_rate: i64,
    lower_hz: f32,
    upper_hz: f32,
) -> Result<Vec<f64>> {
    let to_mel = |hz: f64| 2595.0 * (1.0 + hz / 700.0).log10();
    let to_hz = |mel: f64| 700.0 * (10f64.powf(mel / 2595.0) - 1.0);
    let (lo, hi) = (to_mel(f64::from(lower_hz)), to_mel(f64::from(upper_hz)));
    let step = (hi - lo) / (mel_bins + 2) as f64;
    let bins: Vec<i64> = (0..mel_bins + 2)
        .map(|i| {
            let hz = to_hz(lo + i as f64 * step);
            (((dft_length + 1) as f64 * hz) / sample_rate as f64).floor() as i64
        })
        .collect();
    let rows = dft_length / 2 + 1;
    if mel_bins > 0 && bins.iter().any(|&b| b < 0 || b as usize >= rows) {
        return Err(Error::shape(format!(
            "MelWeightMatrix: the filters between {lower_hz} Hz and {upper_hz} Hz reach past the {rows} bins of a {dft_length}-point DFT at {sample_rate} Hz"
        )));
    }
    let mut out = vec![0f64; rows * mel_bins];
    let mut set = |j: i64, i: usize, v: f64| {
        if j >= 0 && (j as usize) < rows {
            out[j as usize * mel_bins + i] = v;
        }
    };
    for i in 0..mel_bins {
        let (l, c, h) = (bins[i], bins[i + 1], bins[i + 2]);
        if c == l {
            set(c, i, 1.0);
        } else {
            for j in l..=c {
                set(j, i, (j - l) as f64 / (c - l) as f64);
            }
        }
        if h > c {
            for j in c..h {
                set(j, i, (h - j) as f64 / (h - c) as f64);
            }
        }
    }
    Ok(out)
}

/// An integer scalar input.
fn int_scalar(inputs: &[Option<&Tensor>], i: usize, name: &str) -> Result<i64> {
    let t = input(inputs, i, name)?;
    match t.to_i64_vec() {
        Ok(v) if v.len() == 1 && matches!(t.dtype(), DType::I32 | DType::I64) => Ok(v[0]),
        _ => Err(Error::shape(format!(
            "MelWeightMatrix: {name} must be one int32 or int64 value, got {} {:?}",
            t.dtype(),
            t.shape()
        ))),
    }
}

impl Op for MelWeightMatrix {
    fn op_type(&self) -> &'static str {
        "MelWeightMatrix"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![("output_datatype".into(), AttrValue::Int(self.dtype.onnx_code() as i64))]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mel_bins = int_scalar(inputs, 0, "num_mel_bins")?;
        let dft = int_scalar(inputs, 1, "dft_length")?;
        let rate = int_scalar(inputs, 2, "sample_rate")?;
        let edge = |i: usize, name: &str| -> Result<f32> {
            let t = input(inputs, i, name)?;
            match (t.dtype(), t.len()) {
                (DType::F32, 1) => Ok(t.to_f32_vec()[0]),
                _ => Err(Error::shape(format!(
                    "MelWeightMatrix: {name} must be one float32 value, got {} {:?}",
                    t.dtype(),
                    t.shape()
                ))),
            }
        };
        let (lo, hi) = (edge(3, "lower_edge_hertz")?, edge(4, "upper_edge_hertz")?);
        let (Ok(mel_bins), Ok(dft)) = (usize::try_from(mel_bins), usize::try_from(dft)) else {
            return Err(Error::shape(format!(
                "MelWeightMatrix: num_mel_bins {mel_bins} and dft_length {dft} must be non-negative"
            )));
        };
        if rate <= 0 {
            return Err(Error::shape(format!(
                "MelWeightMatrix: sample_rate {rate} must be positive"
            )));
        }
        let shape = vec![dft / 2 + 1, mel_bins];
        crate::tensor::check_alloc(&shape, 8)?;
        let w = mel_weights(mel_bins, dft, rate, lo, hi)?;
        let f = Tensor::from_vec(shape, w.iter().map(|&v| v as f32).collect::<Vec<f32>>())?;
        Ok(vec![f.cast(self.dtype)])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "MelWeightMatrix";
        for (i, name) in ["num_mel_bins", "dft_length", "sample_rate"].into_iter().enumerate() {
            expect_dtype(op, required(inputs, i, op, name)?, name, &[DType::I32, DType::I64])?;
        }
        for (i, name) in [(3, "lower_edge_hertz"), (4, "upper_edge_hertz")] {
            expect_dtype(op, required(inputs, i, op, name)?, name, &[DType::F32])?;
        }
        let known = |i: usize| {
            constant(constants, i)
                .and_then(|t| t.to_i64_vec().ok())
                .and_then(|v| v.first().copied())
        };
        let dim = |v: Option<i64>| {
            v.and_then(|v| usize::try_from(v).ok())
                .map_or(DimFact::Unknown, DimFact::Known)
        };
        let rows = dim(known(1).map(|d| d.max(0) / 2 + 1));
        Ok(vec![ValueFact::new(Some(self.dtype), Some(vec![rows, dim(known(0))]))])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
