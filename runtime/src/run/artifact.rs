//! The compiled artifact of a `.gs` file: its plan and every stage's kernel
//! programs, keyed by a content hash of the source, the overrides and the
//! compiler version, and cached on disk so a rerun or a resume skips compiling.

use crate::fsutil::write_atomic;
use gsc_compiler::graph::Gates;
use gsc_compiler::kernel::KernelProgram;
use gsc_compiler::plan::{ModelConfig, Plan, Precision, StagePlan, TrainConfig};
use gsc_compiler::{compile_stage, compile_stage_gated, CompileError};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StagePrograms {
    pub run: String,
    pub stage: String,
    /// One training step: forward, backward, clipping, AdamW.
    pub step: KernelProgram,
    /// The forward pass alone: evaluation.
    pub forward: KernelProgram,
    /// PTX of the loop kernels of both programs, for the GPU architectures
    /// it was made for (`gsc compile --target cuda --emit=artifact`), so
    /// that a GPU run needs no LLVM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ptx: Vec<PtxProgram>,
    /// For a stage entered by growth: the forward passes that check it
    /// kept the function (see [`GrowthCheck`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_check: Option<GrowthCheck>,
}

/// The previous stage's model and the grown one, both at the previous
/// context, on one batch of [`GrowthCheck::batch`] sequences: compiled with
/// the stage, so that a device without a compiler (a GPU running PTX made
/// elsewhere) can check growth too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthCheck {
    pub before: KernelProgram,
    pub after: KernelProgram,
}

impl GrowthCheck {
    /// Sequences in the checking batch of a stage training `batch`.
    pub fn batch(batch: usize) -> usize {
        batch.min(4)
    }

    /// The check of growing `prev` into `stage`; `None` when the stage
    /// does not grow (its model is the previous one).
    pub fn compile(prev: &ModelConfig, stage: &StagePlan) -> Result<Option<Self>, CompileError> {
        if *prev == stage.model {
            return Ok(None);
        }
        let batch = Self::batch(stage.train.batch);
        let mut grown = stage.model.clone();
        grown.context = prev.context;
        // The grown model carries the stage's gates, checked at 0 for the
        // new units (where a ramp starts).
        let gates = Gates::of(stage);
        // The growth maps preserve the function exactly in real numbers:
        // checked in f32, the tolerance measures them, not bf16's rounding.
        let train = TrainConfig {
            precision: Precision::F32,
            ..stage.train.clone()
        };
        Ok(Some(GrowthCheck {
            before: compile_stage(prev, &train, batch)?.forward_kernels,
            after: compile_stage_gated(&grown, &train, batch, gates)?.forward_kernels,
        }))
    }
}

/// One program's loop kernels as PTX for one GPU architecture. A backend
/// uses it only for the program whose hash it carries, so PTX never runs
/// against kernels it was not made from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PtxProgram {
    /// `step` or `forward`.
    pub program: String,
    /// [`program_hash`] of the kernel program it was lowered from.
    pub program_hash: String,
    /// `sm_80`, `sm_90`, …
    pub chip: String,
    /// The LLVM that lowered it.
    pub llvm: String,
    pub ptx: String,
    /// How to launch each loop kernel.
    pub entries: Vec<gsc_compiler::kernel::Entry>,
}

impl PtxProgram {
    /// Lowers `program` (named `name`: `step`, `forward`, …) to PTX.
    #[cfg(feature = "mlir")]
    pub fn compile(
        program: &KernelProgram,
        name: &str,
        options: &gsc_mlir::CudaOptions,
    ) -> Result<PtxProgram, gsc_mlir::MlirError> {
        let m = gsc_mlir::compile_ptx(program, options)?;
        Ok(PtxProgram {
            program: name.to_string(),
            program_hash: program_hash(program),
            chip: options.chip.clone(),
            llvm: gsc_mlir::LLVM_VERSION.to_string(),
            ptx: m.ptx,
            entries: m.entries,
        })
    }
}

/// The key of a kernel program's generated code: FNV-1a of its JSON.
pub fn program_hash(p: &KernelProgram) -> String {
    let json = serde_json::to_vec(p).unwrap_or_default();
    gsc_compiler::fnv::hash_parts([json.as_slice()])
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub hash: String,
    pub compiler_version: String,
    pub plan: Plan,
    pub stages: Vec<StagePrograms>,
}

pub const COMPILER_VERSION: &str = gsc_compiler::VERSION;

/// A run directory's own copy of the artifact it was started with: a resumed
/// run executes exactly these kernels, whatever compiler resumes it.
pub const RUN_ARTIFACT: &str = "artifact.json";

/// The artifact key of these parts (FNV-1a: stable across builds and machines).
pub fn content_hash(parts: &[&str]) -> String {
    gsc_compiler::fnv::hash_parts(parts.iter().map(|p| p.as_bytes()))
}

