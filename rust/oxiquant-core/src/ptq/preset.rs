//! The settings `quantize_network` uses when the caller leaves them out. `Best` is what
//! measures best across ResNet-20, MobileNetV2 and an EfficientNet-Lite-style network
//! (benches/RESULTS.md, "Default settings"); `Aidge` is the seed's own behaviour (per-tensor
//! weights, signed ranges, no clipping), one argument away.

use super::Clipping;
use crate::error::{Error, Result};

/// The "best" preset's `split_ratio` (benches/RESULTS.md, real trained models).
pub const DEFAULT_SPLIT_RATIO: f32 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Best,
    Aidge,
}

/// The settings a preset stands for; each can be overridden by an explicit argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub clipping: Clipping,
    pub per_channel: bool,
    pub optimize_signs: bool,
    pub weight_clipping: Clipping,
    /// GPTQ rounding and bias correction of the weights (`rounding`).
    pub gptq: bool,
    pub bias_correction: bool,
    /// Input-aware rounding (`input_aware`): each layer fitted to its quantized inputs.
    pub input_aware: bool,
    /// Outlier channel splitting of the values float islands hand to MatMuls
    /// (`split_channels`): the largest channel range allowed, in median channel ranges.
    pub split_ratio: Option<f32>,
}

impl Preset {
    pub const NAMES: [&'static str; 2] = ["best", "aidge"];

    pub fn parse(s: &str) -> Result<Preset> {
        match s {
            "best" => Ok(Preset::Best),
            "aidge" => Ok(Preset::Aidge),
            other => Err(Error::InvalidArgument(format!(
                "preset must be 'best' or 'aidge', got '{other}'"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Best => "best",
            Preset::Aidge => "aidge",
        }
    }

    /// The preset's settings for these bit widths.
    pub fn settings(self, act_bits: u32, weight_bits: u32) -> Settings {
        match self {
            // MSE activation clipping has the best output SQNR, or within 0.4 dB of it, wherever
            // some clipping keeps the model working; per-channel weights and unsigned ranges
            // where provable never lose (benches/RESULTS.md, "Default settings").
            // MSE weight clipping loses on ResNet-20 at 4 bits and only helps MobileNetV2 where
            // it has collapsed anyway, so weights keep their full range.
            Preset::Best => Settings {
                clipping: Clipping::Mse,
                per_channel: true,
                optimize_signs: true,
                weight_clipping: Clipping::Max,
                // Below 8 weight bits GPTQ rounding and bias correction lift MobileNetV2 at
                // W4A8 from collapse to within a few points of float, and ResNet-20 too
                // (benches/RESULTS.md, "Weight rounding passes"); at 8 bits rounding to
                // nearest is already close to float and they would only cost time.
                gptq: weight_bits < 8,
                bias_correction: weight_bits < 8,
                // Below 8 activation bits the layers' inputs in the quantized network are far
                // from the float ones GPTQ fits to: fitting to them lifts ResNet-20 W4A4 by 3
                // points (benches/RESULTS.md, "4-bit activations"); at 8 bits GPTQ is at float.
                input_aware: act_bits < 8 && weight_bits < 8,
                split_ratio: Some(DEFAULT_SPLIT_RATIO),
            },
            Preset::Aidge => Settings {
                clipping: Clipping::Max,
                per_channel: false,
                optimize_signs: false,
                weight_clipping: Clipping::Max,
                gptq: false,
                bias_correction: false,
                input_aware: false,
                split_ratio: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aidge_is_the_seed_and_names_parse() {
        let s = Preset::parse("aidge").unwrap().settings(8, 8);
        assert_eq!(
            (s.clipping, s.per_channel, s.optimize_signs, s.weight_clipping),
            (Clipping::Max, false, false, Clipping::Max)
        );
        assert!(!s.input_aware);
        // Input-aware rounding only below 8 activation and weight bits.
        let best = |a, w| Preset::Best.settings(a, w).input_aware;
        assert_eq!(
            (best(4, 4), best(8, 4), best(4, 8), best(8, 8)),
            (true, false, false, false)
        );
        for n in Preset::NAMES {
            assert_eq!(Preset::parse(n).unwrap().name(), n);
        }
        assert!(Preset::parse("fast")
            .unwrap_err()
            .to_string()
            .contains("'best' or 'aidge'"));
    }
}
