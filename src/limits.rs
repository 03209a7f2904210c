//! Limits before work: the memory every stage of a run will hold and the
//! checkpoints it will keep on disk, against what this machine has, so that
//! a plan too big is refused before it trains, with the numbers, and not by
//! the OOM killer or a full disk halfway through.
//!
//! The memory of a stage mirrors what the training loop
//! (`gsc_runtime::run::train`) holds while it runs: the step and forward
//! programs' buffers as `ProgramBuffers` allocates them, the f64 copies of
//! the state it keeps beside them, the corpus's token ids (which every
//! stage shares); and,
//! entering a stage by growth, the old and the grown state and the
//! growth-check programs.

use crate::run::{BackendKind, RunArgs};
use gsc_compiler::kernel::{DType, KernelProgram, Storage};
use gsc_compiler::plan::{DataPlan, ModelConfig, Plan, RunPlan, StagePlan};
use gsc_runtime::machine::available_memory_bytes;
use gsc_runtime::run::artifact::Artifact;
use gsc_runtime::run::dir::Metrics;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Read in place of (when smaller than) the machine's available memory:
/// for tests, and for a stricter limit than the machine's.
pub const MEMORY_VAR: &str = "GSC_MEMORY_AVAILABLE";
/// Likewise for the free space of the run directory's file system.
pub const DISK_VAR: &str = "GSC_DISK_AVAILABLE";

/// The process before any stage: the binary, its libraries and allocator.
const BASE_BYTES: u64 = 16 << 20;
/// The artifact held in memory, per byte of its JSON (its kernel trees are
/// boxed nodes, larger than their text).
const ARTIFACT_FACTOR: u64 = 3;
/// Each thread's matrix-product packing buffers (4 MiB of B, 144 KiB of A)
/// and the `gemm` crate's own.
const THREAD_BYTES: u64 = 8 << 20;
/// `run.json`, `metrics.jsonl` (a few hundred bytes per logged step).
const RECORDS_BYTES: u64 = 16 << 20;
/// A checkpoint's JSON metadata (the model, the progress), at most.
const CHECKPOINT_METADATA: u64 = 8 << 10;