impl Artifact {
    pub fn compile(plan: &Plan, hash: &str) -> Result<Artifact, (String, CompileError)> {
        let mut stages = Vec::new();
        for run in &plan.runs {
            let mut prev: Option<&ModelConfig> = None;
            for s in &run.stages {
                let at = |e| (format!("{}.{}", run.name, s.name), e);
                let c = compile_stage_gated(&s.model, &s.train, s.train.batch, Gates::of(s))
                    .map_err(at)?;
                let growth_check = match prev {
                    Some(p) => GrowthCheck::compile(p, s).map_err(at)?,
                    None => None,
                };
                stages.push(StagePrograms {
                    run: run.name.clone(),
                    stage: s.name.clone(),
                    step: c.kernels,
                    forward: c.forward_kernels,
                    ptx: vec![],
                    growth_check,
                });
                prev = Some(&s.model);
            }
        }
        Ok(Artifact {
            hash: hash.to_string(),
            compiler_version: COMPILER_VERSION.to_string(),
            plan: plan.clone(),
            stages,
        })
    }

    /// The cached artifact `cache/<hash>.json` if it is there and readable,
    /// else a freshly compiled one, written to the cache.
    pub fn load_or_compile(
        cache: &Path,
        plan: &Plan,
        hash: &str,
    ) -> Result<(Artifact, bool), (String, CompileError)> {
        let path = cache.join(format!("{hash}.json"));
        if let Some(a) = Artifact::load(&path, hash).filter(|a| a.plan == *plan) {
            return Ok((a, true));
        }
        let a = Artifact::compile(plan, hash)?;
        if std::fs::create_dir_all(cache).is_ok() {
            let _ = a.save(&path);
        }
        Ok((a, false))
    }

    /// The artifact in `path`, if it is there, readable, and the one with
    /// this hash.
    pub fn load(path: &Path, hash: &str) -> Option<Artifact> {
        Artifact::read(path).ok().filter(|a| a.hash == hash)
    }

    /// The artifact in `path`, or why it cannot be read.
    pub fn read(path: &Path) -> Result<Artifact, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("`{}` is not a gsc artifact: {e}", path.display()))
    }

    /// Writes the artifact to `path` atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &serde_json::to_vec(self)?)
    }

    /// Lowers every stage's programs to PTX for each of `chips` (keeping
    /// PTX already there for the same program, chip and LLVM).
    #[cfg(feature = "mlir")]
    pub fn add_ptx(&mut self, chips: &[String]) -> Result<(), String> {
        let options = chips
            .iter()
            .map(|chip| gsc_mlir::CudaOptions::for_chip(chip).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        for st in &mut self.stages {
            for (chip, options) in chips.iter().zip(&options) {
                let mut programs = vec![("step", &st.step), ("forward", &st.forward)];
                if let Some(g) = &st.growth_check {
                    programs.extend([("growth_before", &g.before), ("growth_after", &g.after)]);
                }
                for (name, p) in programs {
                    let hash = program_hash(p);
                    let have = st.ptx.iter().any(|x| {
                        x.program_hash == hash
                            && x.chip == *chip
                            && x.llvm == gsc_mlir::LLVM_VERSION
                    });
                    if have {
                        continue;
                    }
                    let ptx = PtxProgram::compile(p, name, options).map_err(|e| {
                        format!("stage `{}.{}` ({name}) for {chip}: {e}", st.run, st.stage)
                    })?;
                    st.ptx.push(ptx);
                }
            }
        }
        Ok(())
    }

    pub fn stage(&self, run: &str, stage: &str) -> Option<&StagePrograms> {
        self.stages
            .iter()
            .find(|s| s.run == run && s.stage == stage)
    }
}

#[cfg(test)]
mod tests {
    use crate::workloads::{train_config, workload};
    use gsc_compiler::kernel::KernelProgram;
    use gsc_compiler::plan::Arch;

    /// A resumed run JIT-compiles the cached JSON, an uninterrupted one the
    /// programs in memory: they must be the same programs, constants to the
    /// last bit, or the two runs drift apart.
    #[test]
    fn programs_round_trip_through_json_exactly() {
        for arch in [Arch::Gpt, Arch::Ngpt] {
            let model = workload("S", arch).unwrap();
            let stage = gsc_compiler::compile_stage(&model, &train_config(), 2).unwrap();
            for p in [&stage.kernels, &stage.forward_kernels] {
                let json = serde_json::to_vec(p).unwrap();
                let back: KernelProgram = serde_json::from_slice(&json).unwrap();
                assert!(back == *p, "{arch:?}: the program changed through JSON");
            }
        }
    }
}
