//! `gsc run`: train every run of a plan (the growth schedules, then the
//! comparison baselines) in one run directory, or resume one.

use crate::ranks;
use gsc_compiler::check_source;
use gsc_runtime::backend::{Backend, Cpu};
use gsc_runtime::dist::{self, Comm};
use gsc_runtime::interp::InterpBackend;
use gsc_runtime::machine::Machine;
use gsc_runtime::run::artifact::{
    content_hash, Artifact, PtxProgram, COMPILER_VERSION, RUN_ARTIFACT,
};
use gsc_runtime::run::dir::{unix_now, Manifest, Metrics, RunDir};
use gsc_runtime::run::interrupt;
use gsc_runtime::run::train::{
    newest_good_checkpoint, train_run, Corpus, DataFile, Options, TrainError,
};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Cranelift-JIT loop kernels, gemm matmuls, flash attention, both cores.
    Cpu,
    /// The reference interpreter in f32: slow, obviously right.
    Interp,
    /// The reference interpreter in f64.
    Interp64,
    /// As cpu, with the loop kernels compiled through MLIR and LLVM
    /// (needs a gsc built with `--features mlir`).
    Mlir,
    /// An NVIDIA GPU: loop kernels from the artifact's PTX, products by
    /// cuBLAS (needs a gsc built with `--features cuda`).
    Cuda,
}

impl BackendKind {
    /// As on the command line.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// The backend itself, running PTX from `ptx` if it is a GPU; an
    /// error if this build lacks it, or it finds no device.
    pub fn backend(self, ptx: Vec<PtxProgram>) -> Result<Box<dyn Backend>, String> {
        Ok(match self {
            BackendKind::Cpu => Box::new(Cpu),
            BackendKind::Interp => Box::new(InterpBackend::<f32>::default()),
            BackendKind::Interp64 => Box::new(InterpBackend::<f64>::default()),
            BackendKind::Mlir => mlir_backend()?,
            BackendKind::Cuda => cuda_backend(ptx)?,
        })
    }

    /// An error if this build lacks the backend (checked before compiling).
    pub fn built(self) -> Result<(), String> {
        match self {
            BackendKind::Mlir if !cfg!(feature = "mlir") => mlir_backend().map(drop),
            BackendKind::Cuda if !cfg!(feature = "cuda") => cuda_backend(vec![]).map(drop),
            _ => Ok(()),
        }
    }
}

pub struct RunArgs {
    pub file: Option<PathBuf>,
    pub set: Vec<String>,
    pub resume: Option<PathBuf>,
    pub backend: BackendKind,
    /// A compiled artifact to run instead of compiling (one with PTX, for
    /// a GPU and a gsc without MLIR).
    pub artifact: Option<PathBuf>,
    pub runs_dir: PathBuf,
    pub only: Option<String>,
    /// Every stage cut to at most this many steps.
    pub max_stage_steps: Option<u64>,
    /// Periodic checkpoints kept per run (None: the run's own setting, or 3).
    pub keep_checkpoints: Option<usize>,
    pub peak_gflops: f64,
    /// Resume even though a data file changed since the run last read it.
    pub allow_data_change: bool,
    /// Train even if the memory or disk the run needs is not there.
    pub no_limits: bool,
    /// In a job of several ranks, each logs to `RUN_DIR/ranks/rank-N.log`.
    pub rank_logs: bool,
}

/// The artifact key of a source with its overrides, for this compiler.
pub fn artifact_hash(source: &str, overrides: &[String]) -> String {
    let mut parts = vec![source, COMPILER_VERSION];
    parts.extend(overrides.iter().map(String::as_str));
    content_hash(&parts)
}

/// The key of a source with its overrides, whatever compiles it: every
/// checkpoint carries it, so that a resume never starts from another file's.
pub fn source_hash(source: &str, overrides: &[String]) -> String {
    let mut parts = vec![source];
    parts.extend(overrides.iter().map(String::as_str));
    content_hash(&parts)
}