/// What one phase of a run holds in memory, in bytes, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub params: u64,
    pub grads: u64,
    /// Adam's first and second moments.
    pub moments: u64,
    /// The arena of intermediate values, logits, tokens and targets.
    pub activations: u64,
    /// The training loop's host copies of the state (f64 parameters and
    /// moments; f32 copies while a checkpoint is written).
    pub state: u64,
    /// The corpus's token ids, which the stages' datasets share.
    pub data: u64,
    /// The process itself, the artifact, compiled code, threads' scratch.
    pub runtime: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.params
            + self.grads
            + self.moments
            + self.activations
            + self.state
            + self.data
            + self.runtime
    }

    fn plus(self, o: Memory) -> Memory {
        Memory {
            params: self.params + o.params,
            grads: self.grads + o.grads,
            moments: self.moments + o.moments,
            activations: self.activations + o.activations,
            state: self.state + o.state,
            data: self.data + o.data,
            runtime: self.runtime + o.runtime,
        }
    }

    /// The larger of two phases, by total.
    fn max(self, o: Memory) -> Memory {
        if o.total() > self.total() {
            o
        } else {
            self
        }
    }

    /// `parameters 1.1 GiB, Adam moments 2.2 GiB, …`, the kinds that hold any.
    fn parts(&self) -> String {
        [
            ("parameters", self.params),
            ("gradients", self.grads),
            ("Adam moments", self.moments),
            ("activations", self.activations),
            ("copies of the state", self.state),
            ("data", self.data),
            ("runtime", self.runtime),
        ]
        .iter()
        .filter(|(_, b)| *b > 0)
        .map(|(name, b)| format!("{name} {}", Bytes(*b)))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// The buffers a CPU backend allocates for `program`, as
/// `ProgramBuffers::build` does: one vector per distinct non-arena storage
/// (a parameter read and written is one), and the arena; with
/// `shares_params`, the parameters are another program's.
pub fn program_memory(program: &KernelProgram, shares_params: bool) -> Memory {
    let mut m = Memory {
        activations: program.arena_len as u64 * DType::F32.bytes() as u64,
        ..Memory::default()
    };
    let mut seen = HashSet::new();
    for b in &program.buffers {
        if matches!(b.storage, Storage::Arena { .. }) || !seen.insert((b.storage, b.dtype)) {
            continue;
        }
        let bytes = (b.len * b.dtype.bytes()) as u64;
        match b.storage {
            Storage::Param(_) if shares_params => {}
            Storage::Param(_) => m.params += bytes,
            Storage::Grad(_) => m.grads += bytes,
            Storage::AdamM(_) | Storage::AdamV(_) => m.moments += bytes,
            _ => m.activations += bytes,
        }
    }
    m
}

/// The peak of one stage: training it, and entering it by growth.
#[derive(Clone, Debug, PartialEq)]
pub struct StageNeed {
    pub run: String,
    pub stage: String,
    pub memory: Memory,
}

/// Bytes of the corpus's token ids, at most: 4 bytes each, and at most one
/// token per byte (exactly one for the byte tokenizer; a BPE's tokens hold
/// a byte or more). The text itself is dropped once it is tokenised.
fn token_bytes(data: &DataPlan) -> u64 {
    4 * data.files.iter().map(|f| f.bytes).sum::<u64>()
}

/// Bytes of a host copy of the state: parameters and both moments, f64.
fn state_bytes(model: &ModelConfig) -> u64 {
    3 * 8 * model.param_count() as u64
}

/// Training `stage`, beside its programs: the f64 state the loop keeps,
/// and at a checkpoint (periodic, or on an interrupt: at any step) a
/// second f64 copy read back and its f32 copy being written; the corpus's
/// tokens.
fn training_memory(stage: &StagePlan, tokens: u64) -> Memory {
    let state = state_bytes(&stage.model);
    Memory {
        state: 2 * state + state / 2,
        data: tokens,
        ..Memory::default()
    }
}

/// Entering `stage` by growth from `prev`: the old state and a copy of it
/// grown step by step (two sizes at once), then the check's two forward
/// programs (`check`) on one batch; the corpus's tokens all along.
fn growth_memory(prev: &ModelConfig, stage: &StagePlan, check: Memory, tokens: u64) -> Memory {
    let (old, new) = (state_bytes(prev), state_bytes(&stage.model));
    let growing = Memory {
        state: old + (old + new).max(2 * new),
        data: tokens,
        ..Memory::default()
    };
    let checking = check.plus(Memory {
        state: old + new,
        data: tokens,
        ..Memory::default()
    });
    growing.max(checking)
}

/// The peak of every stage of `run`: its programs (counted only where
/// their buffers are in this process, `host`) and `runtime`, with the
/// larger of what training it and growing into it hold besides. The
/// growth's memory is freed before the stage's programs load, but the
/// allocator keeps most of it for reuse, so it is counted with them.
fn run_memory(
    run: &RunPlan,
    artifact: &Artifact,
    host: bool,
    tokens: u64,
    runtime: u64,
) -> Result<Vec<StageNeed>, String> {
    let on_host = |m: Memory| if host { m } else { Memory::default() };
    let mut out = vec![];
    let mut prev: Option<&ModelConfig> = None;
    for stage in &run.stages {
        let programs = artifact
            .stage(&run.name, &stage.name)
            .ok_or_else(|| format!("the artifact has no stage `{}.{}`", run.name, stage.name))?;
        let loaded = on_host(
            program_memory(&programs.step, false).plus(program_memory(&programs.forward, true)),
        );
        let mut besides = training_memory(stage, tokens);
        if let Some(p) = prev.filter(|p| **p != stage.model) {
            let check = programs
                .growth_check
                .as_ref()
                .map_or(Memory::default(), |c| {
                    program_memory(&c.before, false).plus(program_memory(&c.after, false))
                });
            besides = besides.max(growth_memory(p, stage, on_host(check), tokens));
        }
        let memory = loaded.plus(besides).plus(Memory {
            runtime,
            ..Memory::default()
        });
        out.push(StageNeed {
            run: run.name.clone(),
            stage: stage.name.clone(),
            memory,
        });
        prev = Some(&stage.model);
    }
    Ok(out)
}

/// The bytes of a checkpoint of `model`, at most: parameters and both
/// moments in f32, and the safetensors header (an entry and a checksum per
/// tensor, the metadata).
pub fn checkpoint_bytes(model: &ModelConfig) -> u64 {
    let specs = model.params();
    let entries: u64 = specs
        .iter()
        .map(|s| 3 * (2 * s.name.len() as u64 + 128))
        .sum();
    8 + entries + CHECKPOINT_METADATA + 3 * 4 * model.param_count() as u64
}

/// The checkpoints `run` keeps: `keep` periodic ones and one being written,
/// each at most the largest stage's, and for every growth the states just
/// before and after it (the one before is a second name of a periodic
/// checkpoint, which holds its space once pruning removes the first).
pub fn run_disk(run: &RunPlan, keep: usize) -> u64 {
    let sizes: Vec<u64> = run
        .stages
        .iter()
        .map(|s| checkpoint_bytes(&s.model))
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let growths: u64 = (1..run.stages.len())
        .filter(|&i| run.stages[i].model != run.stages[i - 1].model)
        .map(|i| sizes[i - 1] + sizes[i])
        .sum();
    (keep.max(1) as u64 + 1) * largest + growths
}

/// Bytes of the files under `dir` (each file once, however many names it has).
fn existing_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut seen = HashSet::new();
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file() && seen.insert(file_id(m)))
        .map(|m| m.len())
        .sum()
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.len(), 0)
}

