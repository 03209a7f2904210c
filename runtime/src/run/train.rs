//! The training loop: every stage of a run, growth in place between stages
//! (with the loss before and after checked on a fixed batch), evaluation,
//! metrics, atomic checkpoints, and resumption from the last checkpoint.

use super::artifact::{Artifact, GrowthCheck};
use super::dir::{Metrics, RunDir};
use super::interrupt;
use crate::backend::{Backend, BackendError, Program};
use crate::checkpoint::{self, Checkpoint, CheckpointError, TensorRef};
use crate::data::{split_point, Batch, DataError, Dataset, Tokens};
use crate::dist::{self, Comm};
use crate::grow::{grow, GrowError, ModelState};
use crate::machine::peak_rss_bytes;
use crate::tokenizer::{self, Tokenizer, TokenizerError};
use gsc_compiler::graph::Gates;
use gsc_compiler::kernel::{KernelProgram, Storage};
use gsc_compiler::plan::{
    self, Axis, DataPlan, ModelConfig, NonFinite, ParamSpec, RunPlan, StagePlan,
};
use gsc_compiler::{compile_split_step, CompileError};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("compiling stage `{stage}`: {source}")]
    Compile { stage: String, source: CompileError },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(
        "stage `{stage}`'s model has a vocabulary of {model}, smaller than the tokenizer's \
         {tokenizer} tokens: write `vocab = tokenizer` in the model"
    )]
    Vocab {
        stage: String,
        model: usize,
        tokenizer: usize,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("growth before stage `{stage}`: {source}")]
    Grow { stage: String, source: GrowError },
    #[error(
        "growth before stage `{stage}` was declared exact but changed the loss on a fixed batch \
         from {before:.6} to {after:.6} (max |Δ logits| {max_dlogit:.3e}, tolerance {tolerance:.1e})"
    )]
    NotPreserved {
        stage: String,
        before: f64,
        after: f64,
        max_dlogit: f64,
        tolerance: f64,
    },
    #[error(
        "step {step} of stage `{stage}` went non-finite (loss {loss}, gradient norm {grad_norm}); \
         the first non-finite tensor: {first}. The checkpoints hold the last good state: lower \
         the learning rate, enable clipping, or set `on_nonfinite` (skip or rollback)"
    )]
    NonFinite {
        stage: String,
        step: u64,
        loss: f32,
        grad_norm: f32,
        first: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("data parallel: {0}")]
    Ranks(String),
    #[error("stopped by {} after step {step} of stage `{stage}`; its state is in {}", interrupt::name(*signal), checkpoint.display())]
    Interrupted {
        signal: i32,
        stage: String,
        step: u64,
        checkpoint: PathBuf,
    },
    /// The plan, the artifact and the runtime disagree: a bug, reported plainly.
    #[error("internal error: {0}")]
    Inconsistent(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TrainError {
    let context = context.into();
    move |source| TrainError::Io { context, source }
}

/// How a run reports and where it keeps its state.
pub struct Options<'a> {
    pub backend: &'a dyn Backend,
    /// The compiled programs of every stage.
    pub artifact: &'a Artifact,
    /// Peak FLOP/s of the machine, for MFU.
    pub peak_flops: f64,
    /// Print a progress bar (a terminal is attached).
    pub progress: bool,
    /// Checkpoints to keep per run (the newest).
    pub keep_checkpoints: usize,
    /// Content hash of the source and overrides, stored in every checkpoint
    /// so that a resume never starts from another file's.
    pub source_hash: &'a str,
    /// The ranks of a data-parallel job ([`dist::Solo`] for one process).
    /// Rank 0 alone writes checkpoints and metrics.
    pub comm: &'a dyn Comm,
}

impl Options<'_> {
    /// Whether this process writes the run's files: rank 0's job.
    fn writes(&self) -> bool {
        self.comm.rank() == 0
    }
}

/// The data, tokenised, shared by every stage (stages differ in context).
pub struct Corpus {
    pub name: PathBuf,
    /// What each file held when it was read.
    pub files: Vec<DataFile>,
    /// The run's tokenizer: the byte one, a BPE trained on the training
    /// split, or a loaded tokenizer.json.
    pub tokenizer: Tokenizer,
    pub tokens: Arc<Tokens>,
}

/// A data file as a run saw it: a resume over other contents would train
/// on other batches, so run.json records these and a resume compares them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Corpus {
    /// Reads the data and tokenises its two splits, each on its own, with
    /// the tokenizer of `run_dir` (a resumed run: its `tokenizer.json`,
    /// never trained again) or, for a new run, the plan's: a BPE is
    /// trained here, on the training split alone.
    pub fn read(data: &DataPlan, run_dir: Option<&Path>) -> Result<Corpus, TrainError> {
        use sha2::Digest;
        let mut bytes = Vec::new();
        let mut files = Vec::new();
        for f in &data.files {
            let text = std::fs::read(&f.resolved)
                .map_err(io(format!("reading data file {}", f.resolved)))?;
            let digest = sha2::Sha256::digest(&text);
            // Absolute: a resume resolves the paths from the absolute
            // source path run.json keeps.
            let path = std::fs::canonicalize(&f.resolved)
                .map_or_else(|_| f.resolved.clone(), |p| p.display().to_string());
            files.push(DataFile {
                path,
                bytes: text.len() as u64,
                sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            });
            bytes.extend(text);
        }
        let name = PathBuf::from(data.files.first().map_or("data", |f| f.resolved.as_str()));
        let started = Instant::now();
        if let Some(dir) = run_dir {
            // Only byte runs made before run directories kept a tokenizer lack one.
            let file = dir.join(tokenizer::FILE);
            if data.tokenizer != plan::Tokenizer::Bytes && !file.is_file() {
                return Err(TrainError::Resume(format!(
                    "{} is missing: the run's tokenizer is not trained or copied again, \
                     since its tokens would not be the ones the run trained on",
                    file.display()
                )));
            }
        }
        let resumed = run_dir.map(Tokenizer::open_run).transpose()?;
        let text = match &resumed {
            Some(t) => !t.is_bytes(),
            None => data.tokenizer != plan::Tokenizer::Bytes,
        };
        let at = split_point(&name, &bytes, data.val_fraction, text)?;
        let tokenizer = match (resumed, &data.tokenizer) {
            (Some(t), _) => t,
            (None, plan::Tokenizer::Bytes) => Tokenizer::bytes(),
            (None, plan::Tokenizer::File { resolved, .. }) => Tokenizer::load(Path::new(resolved))?,
            (None, plan::Tokenizer::Bpe { vocab }) => {
                let train = std::str::from_utf8(&bytes[..at]).map_err(|e| DataError::Tokenize {
                    path: name.clone(),
                    source: TokenizerError::NotUtf8(e.valid_up_to()),
                })?;
                Tokenizer::train_bpe(train, *vocab)?
            }
        };
        let trained = started.elapsed().as_secs_f64();
        let tokens = Tokens::split(&name, &bytes, at, &tokenizer)?;
        if text {
            println!(
                "data: {} training and {} validation tokens, {:.2} bytes per token \
                 (tokenizer ready in {trained:.1} s, text tokenised in {:.1} s)",
                tokens.train.len(),
                tokens.val.len(),
                bytes.len() as f64 / (tokens.train.len() + tokens.val.len()).max(1) as f64,
                started.elapsed().as_secs_f64() - trained
            );
        }
        Ok(Corpus {
            name,
            files,
            tokenizer,
            tokens: Arc::new(tokens),
        })
    }

    fn dataset(&self, context: usize) -> Result<Dataset, TrainError> {
        Ok(Dataset::new(&self.name, self.tokens.clone(), context)?)
    }
}