/// How `gsc run` ended, short of an error.
enum Ended {
    /// Trained (true), or the file did not check (false).
    Done(bool),
    /// Stopped by a signal, its state checkpointed: exit with this status.
    Stopped(i32),
}

/// Returns false after printing what went wrong. Started as one rank of a
/// data-parallel job, it trains with the others; an error on any rank
/// takes the whole job down, rather than leave the others waiting.
pub fn run(args: RunArgs, color: bool) -> bool {
    let comm = match dist::join() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}");
            return false;
        }
    };
    let ended =
        ranks::quiet_others(comm.as_ref()).and_then(|()| try_run(args, color, comm.as_ref()));
    match ended {
        Ok(Ended::Done(ok)) => ok,
        Ok(Ended::Stopped(status)) => {
            // Every rank stopped at the same step: MPI ends cleanly first.
            drop(comm);
            std::process::exit(status)
        }
        Err(message) => {
            eprintln!("error: {message}");
            if comm.ranks() > 1 {
                eprintln!("error: rank {} ends the job", comm.rank());
                comm.abort(1);
            }
            false
        }
    }
}

fn try_run(mut args: RunArgs, color: bool, comm: &dyn Comm) -> Result<Ended, String> {
    interrupt::install().map_err(|e| format!("installing signal handlers: {e}"))?;
    // A backend this build lacks is refused before anything is compiled.
    args.backend.built()?;
    // A resumed run: its directory and the artifact it was started with.
    let mut read_before = None;
    let (resumed, source_path, source, overrides) = match (&args.resume, &args.file) {
        (Some(resume), _) => {
            let dir = RunDir::open(resume).map_err(|e| e.to_string())?;
            let m = dir.manifest().map_err(|e| e.to_string())?;
            read_before = Some(m.clone());
            // A run started with `--run NAME` resumes as that run alone,
            // and one cut short stays cut short.
            args.only = args.only.take().or(m.only_run);
            args.max_stage_steps = m.max_stage_steps;
            args.keep_checkpoints = args.keep_checkpoints.or(m.keep_checkpoints);
            if m.runtime_version != gsc_runtime::VERSION {
                eprintln!(
                    "warning: this run was started by gsc runtime {}, and this is {}: its \
                     kernels are lowered anew, and the steps from here may round differently \
                     from an uninterrupted run",
                    if m.runtime_version.is_empty() {
                        "(unrecorded)"
                    } else {
                        &m.runtime_version
                    },
                    gsc_runtime::VERSION
                );
            }
            (
                Some((dir, m.artifact_hash)),
                PathBuf::from(m.source_path),
                m.source,
                m.overrides,
            )
        }
        (None, Some(file)) => {
            let source = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
            (None, file.clone(), source, args.set.clone())
        }
        (None, None) => return Err("give a .gs file, or --resume RUN_DIR".into()),
    };
    let base = source_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let checked = check_source(
        &source_path.display().to_string(),
        &source,
        &base,
        &overrides,
    );
    if !checked.report.diags.is_empty() {
        eprint!("{}", checked.report.render(color));
    }
    let Some(mut plan) = checked.plan else {
        return Ok(Ended::Done(false));
    };
    ranks::check_plan(comm, &plan, args.backend)?;
    if let Some(n) = args.max_stage_steps {
        plan.cut_short(n);
    }

    let started = std::time::Instant::now();
    let (artifact, hash, from) = match &resumed {
        Some((d, hash)) => resumed_artifact(d, hash.clone(), &plan, &args.runs_dir)?,
        None if args.artifact.is_some() => {
            let hash = artifact_hash(&source, &overrides);
            let path = args.artifact.as_deref().unwrap_or(Path::new(""));
            (given_artifact(path, &hash)?, hash, ", given")
        }
        None => {
            let hash = artifact_hash(&source, &overrides);
            let (artifact, cached) =
                Artifact::load_or_compile(&args.runs_dir.join(".cache"), &plan, &hash)
                    .map_err(|(stage, e)| format!("compiling stage `{stage}`: {e}"))?;
            (artifact, hash, if cached { ", from the cache" } else { "" })
        }
    };
    println!(
        "compiled {} stage{} in {:.0} ms{from} (artifact {hash})",
        artifact.stages.len(),
        if artifact.stages.len() == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64() * 1e3,
    );
    crate::limits::enforce(
        &args,
        &plan,
        &artifact,
        resumed.as_ref().map(|(d, _)| &d.path),
    )?;
    // The data is read (and checked against what a resumed run read)
    // before a run directory is made for it.
    // A resumed run tokenises with its own tokenizer.json, never trained
    // again; so do the other ranks of a new one, once rank 0 has made it.
    let writes = comm.rank() == 0;
    let corpus = if writes || resumed.is_some() {
        Some(
            Corpus::read(&plan.data, resumed.as_ref().map(|(d, _)| d.path.as_path()))
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let data_change = match (&read_before, &corpus) {
        (Some(m), Some(c)) => data_change(&m.data, &c.files, args.allow_data_change)?,
        _ => None,
    };
    // The device is opened before a run directory is made for it.
    let ptx = artifact
        .stages
        .iter()
        .flat_map(|s| s.ptx.iter().cloned())
        .collect();
    let backend = args.backend.backend(ptx)?;

    let dir = match (resumed, &corpus) {
        (Some((d, _)), _) => d,
        (None, None) => {
            let made = ranks::agree_on_dir(comm, None);
            RunDir::open(&made).map_err(|e| format!("{}: {e}", made.display()))?
        }
        (None, Some(corpus)) => {
            let stem = source_path
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            let d = RunDir::create(&args.runs_dir, &stem).map_err(|e| {
                format!(
                    "creating a run directory in {}: {e}",
                    args.runs_dir.display()
                )
            })?;
            let manifest = Manifest {
                name: stem,
                // Absolute, so that a resume from another directory finds
                // the file's data paths (relative to it) again.
                source_path: std::fs::canonicalize(&source_path)
                    .unwrap_or_else(|_| source_path.clone())
                    .display()
                    .to_string(),
                source: source.clone(),
                overrides: overrides.clone(),
                compiler_version: COMPILER_VERSION.to_string(),
                runtime_version: gsc_runtime::VERSION.to_string(),
                artifact_hash: hash.clone(),
                backend: args.backend.name(),
                machine: Machine::describe(),
                only_run: args.only.clone(),
                max_stage_steps: args.max_stage_steps,
                keep_checkpoints: args.keep_checkpoints,
                data: corpus.files.clone(),
                started_unix: unix_now(),
            };
            // Before run.json: every directory a resume accepts has it.
            let tokenizer = d.path.join(gsc_runtime::tokenizer::FILE);
            corpus
                .tokenizer
                .save(&tokenizer)
                .map_err(|e| e.to_string())?;
            d.write_manifest(&manifest)
                .map_err(|e| format!("writing run.json: {e}"))?;
            artifact
                .save(&d.path.join(RUN_ARTIFACT))
                .map_err(|e| format!("writing {RUN_ARTIFACT}: {e}"))?;
            ranks::agree_on_dir(comm, Some(&d.path));
            d
        }
    };
    println!("run directory {}", dir.path.display());
    if args.rank_logs && comm.ranks() > 1 {
        ranks::log_to_file(comm, &dir.path)?;
    }
    let corpus = match corpus {
        Some(c) => c,
        None => Corpus::read(&plan.data, Some(&dir.path)).map_err(|e| e.to_string())?,
    };

    let metrics_path = dir.metrics_path();
    let finished: HashSet<String> = Metrics::records(&metrics_path)
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|r| r["kind"] == "run_end")
        .filter_map(|r| r["run"].as_str().map(str::to_string))
        .collect();
    // A resumed run drops what it logged after its checkpoint (see `train_run`).
    let mut metrics = if writes {
        Metrics::open(&metrics_path)
    } else {
        Metrics::mirror(&metrics_path)
    }
    .map_err(|e| format!("opening {}: {e}", metrics_path.display()))?;
    if let (Some(record), Some(mut m)) = (data_change, read_before) {
        // Allowed: logged, and the run continues on (and now compares
        // against) the new data.
        metrics
            .log(&record)
            .map_err(|e| format!("writing metrics: {e}"))?;
        m.data = corpus.files.clone();
        dir.write_manifest(&m)
            .map_err(|e| format!("writing run.json: {e}"))?;
    }
    let opts = Options {
        backend: backend.as_ref(),
        artifact: &artifact,
        peak_flops: args.peak_gflops * 1e9,
        progress: std::io::stderr().is_terminal(),
        keep_checkpoints: args.keep_checkpoints.unwrap_or(3),
        source_hash: &source_hash(&source, &overrides),
        comm,
    };
    let mut summaries = Vec::new();
    for run in &plan.runs {
        if args.only.as_ref().is_some_and(|o| *o != run.name) || finished.contains(&run.name) {
            continue;
        }
        println!(
            "== run {} ({} stage{})",
            run.name,
            run.stages.len(),
            if run.stages.len() == 1 { "" } else { "s" }
        );
        let summary = match train_run(run, &corpus, &dir, &mut metrics, &opts) {
            Ok(s) => s,
            Err(e @ TrainError::Interrupted { signal, .. }) => {
                eprintln!(
                    "gsc: run `{}` {e}\nresume with: gsc run --resume {}",
                    run.name,
                    dir.path.display()
                );
                return Ok(Ended::Stopped(interrupt::exit_status(signal)));
            }
            Err(e) => {
                return Err(format!(
                    "run `{}`: {e}\n{}",
                    run.name,
                    after_failure(&dir, run)
                ))
            }
        };
        summaries.push((summary, run.totals));
    }
    if !summaries.is_empty() {
        println!(
            "\n{:<12} {:>8} {:>12} {:>11} {:>9} {:>8}",
            "run", "steps", "tokens", "FLOPs", "val_loss", "time"
        );
        for (s, totals) in &summaries {
            let val = s
                .final_val_loss
                .map_or("-".to_string(), |v| format!("{v:.4}"));
            println!(
                "{:<12} {:>8} {:>12} {:>11.3e} {:>9} {:>7.1}s",
                s.name, s.steps, totals.tokens, totals.flops, val, s.seconds
            );
        }
    }
    Ok(Ended::Done(true))
}

/// The files of `now` that differ from what the run read `before`: an
/// error naming them, or with `allow`, the metrics record of the change.
/// Run directories from before data was recorded have nothing to compare.
fn data_change(
    before: &[DataFile],
    now: &[DataFile],
    allow: bool,
) -> Result<Option<serde_json::Value>, String> {
    if before.is_empty() || before == now {
        return Ok(None);
    }
    let changed: Vec<String> = now
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| match before.iter().find(|b| b.path == f.path) {
            Some(b) => format!(
                "{} ({} bytes, sha256 {}…; the run read {} bytes, sha256 {}…)",
                f.path,
                f.bytes,
                &f.sha256[..12],
                b.bytes,
                &b.sha256[..12]
            ),
            None => format!("{} (not read by the run before)", f.path),
        })
        .collect();
    let changed = if changed.is_empty() {
        "the set of data files".to_string()
    } else {
        changed.join(", ")
    };
    if !allow {
        return Err(format!(
            "the data changed since the run last read it: {changed}. The resumed steps would \
             train on other batches than an uninterrupted run: restore the data, or pass \
             --allow-data-change to continue on the new data (it is logged in metrics.jsonl)"
        ));
    }
    eprintln!("warning: the data changed since the run last read it: {changed}; continuing on it, as --allow-data-change asks");
    Ok(Some(
        serde_json::json!({ "kind": "data_changed", "run": "", "step": 0,
        "before": before, "after": now, "unix": unix_now() }),
    ))
}