/// Free bytes for an unprivileged writer on the file system that holds
/// `path` (or, not made yet, its nearest existing ancestor).
#[cfg(unix)]
fn free_disk_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .ancestors()
        .find(|p| p.exists())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_disk_bytes(_: &Path) -> Option<u64> {
    None
}

/// A size such as `100MiB`, `1.5 GiB`, `2G` or `4096` (bytes).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    Some((number * (1u64 << shift) as f64) as u64)
}

/// The machine's figure, or the variable's where it is set and smaller.
fn limited(var: &str, machine: Option<u64>) -> Result<Option<u64>, String> {
    let Ok(text) = std::env::var(var) else {
        return Ok(machine);
    };
    let given = parse_bytes(&text)
        .ok_or_else(|| format!("{var}={text} is not a size (e.g. 512MiB, 2GiB, 1000000)"))?;
    Ok(Some(machine.map_or(given, |m| m.min(given))))
}

/// A byte count as people read it: `120 MiB`, `22.4 GiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < units.len() {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 || v >= 100.0 {
            write!(f, "{v:.0} {}", units[unit])
        } else {
            write!(f, "{v:.1} {}", units[unit])
        }
    }
}

/// What a run will need and what the machine has.
#[derive(Clone, Debug)]
pub struct LimitsReport {
    /// The stage that needs the most memory (none without runs to train).
    pub peak: Option<StageNeed>,
    /// `None`: not known on this system, or not estimated for this backend.
    pub memory_available: Option<u64>,
    /// Why memory is not checked, if it is not.
    pub memory_note: Option<String>,
    pub disk: u64,
    pub disk_available: Option<u64>,
}

impl LimitsReport {
    /// The refusal, if the run does not fit.
    fn refusal(&self, what: &str) -> Option<String> {
        let advice = "or pass --no-limits to try anyway";
        if let (Some(peak), Some(avail)) = (&self.peak, self.memory_available) {
            if peak.memory.total() > avail {
                return Some(format!(
                    "stage `{}` of run `{}` needs {} of memory ({}) and this machine has {} \
                     available: lower train.batch or the model size, {advice}",
                    peak.stage,
                    peak.run,
                    Bytes(peak.memory.total()),
                    peak.memory.parts(),
                    Bytes(avail)
                ));
            }
        }
        match self.disk_available {
            Some(free) if self.disk > free => Some(format!(
                "the checkpoints of {what} need {} on disk and {} is free there: free some \
                 space, lower --keep-checkpoints, pass --runs-dir on another disk, {advice}",
                Bytes(self.disk),
                Bytes(free)
            )),
            _ => None,
        }
    }
}