/// Where a resumed run starts: stage `stage` with `state`, at `at`, after
/// the run had logged `records` metrics records.
struct Resume {
    stage: usize,
    state: ModelState,
    at: Cursor,
    records: u64,
}

/// What a checkpoint's metadata records of the moment it was taken.
struct Taken<'a> {
    run: &'a RunPlan,
    stage: usize,
    at: &'a Cursor,
    /// The stage is over (its budget spent, or its target reached).
    stage_done: bool,
    records: u64,
    source: &'a str,
}

/// What a run has spent so far, every stage charged: the tokens and FLOPs
/// of its training steps and the wall time since it started (across
/// resumes). Kept in every checkpoint, logged with every step and eval.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub tokens: f64,
    pub flops: f64,
    pub seconds: f64,
}

/// Where a run stands: its global step, what it has spent, its last
/// validation loss, and what its non-finite steps did to it.
#[derive(Clone, Debug, Default)]
struct Cursor {
    step: u64,
    progress: Progress,
    val_loss: Option<f64>,
    faults: Faults,
}

/// What the run's `on_nonfinite` policy has done: the 0-based steps whose
/// batch is left out, the factor on the learning rate, and how often it
/// acted. Kept in every checkpoint, so a resume goes on the same way.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Faults {
    skipped: Vec<u64>,
    lr_factor: f64,
    events: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            skipped: Vec::new(),
            lr_factor: 1.0,
            events: 0,
        }
    }
}

/// At most this many non-finite steps are skipped or rolled back per run;
/// the next one stops it.
const MAX_NONFINITE_EVENTS: u32 = 10;

/// The progress clock of one process: the seconds of earlier processes
/// plus this one's.
struct Clock {
    before: f64,
    started: Instant,
}

impl Clock {
    fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

/// Summary of one finished run.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub name: String,
    pub steps: u64,
    pub final_val_loss: Option<f64>,
    pub seconds: f64,
}

/// A stage's programs, loaded on the backend; `forward` reads `step`'s
/// parameters. `step` owns the parameters and moments: the fused training
/// step of one process, or in a data-parallel job the update alone, with
/// `grads` computing this rank's gradients (see [`SplitStep`]).
///
/// [`SplitStep`]: gsc_compiler::SplitStep
struct Loaded {
    step: Box<dyn Program>,
    grads: Option<Box<dyn Program>>,
    forward: Box<dyn Program>,
    specs: Vec<ParamSpec>,
    /// The step from which the training programs run the faster code being
    /// compiled beside them (see [`Switch`]).
    switch_at: Option<u64>,
}

/// Stages with less compute than this keep their first code: a faster
/// code generator's seconds of compiling would not pay off (about 30 s of
/// training at 100 GFLOP/s).
const SWITCH_MIN_FLOPS: f64 = 3e12;
/// Compute the stage trains with its first code while the faster code is
/// compiled (about 10 s at 100 GFLOP/s, enough for MLIR on two cores).
const SWITCH_AFTER_FLOPS: f64 = 1e12;

/// When a stage switches to the code compiled beside its first one:
/// `GSC_SWITCH_CODE=never` or `always`, [`Switch::Auto`] otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Long stages only, after [`SWITCH_AFTER_FLOPS`] of training.
    Auto,
    /// Keep the first code.
    Never,
    /// After each stage's first step, whatever its size.
    Always,
}

impl Switch {
    pub fn from_env() -> Switch {
        match std::env::var("GSC_SWITCH_CODE").as_deref() {
            Ok("never") => Switch::Never,
            Ok("always") => Switch::Always,
            _ => Switch::Auto,
        }
    }

    /// The step at which `stage` switches, or `None` to keep the first
    /// code. Fixed by the plan alone, never by when the code is ready: the
    /// new code may round differently, and a resumed run must switch at the
    /// same step as an uninterrupted one.
    fn step(self, stage: &StagePlan) -> Option<u64> {
        let per_step = stage.flops_per_token * stage.tokens_per_step() as f64;
        self.step_of(stage.first_step, stage.flops(), per_step)
    }

    /// [`Switch::step`] of a stage that starts at `first`, trains `total`
    /// FLOPs (`None`: until a target, uncapped) in steps of `per_step`.
    fn step_of(self, first: u64, total: Option<f64>, per_step: f64) -> Option<u64> {
        match self {
            Switch::Never => None,
            Switch::Always => Some(first + 1),
            Switch::Auto => {
                let long = total.is_none_or(|f| f >= SWITCH_MIN_FLOPS);
                let after = (SWITCH_AFTER_FLOPS / per_step.max(1.0)).ceil() as u64;
                long.then_some(first + after.max(1))
            }
        }
    }
}

