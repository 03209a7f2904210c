//! The instruction set the runtime's own kernels (attention, the decoder's
//! rows) run with: the widest the CPU has, detected once, or a narrower one
//! that `GSC_ISA=avx2|portable` asks for, so that one machine can run and
//! test every path below its best.

/// The instruction sets the kernels are compiled for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F with FMA: 16 lanes of f32.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 with FMA: 8 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Whatever the compiler makes of plain Rust for the build's target.
    Portable,
}

impl Isa {
    /// What this process's kernels use (see the module's note on `GSC_ISA`).
    pub fn get() -> Isa {
        static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = Isa::best();
            match std::env::var("GSC_ISA").as_deref() {
                Ok(name) => Isa::named(name).filter(|&i| i <= best).unwrap_or(best),
                Err(_) => best,
            }
        })
    }

    /// The widest instruction set this CPU has.
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run, best first: what tests
    /// check, whatever the machine.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|&i| i <= Isa::best()).collect()
    }

    const ALL: [Isa; Isa::COUNT] = [
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2,
        Isa::Portable,
    ];

    const COUNT: usize = if cfg!(target_arch = "x86_64") { 3 } else { 1 };

    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    fn named(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Lanes of f32 in a vector register.
    pub fn lanes(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 8,
            Isa::Portable => 4,
        }
    }
}

impl PartialOrd for Isa {
    /// Narrower is less: Portable < Avx2 < Avx512.
    fn partial_cmp(&self, other: &Isa) -> Option<std::cmp::Ordering> {
        other
            .lanes()
            .partial_cmp(&self.lanes())
            .map(std::cmp::Ordering::reverse)
    }
}