impl fmt::Display for LimitsReport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (&self.peak, self.memory_available, &self.memory_note) {
            (_, _, Some(note)) => write!(f, "memory: {note}")?,
            (Some(p), avail, None) => {
                write!(f, "memory: peak {}", Bytes(p.memory.total()))?;
                if let Some(a) = avail {
                    write!(f, " of {} available", Bytes(a))?;
                }
                write!(f, " (stage `{}` of run `{}`)", p.stage, p.run)?;
            }
            (None, _, None) => write!(f, "memory: nothing left to train")?,
        }
        write!(f, "; checkpoints: {} on disk", Bytes(self.disk))?;
        match self.disk_available {
            Some(free) => write!(f, ", {} free", Bytes(free)),
            None => write!(f, ", free space unknown on this system"),
        }
    }
}

/// Where and what a run will train: its runs directory or, resumed, its
/// own directory, and the runs that are still to train there.
pub struct Target<'a> {
    pub dir: &'a Path,
    pub resuming: bool,
    pub only: Option<&'a str>,
    pub keep_checkpoints: usize,
    pub backend: BackendKind,
}

/// The memory and disk the runs of `plan` that `target` trains will need,
/// against what this machine has.
pub fn estimate(plan: &Plan, artifact: &Artifact, target: &Target) -> Result<LimitsReport, String> {
    let finished = if target.resuming {
        finished_runs(target.dir)
    } else {
        HashSet::new()
    };
    let runs: Vec<&RunPlan> = plan
        .runs
        .iter()
        .filter(|r| target.only.is_none_or(|o| o == r.name) && !finished.contains(&r.name))
        .collect();
    let tokens = token_bytes(&plan.data);
    let artifact_json = json_bytes(artifact);
    let host = matches!(target.backend, BackendKind::Cpu | BackendKind::Mlir);
    let runtime = BASE_BYTES + ARTIFACT_FACTOR * artifact_json + threads() * THREAD_BYTES;
    let mut peak: Option<StageNeed> = None;
    for run in &runs {
        for need in run_memory(run, artifact, host, tokens, runtime)? {
            if peak
                .as_ref()
                .is_none_or(|p| need.memory.total() > p.memory.total())
            {
                peak = Some(need);
            }
        }
    }
    let memory_note = match (host, available_memory_bytes().is_some()) {
        (false, _) => Some(format!(
            "not estimated for the {} backend",
            target.backend.name()
        )),
        (true, false) if std::env::var_os(MEMORY_VAR).is_none() => {
            Some("not checked on this system (no /proc/meminfo)".into())
        }
        _ => None,
    };
    let memory_available = match memory_note {
        Some(_) => None,
        None => limited(MEMORY_VAR, available_memory_bytes())?,
    };
    Ok(LimitsReport {
        peak,
        memory_available,
        memory_note,
        disk: disk_need(&runs, target, artifact_json),
        disk_available: limited(DISK_VAR, free_disk_bytes(target.dir))?,
    })
}

/// The disk the checkpoints of `runs` still need: a resumed run's files
/// already there are already spent.
fn disk_need(runs: &[&RunPlan], target: &Target, artifact_json: u64) -> u64 {
    let checkpoints: u64 = runs
        .iter()
        .map(|r| {
            let need = run_disk(r, target.keep_checkpoints);
            if target.resuming {
                let dir = target.dir.join("checkpoints").join(&r.name);
                need.saturating_sub(existing_bytes(&dir))
            } else {
                need
            }
        })
        .sum();
    // A new run directory keeps its own copy of the artifact.
    let copy = if target.resuming { 0 } else { artifact_json };
    checkpoints + copy + RECORDS_BYTES
}

/// The runs a resumed directory has finished (their `run_end` is logged).
fn finished_runs(dir: &Path) -> HashSet<String> {
    Metrics::records(&dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .iter()
        .filter(|r| r["kind"] == "run_end")
        .filter_map(|r| r["run"].as_str().map(str::to_string))
        .collect()
}

/// Threads a training step runs on (rayon's pool).
fn threads() -> u64 {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
}

/// The size of the artifact's JSON, counted without keeping it.
fn json_bytes(artifact: &Artifact) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, artifact);
    c.0
}