/// Switches the training programs to the code compiled beside them; where
/// that code failed, the program keeps its own (and says so).
fn switch_code(
    l: &mut Loaded,
    run: &str,
    stage: &str,
    step: u64,
    bar: &Option<indicatif::ProgressBar>,
) {
    l.switch_at = None;
    for p in std::iter::once(&mut l.step).chain(l.grads.as_mut()) {
        let line = match p.switch_code() {
            Ok(true) => format!(
                "{run:<8} {stage:<8} step {step:>6}  loop kernels now {}'s",
                p.code()
            ),
            Ok(false) => continue,
            Err(e) => format!(
                "{run:<8} {stage:<8} warning: keeping {}'s loop kernels: {e}",
                p.code()
            ),
        };
        print_line(bar, &line);
    }
}

/// Trains `run` (every stage, growing between them), logging to `metrics`
/// and checkpointing under `dir`. Resumes from the run's newest checkpoint
/// when there is one; a non-finite step under a `skip` or `rollback`
/// policy resumes from it in the same way.
pub fn train_run(
    run: &RunPlan,
    corpus: &Corpus,
    dir: &RunDir,
    metrics: &mut Metrics,
    opts: &Options,
) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    let policy = run
        .stages
        .first()
        .map_or(NonFinite::Stop, |s| s.train.on_nonfinite);
    let mut faults = None;
    let mut events = Vec::new();
    loop {
        let outcome = train_from(run, corpus, dir, metrics, opts, &mut faults, &events);
        let f = faults.as_mut().filter(|f| f.events < MAX_NONFINITE_EVENTS);
        match (outcome, f, policy) {
            (
                Err(TrainError::NonFinite {
                    stage, step, first, ..
                }),
                Some(f),
                NonFinite::Skip | NonFinite::Rollback { .. },
            ) => {
                f.events += 1;
                let action = match policy {
                    NonFinite::Rollback { lr_factor } => {
                        f.lr_factor *= lr_factor;
                        format!("the learning rate times {:e} from there", f.lr_factor)
                    }
                    _ => {
                        f.skipped.push(step - 1);
                        format!("leaving out the batch of step {step}")
                    }
                };
                eprintln!(
                    "warning: run `{}`: step {step} of stage `{stage}` went non-finite ({first}): \
                     back to the newest checkpoint, {action}",
                    run.name
                );
                events.push(
                    json!({ "kind": "nonfinite", "run": run.name, "stage": stage,
                    "step": step, "event": f.events, "first": first, "policy": policy,
                    "skipped": f.skipped, "lr_factor": f.lr_factor }),
                );
            }
            (outcome, ..) => {
                return outcome.map(|s| RunSummary {
                    seconds: started.elapsed().as_secs_f64(),
                    ..s
                })
            }
        }
    }
}

