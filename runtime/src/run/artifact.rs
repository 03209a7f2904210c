//! The compiled artifact of a `.gs` file: its plan and every stage's kernel
//! programs, keyed by a content hash of the source, the overrides and the
//! compiler version, and cached on disk so a rerun or a resume skips compiling.

use crate::fsutil::write_atomic;
use gsc_compiler::kernel::KernelProgram;
use gsc_compiler::plan::Plan;
use gsc_compiler::{compile_stage, CompileError};
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
            for s in &run.stages {
                let c = compile_stage(&s.model, &s.train, s.train.batch)
                    .map_err(|e| (format!("{}.{}", run.name, s.name), e))?;
                stages.push(StagePrograms {
                    run: run.name.clone(),
                    stage: s.name.clone(),
                    step: c.kernels,
                    forward: c.forward_kernels,
                });
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
        let bytes = std::fs::read(path).ok()?;
        let a = serde_json::from_slice::<Artifact>(&bytes).ok()?;
        (a.hash == hash).then_some(a)
    }

    /// Writes the artifact to `path` atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &serde_json::to_vec(self)?)
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