/// What a failed run left to resume from.
fn after_failure(dir: &RunDir, run: &gsc_compiler::plan::RunPlan) -> String {
    let resume = format!("gsc run --resume {}", dir.path.display());
    match newest_good_checkpoint(dir, run) {
        Some((path, step)) => format!(
            "the newest checkpoint, {} (step {step}), is intact: resume from it with `{resume}`",
            path.display()
        ),
        None => format!("no checkpoint of it was written: `{resume}` starts it again"),
    }
}

/// The artifact a run was started with, so that the resumed steps execute the
/// same kernels as the first ones: the run directory's copy, else the cache
/// entry its manifest names (runs started before runs kept a copy). Only if
/// both are gone is the plan compiled again, with a warning, since another
/// build of the compiler may lower it differently in the last bits.
fn resumed_artifact(
    dir: &RunDir,
    hash: String,
    plan: &gsc_compiler::plan::Plan,
    runs_dir: &Path,
) -> Result<(Artifact, String, &'static str), String> {
    let caches = [
        dir.path.join(RUN_ARTIFACT),
        dir.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(".cache")
            .join(format!("{hash}.json")),
        runs_dir.join(".cache").join(format!("{hash}.json")),
    ];
    // The hash covers the source text and overrides (both from the
    // manifest) and the compiler: the plan can differ only in where data
    // paths resolve from, which the kernels do not depend on.
    if let Some(a) = caches.iter().find_map(|p| Artifact::load(p, &hash)) {
        return Ok((a, hash, ", as the run was started"));
    }
    eprintln!(
        "warning: the kernels this run was compiled to (artifact {hash}) are gone; compiling \
         again with gsc {COMPILER_VERSION}, whose kernels may round differently from those of \
         the finished steps"
    );
    let a = Artifact::compile(plan, &hash)
        .map_err(|(stage, e)| format!("compiling stage `{stage}`: {e}"))?;
    let _ = a.save(&dir.path.join(RUN_ARTIFACT));
    Ok((a, hash, ""))
}