/// [`train_run`] from the run's newest good checkpoint, with the policy's
/// `faults` so far (those of the checkpoint, the first time), logging the
/// policy's `events` the checkpoint's metrics do not hold yet.
fn train_from(
    run: &RunPlan,
    corpus: &Corpus,
    dir: &RunDir,
    metrics: &mut Metrics,
    opts: &Options,
    faults: &mut Option<Faults>,
    events: &[serde_json::Value],
) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    let tokenizer = corpus.tokenizer.vocab_size();
    if let Some(s) = run.stages.iter().find(|s| s.model.vocab < tokenizer) {
        return Err(TrainError::Vocab {
            stage: s.name.clone(),
            model: s.model.vocab,
            tokenizer,
        });
    }
    let ckpt_dir = dir.checkpoints().join(&run.name);
    if opts.writes() {
        std::fs::create_dir_all(&ckpt_dir)
            .map_err(io(format!("creating {}", ckpt_dir.display())))?;
    }
    // Every rank reads the checkpoint rank 0 wrote last, once it is written.
    opts.comm.barrier();
    let resume = resume_point(&ckpt_dir, run, opts.source_hash, opts.writes())?;
    // What was logged after that checkpoint is logged again.
    metrics
        .truncate_run(&run.name, resume.as_ref().map_or(0, |r| r.records))
        .map_err(io("rewriting metrics"))?;
    let first_stage = resume.as_ref().map_or(0, |r| r.stage);
    let (mut state, mut at) = match resume {
        Some(r) => (Some(r.state), r.at),
        None => (None, Cursor::default()),
    };
    let logged = at.faults.events;
    at.faults = faults.get_or_insert(at.faults.clone()).clone();
    let clock = Clock {
        before: at.progress.seconds,
        started,
    };
    if state.is_none() {
        log_run_start(run, metrics)?;
    }
    for e in events
        .iter()
        .filter(|e| e["event"].as_u64() > Some(logged.into()))
    {
        metrics.log(e).map_err(io("writing metrics"))?;
    }

    for (si, stage) in run.stages.iter().enumerate().skip(first_stage) {
        if let (Some(signal), Some(prev)) = (interrupted(opts.comm), si.checked_sub(1)) {
            // The previous stage's final checkpoint holds the state.
            return Err(TrainError::Interrupted {
                signal,
                stage: run.stages[prev].name.clone(),
                step: at.step,
                checkpoint: ckpt_dir.join(checkpoint_name(at.step)),
            });
        }
        let data = corpus.dataset(stage.model.context)?;
        // Entering a stage from the previous one's state: grow it first.
        let resumed_here = state.as_ref().is_some_and(|s| s.config == stage.model);
        let mut st = match state.take() {
            Some(s) if resumed_here => s,
            Some(prev) => {
                at.progress.seconds = clock.seconds();
                let grown = grow_between(
                    &prev,
                    stage,
                    si,
                    at.step,
                    at.progress,
                    corpus,
                    metrics,
                    opts,
                    &run.name,
                )?;
                // The states just before and after every growth are kept,
                // so that a growth can be checked from the files. The one
                // before is the previous stage's final checkpoint: linked
                // under its own name (pruning leaves it), not written again.
                if opts.writes() {
                    let before = ckpt_dir.join(growth_name(si, "before"));
                    link(&ckpt_dir.join(checkpoint_name(at.step)), &before)
                        .map_err(io(format!("keeping {}", before.display())))?;
                    let taken = taken(run, si, &at, metrics, opts);
                    save_state(&ckpt_dir.join(growth_name(si, "after")), &grown, &taken)?;
                }
                grown
            }
            None => ModelState::init(&stage.model, stage.train.seed),
        };
        let mut loaded = load_stage(&run.name, stage, &st, opts)?;
        train_stage(
            run,
            stage,
            si,
            &mut loaded,
            &data,
            &mut at,
            &clock,
            &ckpt_dir,
            metrics,
            opts,
        )?;
        st = read_state(&loaded, &stage.model)?;
        at.progress.seconds = clock.seconds();
        let taken = Taken {
            stage_done: true,
            ..taken(run, si, &at, metrics, opts)
        };
        save_checkpoint(&ckpt_dir, &st, &taken, opts)?;
        state = Some(st);
    }
    at.progress.seconds = clock.seconds();
    let p = at.progress;
    metrics
        .log(
            &json!({ "kind": "run_end", "run": run.name, "step": at.step, "val_loss": at.val_loss,
            "val_bpb": at.val_loss.map(|v| corpus.tokens.bits_per_byte(v)),
            "tokens": p.tokens, "flops": p.flops, "seconds": p.seconds }),
        )
        .map_err(io("writing metrics"))?;
    Ok(RunSummary {
        name: run.name.clone(),
        steps: at.step,
        final_val_loss: at.val_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a report needs of the plan, so that it reads the run directory alone:
/// the run's kind, architecture and seed, and every stage's size and budget.
fn log_run_start(run: &RunPlan, metrics: &mut Metrics) -> Result<(), TrainError> {
    let last = run.stages.last().map(|s| &s.model);
    let stages: Vec<_> = run
        .stages
        .iter()
        .map(|s| {
            json!({ "name": s.name, "params": s.param_count, "flops_per_token": s.flops_per_token,
                "tokens": s.tokens(), "first_step": s.first_step, "steps": s.steps })
        })
        .collect();
    metrics
        .log(
            &json!({ "kind": "run_start", "run": run.name, "step": 0, "run_kind": run.kind,
            "arch": last.map(|m| m.arch), "seed": run.stages.first().map(|s| s.train.seed),
            "final_params": last.map(|m| m.param_count()), "stages": stages }),
        )
        .map_err(io("writing metrics"))
}

fn load_stage(
    run: &str,
    stage: &StagePlan,
    st: &ModelState,
    opts: &Options,
) -> Result<Loaded, TrainError> {
    let programs = opts.artifact.stage(run, &stage.name).ok_or_else(|| {
        TrainError::Inconsistent(format!("the artifact has no stage `{run}.{}`", stage.name))
    })?;
    let started = Instant::now();
    let ranks = opts.comm.ranks();
    let (mut step, mut grads, kernels) = if ranks > 1 {
        // The step cut in two around the sum of the ranks' gradients,
        // compiled here for this rank's share of the batch.
        let local = dist::local_batch(stage.train.batch, ranks).map_err(TrainError::Ranks)?;
        let split = compile_split_step(&stage.model, &stage.train, local, Gates::of(stage))
            .map_err(|source| TrainError::Compile {
                stage: stage.name.clone(),
                source,
            })?;
        let update = opts.backend.load(&split.update)?;
        let grads = opts.backend.load_sharing(&split.grads, update.as_ref())?;
        let kernels = split.grads.kernels.len() + split.update.kernels.len();
        (update, Some(grads), kernels)
    } else {
        let step = opts.backend.load(&programs.step)?;
        (step, None, programs.step.kernels.len())
    };
    let forward = opts
        .backend
        .load_sharing(&programs.forward, step.as_ref())?;
    let loaded_ms = started.elapsed().as_secs_f64() * 1e3;
    // The faster code for a long stage, compiled while it trains.
    let switch_at = Switch::from_env().step(stage).filter(|_| {
        let started = step.compile_beside();
        grads.as_mut().is_some_and(|g| g.compile_beside()) || started
    });
    println!(
        "{run:<8} {:<8} {} kernels loaded on {} in {loaded_ms:.0} ms{}{}",
        stage.name,
        kernels + programs.forward.kernels.len(),
        opts.backend.name(),
        if ranks > 1 {
            format!(" (rank {} of {ranks})", opts.comm.rank())
        } else {
            String::new()
        },
        match switch_at {
            Some(s) => format!("; faster loop kernels compiling beside, from step {s}"),
            None => String::new(),
        }
    );
    let specs = stage.model.params();
    for (i, _) in specs.iter().enumerate() {
        step.write(Storage::Param(i), &to_f32(&st.params[i]))?;
        step.write(Storage::AdamM(i), &to_f32(&st.m[i]))?;
        step.write(Storage::AdamV(i), &to_f32(&st.v[i]))?;
    }
    Ok(Loaded {
        step,
        grads,
        forward,
        specs,
        switch_at,
    })
}

fn read_state(l: &Loaded, config: &ModelConfig) -> Result<ModelState, TrainError> {
    let mut s = ModelState {
        config: config.clone(),
        params: Vec::new(),
        m: Vec::new(),
        v: Vec::new(),
    };
    for i in 0..l.specs.len() {
        s.params.push(to_f64(&l.step.read(Storage::Param(i))?));
        s.m.push(to_f64(&l.step.read(Storage::AdamM(i))?));
        s.v.push(to_f64(&l.step.read(Storage::AdamV(i))?));
    }
    Ok(s)
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn ints(x: &[u32]) -> Vec<i32> {
    x.iter().map(|&v| v as i32).collect()
}

/// The learning rate of global step `step` within `stage`: peak × schedule,
/// times a linear re-warm after a growth that asks for one.
pub fn learning_rate(stage: &StagePlan, step: u64) -> f64 {
    let t = &stage.train;
    let mut lr = t.optimizer.lr * t.schedule.multiplier(step);
    let rewarm = stage
        .growth
        .iter()
        .map(|g| g.rewarm_steps)
        .max()
        .unwrap_or(0);
    if rewarm > 0 && step >= stage.first_step {
        lr *= ((step - stage.first_step + 1) as f64 / rewarm as f64).min(1.0);
    }
    lr
}

/// Writes `stage`'s gates into `p` (see [`gsc_compiler::plan::Gate`]): the
/// new units at their ramp's value for global training step `step`
/// (0-based, the step about to run, or just run for an evaluation after
/// it), or at 0 for `None`, the growth check. A stage without ramps has
/// none to write.
fn write_gates(
    p: &mut dyn Program,
    stage: &StagePlan,
    step: Option<u64>,
) -> Result<(), TrainError> {
    for g in &stage.gates {
        let storage = match g.axis {
            Axis::Heads => Storage::HeadGate,
            Axis::Ffn => Storage::FfnGate,
            other => {
                return Err(TrainError::Inconsistent(format!(
                    "a gate on {}",
                    other.name()
                )))
            }
        };
        let ramp = step.map_or(0.0, |s| g.ramp(stage.first_step, s));
        p.write(storage, &to_f32(&g.values(ramp)))?;
    }
    Ok(())
}

/// One training step on the global `batch` at 0-based step `step`: its
/// loss and gradient norm. One process runs the fused step. In a job of
/// several ranks each computes the gradients of its share, the ranks sum
/// them (with the losses), and each applies the same update to the mean:
/// the mean over the ranks of their shares' mean losses is the batch's.
fn train_step(
    l: &mut Loaded,
    stage: &StagePlan,
    batch: &Batch,
    lr: f64,
    step: u64,
    comm: &dyn Comm,
) -> Result<(f32, f32), TrainError> {
    let shard;
    let share = match l.grads {
        Some(_) => {
            shard = batch.shard(comm.rank(), comm.ranks());
            &shard
        }
        None => batch,
    };
    let grads = l.grads.as_mut().unwrap_or(&mut l.step);
    grads.write_ints(Storage::Tokens, &ints(&share.inputs))?;
    grads.write_ints(Storage::Targets, &ints(&share.targets))?;
    write_gates(grads.as_mut(), stage, Some(step))?;
    let p = &mut l.step;
    p.write(Storage::Lr, &[lr as f32])?;
    p.write(Storage::Step, &[(step + 1) as f32])?;
    let loss = match &mut l.grads {
        None => {
            p.run()?;
            p.read(Storage::Loss)?[0]
        }
        Some(g) => {
            g.run()?;
            let mut sum = g.read(Storage::Loss)?;
            for i in 0..l.specs.len() {
                sum.extend(g.read(Storage::Grad(i))?);
            }
            comm.sum(&mut sum);
            let ranks = comm.ranks() as f32;
            sum.iter_mut().for_each(|v| *v /= ranks);
            let mut at = 1;
            for (i, spec) in l.specs.iter().enumerate() {
                let n: usize = spec.shape.iter().product();
                p.write(Storage::Grad(i), &sum[at..at + n])?;
                at += n;
            }
            p.run()?;
            sum[0]
        }
    };
    Ok((loss, p.read(Storage::GradNorm)?[0]))
}

/// The signal that asked the job to stop, if any rank received one: all
/// ranks stop at the same step, or the others would wait for it forever.
fn interrupted(comm: &dyn Comm) -> Option<i32> {
    let own = interrupt::requested();
    if comm.ranks() == 1 {
        return own;
    }
    let signal = comm.max(own.map_or(0, |s| s as u64));
    (signal > 0).then_some(signal as i32)
}

/// Mean loss of the forward program (on the training step's parameters)
/// over `batches`. The ranks of a job share them out (rank r takes batches
/// r, r + N, …) and sum the list of losses, each entry from one rank: every
/// rank then adds the same numbers in the same order as one process would.
fn evaluate(l: &mut Loaded, batches: &[Batch], comm: &dyn Comm) -> Result<f64, TrainError> {
    let mut losses = vec![0.0f32; batches.len()];
    let mine = (comm.rank()..batches.len()).step_by(comm.ranks());
    for i in mine {
        let b = &batches[i];
        l.forward.write_ints(Storage::Tokens, &ints(&b.inputs))?;
        l.forward.write_ints(Storage::Targets, &ints(&b.targets))?;
        l.forward.run()?;
        losses[i] = l.forward.read(Storage::Loss)?[0];
    }
    comm.sum(&mut losses);
    let total: f64 = losses.iter().map(|&x| f64::from(x)).sum();
    Ok(total / batches.len().max(1) as f64)
}

#[allow(clippy::too_many_arguments)]
fn train_stage(
    run: &RunPlan,
    stage: &StagePlan,
    si: usize,
    loaded: &mut Loaded,
    data: &Dataset,
    at: &mut Cursor,
    clock: &Clock,
    ckpt_dir: &Path,
    metrics: &mut Metrics,
    opts: &Options,
) -> Result<(), TrainError> {
    let t = &stage.train;
    let end = stage.first_step + stage.steps.unwrap_or(u64::MAX - stage.first_step);
    let tokens_per_step = stage.tokens_per_step() as f64;
    let val = data.val_batches(t.eval_batches, t.batch);
    let bar = progress_bar(opts.progress, stage, at.step, end);
    let mut window = Instant::now();
    let mut window_steps = 0u64;
    while at.step < end {
        if let Some(signal) = interrupted(opts.comm) {
            let st = read_state(loaded, &stage.model)?;
            at.progress.seconds = clock.seconds();
            let taken = taken(run, si, at, metrics, opts);
            save_checkpoint(ckpt_dir, &st, &taken, opts)?;
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(TrainError::Interrupted {
                signal,
                stage: stage.name.clone(),
                step: at.step,
                checkpoint: ckpt_dir.join(checkpoint_name(at.step)),
            });
        }
        if at.faults.skipped.contains(&at.step) {
            // Left out by `on_nonfinite = skip`: no update, and no
            // evaluation or checkpoint of its own.
            at.step += 1;
            continue;
        }
        if loaded.switch_at.is_some_and(|s| at.step >= s) {
            switch_code(loaded, &run.name, &stage.name, at.step, &bar);
            // The wait for the new code is not a step's time.
            window = Instant::now();
            window_steps = 0;
        }
        let batch = data.train_batch(t.seed, at.step, t.batch);
        let lr = learning_rate(stage, at.step) * at.faults.lr_factor;
        let (loss, grad_norm) = train_step(loaded, stage, &batch, lr, at.step, opts.comm)?;
        at.step += 1;
        at.progress.tokens += tokens_per_step;
        at.progress.flops += tokens_per_step * stage.flops_per_token;
        at.progress.seconds = clock.seconds();
        window_steps += 1;
        if !(loss.is_finite() && grad_norm.is_finite()) {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(TrainError::NonFinite {
                stage: stage.name.clone(),
                step: at.step,
                loss,
                grad_norm,
                first: first_nonfinite(loaded, loss)?,
            });
        }
        if let Some(b) = &bar {
            b.set_position(at.step);
        }
        if at.step.is_multiple_of(t.log_every) || at.step == end {
            let secs = window.elapsed().as_secs_f64() / window_steps as f64;
            let tok_s = tokens_per_step / secs;
            let mfu = tok_s * stage.flops_per_token / opts.peak_flops;
            let gnorm = f64::from(grad_norm);
            let line = format!(
                "{:<8} {:<8} step {:>6}  loss {:.4}  lr {:.2e}  gnorm {:.3}  {:>7.1} ms/step  {:>8.0} tok/s  MFU {:>5.1}%",
                run.name,
                stage.name,
                at.step,
                loss,
                lr,
                gnorm,
                secs * 1e3,
                tok_s,
                mfu * 100.0
            );
            print_line(&bar, &line);
            metrics
                .log(&json!({
                    "kind": "step", "run": run.name, "stage": stage.name, "step": at.step, "loss": loss, "lr": lr,
                    "grad_norm": gnorm, "ms_per_step": secs * 1e3, "tokens_per_s": tok_s, "mfu": mfu,
                    "tokens": at.progress.tokens, "flops": at.progress.flops, "seconds": at.progress.seconds,
                    "peak_rss": peak_rss_bytes(),
                }))
                .map_err(io("writing metrics"))?;
            window = Instant::now();
            window_steps = 0;
        }
        let eval_now = at.step.is_multiple_of(t.eval_every) || at.step == end;
        if eval_now {
            // The gates of the step just trained.
            write_gates(loaded.forward.as_mut(), stage, Some(at.step - 1))?;
            let v = evaluate(loaded, &val, opts.comm)?;
            let bpb = data.tokens().bits_per_byte(v);
            at.val_loss = Some(v);
            print_line(
                &bar,
                &format!(
                    "{:<8} {:<8} step {:>6}  val_loss {v:.4}  val_bpb {bpb:.4}",
                    run.name, stage.name, at.step
                ),
            );
            metrics
                .log(&json!({ "kind": "eval", "run": run.name, "stage": stage.name, "step": at.step, "val_loss": v,
                    "val_bpb": bpb, "tokens": at.progress.tokens, "flops": at.progress.flops,
                    "seconds": at.progress.seconds }))
                .map_err(io("writing metrics"))?;
            if let Some(target) = &stage.until {
                let hit = if target.strict {
                    v < target.value
                } else {
                    v <= target.value
                };
                if hit {
                    print_line(
                        &bar,
                        &format!(
                            "{:<8} {:<8} reached val_loss {v:.4} at step {}",
                            run.name, stage.name, at.step
                        ),
                    );
                    break;
                }
            }
        }
        if at.step.is_multiple_of(t.checkpoint_every) && at.step < end && opts.writes() {
            let st = read_state(loaded, &stage.model)?;
            at.progress.seconds = clock.seconds();
            let taken = taken(run, si, at, metrics, opts);
            save_checkpoint(ckpt_dir, &st, &taken, opts)?;
        }
        if eval_now {
            // Evaluation time is not training time.
            window = Instant::now();
            window_steps = 0;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(())
}

/// The first tensor of a failed step that is not finite, in the order the
/// step computes them: its logits (where the program keeps them), its
/// loss, its gradients (through their norm), then each parameter and
/// moment after the update.
fn first_nonfinite(l: &Loaded, loss: f32) -> Result<String, TrainError> {
    let finite = |x: &[f32]| x.iter().all(|v| v.is_finite());
    if !loss.is_finite() {
        let forward = l.grads.as_ref().unwrap_or(&l.step);
        let logits_bad = forward.read(Storage::Logits).is_ok_and(|x| !finite(&x));
        return Ok(if logits_bad {
            "the logits (the forward pass overflowed)".into()
        } else {
            "the loss".into()
        });
    }
    for (i, spec) in l.specs.iter().enumerate() {
        if !finite(&l.step.read(Storage::Param(i))?) {
            return Ok(format!(
                "the gradients, then `{}` after the update",
                spec.name
            ));
        }
    }
    for (i, spec) in l.specs.iter().enumerate() {
        for (s, what) in [(Storage::AdamM(i), "adam_m"), (Storage::AdamV(i), "adam_v")] {
            if !finite(&l.step.read(s)?) {
                return Ok(format!("the gradients, then `{what}.{}`", spec.name));
            }
        }
    }
    Ok("the gradients (their norm overflowed)".into())
}

fn progress_bar(
    show: bool,
    stage: &StagePlan,
    at: u64,
    end: u64,
) -> Option<indicatif::ProgressBar> {
    if !show || end == u64::MAX {
        return None;
    }
    let bar = indicatif::ProgressBar::new(end);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps, eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("stage {}", stage.name));
    bar.set_position(at);
    Some(bar)
}

fn print_line(bar: &Option<indicatif::ProgressBar>, line: &str) {
    match bar {
        Some(b) => b.println(line),
        None => println!("{line}"),
    }
}

/// Grows the previous stage's state into `stage`'s shape, checking on a fixed
/// batch that exact steps keep the loss.
#[allow(clippy::too_many_arguments)]
fn grow_between(
    prev: &ModelState,
    stage: &StagePlan,
    si: usize,
    step: u64,
    progress: Progress,
    corpus: &Corpus,
    metrics: &mut Metrics,
    opts: &Options,
    run: &str,
) -> Result<ModelState, TrainError> {
    let started = Instant::now();
    let mut st = prev.clone();
    for (k, g) in stage.growth.iter().enumerate() {
        let seed = stage.train.seed ^ (step << 8) ^ k as u64;
        st = grow(&st, g, seed).map_err(|source| TrainError::Grow {
            stage: stage.name.clone(),
            source,
        })?;
    }
    if st.config != stage.model {
        return Err(TrainError::Inconsistent(format!(
            "growth into stage `{}` produced a model that differs from the plan: {:?}, planned {:?}",
            stage.name,
            st.config,
            stage.model
        )));
    }
    // The check runs both models at the old context on one fixed batch,
    // with the programs compiled with the stage (or compiled now, for an
    // artifact from before they were).
    let context = prev.config.context;
    let data = corpus.dataset(context)?;
    let batch = data
        .val_batches(1, GrowthCheck::batch(stage.train.batch))
        .remove(0);
    let check = match opts
        .artifact
        .stage(run, &stage.name)
        .and_then(|s| s.growth_check.clone())
    {
        Some(c) => c,
        None => GrowthCheck::compile(&prev.config, stage)
            .map_err(|source| TrainError::Compile {
                stage: stage.name.clone(),
                source,
            })?
            .ok_or_else(|| TrainError::Inconsistent("a growth that changes nothing".into()))?,
    };
    let (before, logits_before) = forward_once(&check.before, &batch, prev, None, opts.backend)?;
    // The new units' gates at 0: where their ramps start.
    let (after, logits_after) = forward_once(&check.after, &batch, &st, Some(stage), opts.backend)?;
    let max_dlogit = logits_before
        .iter()
        .zip(&logits_after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max) as f64;
    let exact = stage.growth.iter().all(|g| g.exact);
    let tolerance = 1e-3 * before.abs().max(1.0);
    // Every rank grew the same state with the same seeds: the same bits.
    let digest = dist::digest(
        st.params
            .iter()
            .chain(&st.m)
            .chain(&st.v)
            .map(Vec::as_slice),
    );
    let ranks = opts.comm.ranks();
    if ranks > 1 {
        println!(
            "{run:<8} grow into {}: rank {} holds parameters and moments {digest:016x}",
            stage.name,
            opts.comm.rank()
        );
        if opts.comm.min(digest) != opts.comm.max(digest) {
            return Err(TrainError::Ranks(format!(
                "after growing into stage `{}`, the {ranks} ranks hold different parameters \
                 or moments",
                stage.name
            )));
        }
    }
    metrics
        .log(&json!({
            "kind": "growth", "run": run, "stage": stage.name, "stage_index": si, "step": step,
            "loss_before": before, "loss_after": after, "max_abs_dlogits": max_dlogit, "exact": exact,
            "state_digest": format!("{digest:016x}"),
            "steps": stage.growth, "seconds": started.elapsed().as_secs_f64(),
            "params_before": prev.config.param_count(), "params_after": st.config.param_count(),
            "tokens": progress.tokens, "flops": progress.flops,
        }))
        .map_err(io("writing metrics"))?;
    println!(
        "{run:<8} grow into {}: {} → {} params, loss on a fixed batch {before:.4} → {after:.4} (max |Δ logits| {max_dlogit:.2e}){}",
        stage.name,
        prev.config.param_count(),
        st.config.param_count(),
        if exact { "" } else { ", not exact by design" }
    );
    if exact && (after - before).abs() > tolerance {
        return Err(TrainError::NotPreserved {
            stage: stage.name.clone(),
            before,
            after,
            max_dlogit,
            tolerance,
        });
    }
    Ok(st)
}

/// Loss and logits of the forward pass `program` with parameters `st` on
/// one batch; with the gates of `gated`'s ramps at 0, if given.
fn forward_once(
    program: &KernelProgram,
    batch: &Batch,
    st: &ModelState,
    gated: Option<&StagePlan>,
    backend: &dyn Backend,
) -> Result<(f64, Vec<f32>), TrainError> {
    let mut p = backend.load(program)?;
    for (i, w) in st.params.iter().enumerate() {
        p.write(Storage::Param(i), &to_f32(w))?;
    }
    if let Some(stage) = gated {
        write_gates(p.as_mut(), stage, None)?;
    }
    p.write_ints(Storage::Tokens, &ints(&batch.inputs))?;
    p.write_ints(Storage::Targets, &ints(&batch.targets))?;
    p.run()?;
    Ok((
        f64::from(p.read(Storage::Loss)?[0]),
        p.read(Storage::Logits)?,
    ))
}

fn checkpoint_name(step: u64) -> String {
    format!("step-{step:09}.safetensors")
}

/// The checkpoint of the state just `before` or `after` the growth into
/// stage `si`; periodic pruning leaves these alone.
fn growth_name(si: usize, when: &str) -> String {
    format!("growth-{si:02}-{when}.safetensors")
}

fn taken<'a>(
    run: &'a RunPlan,
    stage: usize,
    at: &'a Cursor,
    metrics: &Metrics,
    opts: &Options<'a>,
) -> Taken<'a> {
    Taken {
        run,
        stage,
        at,
        stage_done: false,
        records: metrics.count(&run.name),
        source: opts.source_hash,
    }
}

/// Writes a periodic checkpoint and prunes the older ones (on rank 0: the
/// other ranks hold the same state).
fn save_checkpoint(
    dir: &Path,
    st: &ModelState,
    taken: &Taken,
    opts: &Options,
) -> Result<(), TrainError> {
    if !opts.writes() {
        return Ok(());
    }
    save_state(&dir.join(checkpoint_name(taken.at.step)), st, taken)?;
    prune(dir, opts.keep_checkpoints)
        .map_err(io(format!("pruning checkpoints in {}", dir.display())))
}

/// `to` as a second name of the file `from` (a copy where the file system
/// has no hard links), replacing what `to` held.
fn link(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(drop))
}

/// Parameters and Adam moments of `st`, taken at `taken`, written
/// atomically to `path`.
fn save_state(path: &Path, st: &ModelState, taken: &Taken) -> Result<(), TrainError> {
    let specs = st.config.params();
    let data: Vec<[Vec<f32>; 3]> = (0..specs.len())
        .map(|i| [to_f32(&st.params[i]), to_f32(&st.m[i]), to_f32(&st.v[i])])
        .collect();
    let names: Vec<[String; 3]> = specs
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                format!("adam_m.{}", s.name),
                format!("adam_v.{}", s.name),
            ]
        })
        .collect();
    let mut tensors = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        for k in 0..3 {
            tensors.push(TensorRef {
                name: &names[i][k],
                shape: &s.shape,
                data: &data[i][k],
            });
        }
    }
    let stage = &taken.run.stages[taken.stage];
    let meta = json!({ "run": taken.run.name, "stage": stage.name, "stage_index": taken.stage,
        "step": taken.at.step, "model": st.config, "progress": taken.at.progress,
        "val_loss": taken.at.val_loss, "faults": taken.at.faults, "stage_done": taken.stage_done,
        "records": taken.records, "source": taken.source });
    Ok(checkpoint::save(path, &tensors, &meta)?)
}

