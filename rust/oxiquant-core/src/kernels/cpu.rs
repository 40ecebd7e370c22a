//! The CPU-feature table every kernel family reads, chosen once per process.
//!
//! `features()` is what the fast kernels may use (the integer products and element-wise
//! integer ops through `kernel()`, the float direct and Winograd convolutions, the
//! requantization rows, the calibration statistics): the CPU's features, capped by
//! `OXIQUANT_KERNEL` when it names a level this CPU runs ("reference", "avx2", "avxvnni",
//! "avx512vnni"). Capping is consistent across families: "reference" leaves every family
//! its plain Rust code, "avx2" and "avxvnni" allow no AVX-512 anywhere, "avx512vnni" (or no
//! override) allows everything the CPU has. `hardware()` is the uncapped table, for the
//! tests that compare every kernel the CPU runs.

use std::sync::OnceLock;

/// The CPU features the kernels use. All false off x86-64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    /// AVX-VNNI (the VEX form of `vpdpbusd`).
    pub avxvnni: bool,
    /// AVX-512 VNNI together with AVX-512 VL (the 256-bit EVEX form the kernels use).
    pub avx512vnni: bool,
}

impl CpuFeatures {
    /// What this CPU has (detected once).
    pub fn hardware() -> CpuFeatures {
        static HW: OnceLock<CpuFeatures> = OnceLock::new();
        *HW.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                CpuFeatures {
                    avx2: std::is_x86_feature_detected!("avx2"),
                    fma: std::is_x86_feature_detected!("fma"),
                    avx512f: std::is_x86_feature_detected!("avx512f"),
                    avxvnni: std::is_x86_feature_detected!("avxvnni"),
                    avx512vnni: std::is_x86_feature_detected!("avx512vnni")
                        && std::is_x86_feature_detected!("avx512vl"),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            CpuFeatures::default()
        })
    }

    /// These features with everything above the level `k` removed.
    pub fn capped_at(self, k: Kernel) -> CpuFeatures {
        match k {
            Kernel::Reference => CpuFeatures::default(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => CpuFeatures {
                avx2: self.avx2,
                fma: self.fma,
                ..CpuFeatures::default()
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => CpuFeatures {
                avx2: self.avx2,
                fma: self.fma,
                avxvnni: self.avxvnni,
                ..CpuFeatures::default()
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => self,
        }
    }
}

/// The level of the kernels: the integer engine's kernel family, and the cap that
/// `OXIQUANT_KERNEL` puts on every family.
///
/// The VNNI kinds are AVX2 plus a 256-bit `vpdpbusd` (four u8 x i8 products summed into an
/// i32 lane, no intermediate rounding or saturation): the byte-product convolution
/// (`qconv_u8s8`) uses it and is then exact on every input; everything else runs its AVX2
/// kernel. `AvxVnni` is the VEX encoding (Alder Lake, Sapphire Rapids, Zen 5),
/// `Avx512Vnni` the EVEX one with AVX-512 VL (Cascade Lake, Ice Lake, Zen 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Reference,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    /// The kernel chosen for this process (`kernel()`): the best of this CPU, or the one
    /// `OXIQUANT_KERNEL` names when this CPU runs it (a developer aid for comparing them on
    /// whole networks).
    pub fn detect() -> Kernel {
        kernel()
    }

    /// Every kernel this CPU can run, the best last (the tests compare them).
    pub fn available() -> Vec<Kernel> {
        Kernel::available_on(CpuFeatures::hardware())
    }

    /// Every kernel a CPU with features `f` can run, the best last.
    pub fn available_on(f: CpuFeatures) -> Vec<Kernel> {
        let mut v = vec![Kernel::Reference];
        #[cfg(target_arch = "x86_64")]
        if f.avx2 {
            v.push(Kernel::Avx2);
            if f.avxvnni {
                v.push(Kernel::AvxVnni);
            }
            if f.avx512vnni {
                v.push(Kernel::Avx512Vnni);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = f;
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Reference => "reference",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => "avxvnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether byte products are summed exactly in i32 (`vpdpbusd`), whatever the values.
    pub fn has_byte_dot(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Kernel::AvxVnni | Kernel::Avx512Vnni) {
            return true;
        }
        false
    }

    /// Whether this is a SIMD kernel (the direct convolution picks its own tile with it).
    pub fn is_simd(self) -> bool {
        self != Kernel::Reference
    }
}

/// The kernel level and the capped features for a CPU with features `hw` and the value of
/// `OXIQUANT_KERNEL`, if set; `Err` carries the same choice and the message for a name this
/// CPU does not run (the best level then, uncapped).
fn choose(hw: CpuFeatures, name: Option<&str>) -> Result<(Kernel, CpuFeatures), ((Kernel, CpuFeatures), String)> {
    let available = Kernel::available_on(hw);
    let best = available.last().copied().unwrap_or(Kernel::Reference);
    let Some(name) = name else {
        return Ok((best, hw));
    };
    match available.iter().copied().find(|k| k.name() == name) {
        Some(k) => Ok((k, hw.capped_at(k))),
        None => {
            let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
            let msg = format!(
                "oxiquant: OXIQUANT_KERNEL={name} is not a kernel this CPU runs ({}); using {}",
                names.join(", "),
                best.name()
            );
            Err(((best, hw), msg))
        }
    }
}

/// The choice of this process, read once.
fn chosen() -> (Kernel, CpuFeatures) {
    static CHOSEN: OnceLock<(Kernel, CpuFeatures)> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let name = std::env::var("OXIQUANT_KERNEL").ok();
        choose(CpuFeatures::hardware(), name.as_deref()).unwrap_or_else(|(choice, msg)| {
            eprintln!("{msg}");
            choice
        })
    })
}

/// The kernel level every family runs at (see the module's comment).
pub fn kernel() -> Kernel {
    chosen().0
}

/// The features the fast kernels may use: the CPU's, capped by `OXIQUANT_KERNEL`.
pub fn features() -> CpuFeatures {
    chosen().1
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::kernels::conv_direct::Simd;

    const ALL: CpuFeatures = CpuFeatures {
        avx2: true,
        fma: true,
        avx512f: true,
        avxvnni: true,
        avx512vnni: true,
    };

    /// Each level `OXIQUANT_KERNEL` names caps every family's choice: the integer kernels
    /// (the level itself), the float direct and Winograd convolutions (`Simd`), the
    /// requantization rows (`avx2`) and the calibration statistics (`avx2`, `avx512f`).
    #[test]
    fn the_override_caps_every_family() {
        let cases = [
            (Kernel::Reference, Simd::None, false, false),
            (Kernel::Avx2, Simd::Avx2, true, false),
            (Kernel::AvxVnni, Simd::Avx2, true, false),
            (Kernel::Avx512Vnni, Simd::Avx512, true, true),
        ];
        for (level, simd, avx2, avx512) in cases {
            let (k, f) = choose(ALL, Some(level.name())).unwrap();
            assert_eq!(k, level);
            assert_eq!(
                Kernel::available_on(f).last(),
                Some(&level),
                "integer kernels under {k:?}"
            );
            assert_eq!(Simd::best_on(f), simd, "float convolutions under {k:?}");
            assert_eq!(
                (f.avx2, f.avx512f),
                (avx2, avx512),
                "requantization and calibration under {k:?}"
            );
        }
    }

    /// No override: the CPU's best level and every feature it has; a name the CPU does not
    /// run: the same, with a message.
    #[test]
    fn without_a_valid_override_the_cpu_decides() {
        assert_eq!(choose(ALL, None), Ok((Kernel::Avx512Vnni, ALL)));
        let avx2_only = CpuFeatures {
            avx2: true,
            fma: true,
            avx512f: true,
            ..CpuFeatures::default()
        };
        // The float kernels keep AVX-512 F on a CPU whose best integer level is AVX2.
        assert_eq!(choose(avx2_only, None), Ok((Kernel::Avx2, avx2_only)));
        assert_eq!(Simd::best_on(avx2_only), Simd::Avx512);
        let Err((choice, msg)) = choose(avx2_only, Some("avx512vnni")) else {
            panic!("avx512vnni accepted on a CPU without it");
        };
        assert_eq!(choice, (Kernel::Avx2, avx2_only));
        assert!(msg.contains("is not a kernel this CPU runs"), "{msg}");
        // The chosen features never exceed the hardware's.
        let f = features();
        let hw = CpuFeatures::hardware();
        for (chosen, has) in [
            (f.avx2, hw.avx2),
            (f.fma, hw.fma),
            (f.avx512f, hw.avx512f),
            (f.avxvnni, hw.avxvnni),
        ] {
            assert!(has || !chosen, "{f:?} exceeds {hw:?}");
        }
    }
}