/// The artifact in `path`, which must be the one of this source, overrides
/// and compiler (`hash`).
fn given_artifact(path: &Path, hash: &str) -> Result<Artifact, String> {
    let a = Artifact::read(path)?;
    if a.hash != hash {
        return Err(format!(
            "`{}` was compiled from another source, other overrides or another gsc (artifact \
             {}; this source and gsc {COMPILER_VERSION} make {hash}): compile it again with \
             `gsc compile --emit=artifact`",
            path.display(),
            a.hash
        ));
    }
    Ok(a)
}

#[cfg(feature = "cuda")]
fn cuda_backend(ptx: Vec<PtxProgram>) -> Result<Box<dyn Backend>, String> {
    let gpu = gsc_runtime::cuda::Cuda::open(0, ptx).map_err(|e| e.message)?;
    println!("GPU: {}", gpu.describe());
    Ok(Box::new(gpu))
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend(_: Vec<PtxProgram>) -> Result<Box<dyn Backend>, String> {
    Err(
        "this gsc was built without the CUDA backend; build it with `cargo build --release \
         --features cuda` (it needs no CUDA to build)"
            .into(),
    )
}

#[cfg(feature = "mlir")]
fn mlir_backend() -> Result<Box<dyn gsc_runtime::backend::Backend>, String> {
    Ok(Box::new(gsc_runtime::backend::Mlir))
}

#[cfg(not(feature = "mlir"))]
fn mlir_backend() -> Result<Box<dyn gsc_runtime::backend::Backend>, String> {
    Err(crate::mlir::WITHOUT_MLIR.into())
}