fn checkpoint_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files_named(dir, |n| n.starts_with("step-"))
}

/// The files of `dir` whose name `keep` accepts, sorted by name.
fn files_named(dir: &Path, keep: impl Fn(&str) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".safetensors") && keep(n))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let files = checkpoint_files(dir)?;
    for f in files.iter().take(files.len().saturating_sub(keep.max(1))) {
        std::fs::remove_file(f)?;
    }
    Ok(())
}

/// Every checkpoint of the run in `dir` a resume may start from (the
/// periodic ones and those around growths), newest first by the step and
/// stage their headers name; files whose header cannot be read come last.
fn resume_candidates(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = files_named(dir, |n| !n.starts_with('.'))?;
    let key = |p: &PathBuf| {
        checkpoint::peek_metadata(p).map(|m| (m["step"].as_u64(), m["stage_index"].as_u64()))
    };
    files.sort_by_cached_key(|p| std::cmp::Reverse(key(p)));
    Ok(files)
}

/// The newest checkpoint of `run` under `dir` that verifies and belongs to
/// this run and plan, as the state to continue from; each newer one refused
/// is named, and none at all (or none good) starts the run afresh.
fn resume_point(
    dir: &Path,
    run: &RunPlan,
    source: &str,
    writes: bool,
) -> Result<Option<Resume>, TrainError> {
    // A process killed mid-write leaves its temporary file behind.
    let tmp = files_named(dir, |n| n.starts_with('.') && n.contains(".tmp-"));
    for f in tmp.unwrap_or_default().into_iter().filter(|_| writes) {
        let _ = std::fs::remove_file(f);
    }
    let files = resume_candidates(dir).map_err(io(format!("listing {}", dir.display())))?;
    let mut refused = 0;
    for path in &files {
        match load_resume(path, run, source) {
            Ok(r) => {
                if refused > 0 {
                    eprintln!(
                        "{:<8} resuming from {} (step {}), the newest good checkpoint",
                        run.name,
                        path.display(),
                        r.at.step
                    );
                }
                return Ok(Some(r));
            }
            Err(e) => {
                refused += 1;
                eprintln!("warning: {e}: skipping it");
            }
        }
    }
    if refused > 0 {
        eprintln!(
            "warning: no usable checkpoint of run `{}` in {}: it starts from the beginning",
            run.name,
            dir.display()
        );
    }
    Ok(None)
}