/// `gsc run`'s check, before any run directory is made or a step trained:
/// prints what the run will need, and refuses one that will not fit unless
/// `--no-limits` is given. `resumed` is the directory of a resumed run.
pub fn enforce(
    args: &RunArgs,
    plan: &Plan,
    artifact: &Artifact,
    resumed: Option<&PathBuf>,
) -> Result<(), String> {
    let target = Target {
        dir: resumed.unwrap_or(&args.runs_dir),
        resuming: resumed.is_some(),
        only: args.only.as_deref(),
        keep_checkpoints: args.keep_checkpoints.unwrap_or(3),
        backend: args.backend,
    };
    let report = estimate(plan, artifact, &target)?;
    println!("{report}");
    let what = args
        .only
        .as_deref()
        .map_or("the runs".into(), |o| format!("run `{o}`"));
    match report.refusal(&what) {
        Some(refusal) if !args.no_limits => Err(refusal),
        Some(refusal) => {
            eprintln!("warning: {refusal} (running anyway: --no-limits)");
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsc_compiler::kernel::BufId;
    use gsc_runtime::buffers::{ProgramBuffers, Slot};
    use gsc_runtime::checkpoint::{save, TensorRef};

    fn smoke() -> (Plan, Artifact) {
        let path = Path::new("examples/smoke.gs");
        let source = std::fs::read_to_string(path).unwrap();
        let plan = gsc_compiler::check_source("smoke.gs", &source, Path::new("examples"), &[])
            .plan
            .expect("the smoke example checks");
        let artifact = Artifact::compile(&plan, "test").unwrap();
        (plan, artifact)
    }

    /// What `ProgramBuffers` holds for `program`: every distinct buffer
    /// (buffers of one storage share one) and the arena, in bytes.
    fn allocated(program: &KernelProgram) -> u64 {
        let bufs = ProgramBuffers::new(program).unwrap();
        let mut seen = vec![];
        let mut bytes = bufs.arena().len() as u64 * 4;
        for id in (0..bufs.len()).map(BufId) {
            let slot = bufs.slot(id).unwrap();
            if seen.contains(&slot) || matches!(slot, Slot::Arena { .. }) {
                continue;
            }
            seen.push(slot);
            let len = match bufs.i32(id) {
                Some(ints) => ints.len(),
                None => bufs.f32(id).unwrap().len(),
            };
            bytes += 4 * len as u64;
        }
        bytes
    }

    #[test]
    fn program_memory_is_what_the_buffers_allocate() {
        let (_, artifact) = smoke();
        for stage in &artifact.stages {
            let step = program_memory(&stage.step, false);
            assert_eq!(step.total(), allocated(&stage.step), "{}", stage.stage);
            let params: u64 = stage
                .step
                .buffers
                .iter()
                .filter(|b| matches!(b.storage, Storage::Param(_)))
                .map(|b| (b.storage, b.len))
                .collect::<HashSet<_>>()
                .iter()
                .map(|(_, len)| 4 * *len as u64)
                .sum();
            assert_eq!(step.params, params);
            assert_eq!(step.grads, params, "a gradient per parameter");
            assert_eq!(step.moments, 2 * params, "two moments per parameter");
            // Evaluation reads the step's parameters: it holds none of its own.
            let forward = program_memory(&stage.forward, true);
            assert_eq!(forward.params, 0);
            assert_eq!(
                forward.total(),
                allocated(&stage.forward) - program_memory(&stage.forward, false).params
            );
        }
    }

    #[test]
    fn a_checkpoint_is_no_larger_than_its_estimate() {
        let (plan, _) = smoke();
        let dir = std::env::temp_dir().join(format!("gsc-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for stage in &plan.runs[0].stages {
            let specs = stage.model.params();
            let data: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.5; s.numel()]).collect();
            let named: Vec<(String, usize)> = (0..specs.len())
                .flat_map(|i| {
                    let n = &specs[i].name;
                    [n.clone(), format!("adam_m.{n}"), format!("adam_v.{n}")].map(|n| (n, i))
                })
                .collect();
            let tensors: Vec<TensorRef> = named
                .iter()
                .map(|(name, i)| TensorRef {
                    name,
                    shape: &specs[*i].shape,
                    data: &data[*i],
                })
                .collect();
            let meta = serde_json::json!({ "run": "tiny", "stage": stage.name, "stage_index": 1,
                "step": 123_456_789, "model": stage.model,
                "progress": { "tokens": 1e12, "flops": 1e18, "seconds": 1e6 } });
            let path = dir.join("c.safetensors");
            save(&path, &tensors, &meta).unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            let estimate = checkpoint_bytes(&stage.model);
            assert!(
                size <= estimate && estimate <= size + (16 << 10),
                "{}: {size} bytes written, {estimate} estimated",
                stage.name
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_keeps_its_periodic_checkpoints_and_both_sides_of_each_growth() {
        let (plan, _) = smoke();
        let run = &plan.runs[0];
        let [small, grown] = [0, 1].map(|i| checkpoint_bytes(&run.stages[i].model));
        assert!(grown > small);
        assert_eq!(run_disk(run, 3), 4 * grown + small + grown);
        assert_eq!(
            run_disk(run, 0),
            2 * grown + small + grown,
            "one is always kept"
        );
    }

    /// A stage holds its state and, at a checkpoint, another copy; growing
    /// into one holds the old state beside the new.
    #[test]
    fn the_peak_stage_counts_programs_state_and_data() {
        let (plan, artifact) = smoke();
        let tokens = token_bytes(&plan.data);
        // Tiny Shakespeare, one 4-byte id per byte.
        assert_eq!(tokens, 4 * 1_115_394);
        let needs = run_memory(&plan.runs[0], &artifact, true, tokens, 7).unwrap();
        let [small, grown] = [&needs[0], &needs[1]];
        let (p0, p1) = [0, 1]
            .map(|i| state_bytes(&plan.runs[0].stages[i].model))
            .into();
        let step0 = program_memory(&artifact.stages[0].step, false);
        // The first stage: its state, and a checkpoint's copies of it.
        assert_eq!(small.memory.state, 2 * p0 + p0 / 2);
        assert_eq!(small.memory.data, tokens);
        assert_eq!(small.memory.runtime, 7);
        assert_eq!(small.memory.params, step0.params);
        // Entering `grown`, the check holds most: the old and the grown
        // state, the check's programs, the corpus's tokens.
        assert_eq!(grown.memory.state, p0 + p1);
        assert_eq!(grown.memory.data, tokens);
        assert!(grown.memory.total() > small.memory.total());
        let on_gpu = run_memory(&plan.runs[0], &artifact, false, tokens, 7).unwrap();
        assert_eq!(
            on_gpu[0].memory.params, 0,
            "a GPU's buffers are not the host's"
        );
    }

    #[test]
    fn sizes_read_and_print_as_people_write_them() {
        assert_eq!(parse_bytes("100MiB"), Some(100 << 20));
        assert_eq!(parse_bytes("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("12 parsecs"), None);
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(120 << 20).to_string(), "120 MiB");
        assert_eq!(Bytes(22 * (1 << 30) + (1 << 29)).to_string(), "22.5 GiB");
    }

    #[test]
    fn a_refusal_names_the_stage_and_both_numbers() {
        let memory = Memory {
            params: 1 << 30,
            moments: 2 << 30,
            activations: 28 << 30,
            ..Memory::default()
        };
        let report = LimitsReport {
            peak: Some(StageNeed {
                run: "gradual".into(),
                stage: "s3".into(),
                memory,
            }),
            memory_available: Some(22 << 30),
            memory_note: None,
            disk: 1 << 20,
            disk_available: Some(1 << 30),
        };
        let refusal = report.refusal("the runs").unwrap();
        assert!(
            refusal.starts_with(
                "stage `s3` of run `gradual` needs 31.0 GiB of memory (parameters 1.0 GiB, \
                 Adam moments 2.0 GiB, activations 28.0 GiB) and this machine has 22.0 GiB \
                 available"
            ),
            "{refusal}"
        );
        assert!(refusal.ends_with("or pass --no-limits to try anyway"));
        let fits = LimitsReport {
            memory_available: Some(32 << 30),
            ..report.clone()
        };
        assert_eq!(fits.refusal("the runs"), None);
        let full = LimitsReport {
            disk_available: Some(1 << 10),
            ..fits
        };
        assert!(full
            .refusal("the runs")
            .unwrap()
            .contains("need 1.0 MiB on disk and 1.0 KiB is free"));
    }
}