/// The checkpoint at `path` as the state to continue `run` from.
fn load_resume(path: &Path, run: &RunPlan, source: &str) -> Result<Resume, TrainError> {
    let ck = Checkpoint::load(path)?;
    let meta = &ck.metadata;
    let refuse = |why: String| TrainError::Resume(format!("checkpoint {} {why}", path.display()));
    if meta["run"] != run.name.as_str() {
        return Err(refuse(format!(
            "belongs to run {}, not `{}`",
            meta["run"], run.name
        )));
    }
    if meta["source"] != source {
        return Err(refuse(
            "was written from another source file or other overrides".into(),
        ));
    }
    let (Some(stage), Some(step)) = (meta["stage_index"].as_u64(), meta["step"].as_u64()) else {
        return Err(refuse("has no stage and step in its metadata".into()));
    };
    let Some(plan_stage) = run.stages.get(stage as usize) else {
        return Err(refuse(format!(
            "is from stage {stage}, which the plan does not have"
        )));
    };
    let config = plan_stage.model.clone();
    if meta["model"] != json!(config) {
        return Err(refuse(format!(
            "holds another model than stage `{}` of the plan",
            plan_stage.name
        )));
    }
    let specs = config.params();
    let expected: Vec<(String, &[usize])> = specs
        .iter()
        .flat_map(|s| {
            [
                (s.name.clone(), &s.shape[..]),
                (format!("adam_m.{}", s.name), &s.shape[..]),
                (format!("adam_v.{}", s.name), &s.shape[..]),
            ]
        })
        .collect();
    ck.validate(expected.iter().map(|(n, s)| (n.as_str(), *s)))?;
    let mut state = ModelState {
        config,
        params: Vec::new(),
        m: Vec::new(),
        v: Vec::new(),
    };
    for s in &specs {
        state.params.push(to_f64(ck.tensor(&s.name, &s.shape)?));
        state
            .m
            .push(to_f64(ck.tensor(&format!("adam_m.{}", s.name), &s.shape)?));
        state
            .v
            .push(to_f64(ck.tensor(&format!("adam_v.{}", s.name), &s.shape)?));
    }
    // A checkpoint at the very end of a stage continues with the next one.
    let stage = stage as usize;
    let finished = meta["stage_done"] == true;
    let stage = if finished { stage + 1 } else { stage };
    fn parse<T: serde::de::DeserializeOwned>(meta: &serde_json::Value, key: &str) -> Option<T> {
        serde_json::from_value(meta[key].clone()).ok()
    }
    Ok(Resume {
        stage,
        state,
        at: Cursor {
            step,
            progress: parse(meta, "progress").unwrap_or_default(),
            val_loss: meta["val_loss"].as_f64(),
            faults: parse(meta, "faults").unwrap_or_default(),
        },
        records: meta["records"].as_u64().unwrap_or(0),
    })
}

/// The newest checkpoint of `run` that loads and verifies, if any: what a
/// failed run leaves to resume from.
pub fn newest_good_checkpoint(dir: &RunDir, run: &RunPlan) -> Option<(PathBuf, u64)> {
    let dir = dir.checkpoints().join(&run.name);
    resume_candidates(&dir).ok()?.into_iter().find_map(|p| {
        let ck = Checkpoint::load(&p).ok()?;
        let step = ck.metadata["step"].as_u64()?;
        Some((p, step))
    })
}

#[cfg(test)]
mod tests {
    use super::Switch;

    #[test]
    fn long_stages_switch_code_at_a_step_fixed_by_their_compute() {
        let auto = Switch::Auto;
        // Workload S: 90 GFLOP a step; 1,000 steps from step 200.
        let s = 9.0e10;
        assert_eq!(auto.step_of(200, Some(1000.0 * s), s), Some(212));
        // Too short to pay for the compile: 30 steps.
        assert_eq!(auto.step_of(200, Some(30.0 * s), s), None);
        // Uncapped `until` stages are long.
        assert_eq!(auto.step_of(0, None, s), Some(12));
        // A step of more than the compute to wait: the next one.
        assert_eq!(auto.step_of(5, Some(1e13), 4e12), Some(6));
        // Forced either way.
        assert_eq!(Switch::Always.step_of(7, Some(1.0), 1.0), Some(8));
        assert_eq!(Switch::Never.step_of(7, None, s), None);
    }
}
