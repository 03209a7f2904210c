//! The runs of the given run directories, as a report reads them: each
//! run's `run_start` record (kind, architecture, seed, stage sizes), its
//! evaluations and growths with the tokens, FLOPs and seconds spent by then.

use gsc_runtime::run::dir::{Metrics, RunDir};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a run had spent at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spent {
    pub flops: f64,
    pub tokens: f64,
    pub seconds: f64,
}

impl Spent {
    fn of(r: &Value) -> Spent {
        Spent {
            flops: r["flops"].as_f64().unwrap_or(0.0),
            tokens: r["tokens"].as_f64().unwrap_or(0.0),
            seconds: r["seconds"].as_f64().unwrap_or(0.0),
        }
    }

    /// `self + t·(other − self)`.
    pub fn lerp(&self, other: &Spent, t: f64) -> Spent {
        let mix = |a: f64, b: f64| a + t * (b - a);
        Spent {
            flops: mix(self.flops, other.flops),
            tokens: mix(self.tokens, other.tokens),
            seconds: mix(self.seconds, other.seconds),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Eval {
    pub stage: String,
    pub at: Spent,
    /// The validation loss in the report's [`Unit`].
    pub loss: f64,
    /// In bits per byte, if the run logged it.
    pub bpb: Option<f64>,
}

/// What the report's losses are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bits per byte of the validation text: they compare across tokenizers.
    BitsPerByte,
    /// Nats per token, as the runs train on them.
    Nats,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::BitsPerByte => "bits per byte",
            Unit::Nats => "nats per token",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    pub params: u64,
    /// Tokens trained in this stage (from its last evaluation), if it ran.
    pub tokens: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Run {
    /// Unique among the runs of one report.
    pub label: String,
    pub name: String,
    pub dir: PathBuf,
    /// `schedule`, `scratch` or `doubling`.
    pub kind: String,
    pub arch: String,
    pub seed: u64,
    pub final_params: u64,
    pub overrides: Vec<String>,
    pub stages: Vec<Stage>,
    pub evals: Vec<Eval>,
    /// Where each growth happened, by the stage it grew into.
    pub growths: Vec<(String, Spent)>,
    /// What the whole run spent, if it finished.
    pub total: Option<Spent>,
}

impl Run {
    pub fn final_loss(&self) -> Option<f64> {
        self.evals.last().map(|e| e.loss)
    }

    /// Spent by the last record: the whole run if it finished.
    pub fn spent(&self) -> Spent {
        self.total
            .or_else(|| self.evals.last().map(|e| e.at))
            .unwrap_or_default()
    }
}

/// Every run of every directory, labelled so that no two labels are alike,
/// with its losses in bits per byte when every run logged them (runs with
/// different tokenizers compare only so), else in nats per token (runs
/// made before gsc logged bits per byte).
pub fn load(dirs: &[PathBuf]) -> Result<(Vec<Run>, Unit), String> {
    if dirs.is_empty() {
        return Err("give at least one run directory".into());
    }
    let mut runs = Vec::new();
    for dir in dirs {
        runs.extend(load_dir(dir)?);
    }
    if runs.is_empty() {
        return Err("the run directories hold no run that has started".into());
    }
    label(&mut runs);
    let evals = || runs.iter().flat_map(|r| &r.evals);
    if evals().all(|e| e.bpb.is_some()) {
        for e in runs.iter_mut().flat_map(|r| &mut r.evals) {
            e.loss = e.bpb.unwrap_or(e.loss);
        }
        return Ok((runs, Unit::BitsPerByte));
    }
    Ok((runs, Unit::Nats))
}

fn load_dir(path: &Path) -> Result<Vec<Run>, String> {
    let dir = RunDir::open(path).map_err(|e| e.to_string())?;
    let manifest = dir.manifest().map_err(|e| e.to_string())?;
    let records = Metrics::records(&dir.metrics_path())
        .map_err(|e| format!("reading {}: {e}", dir.metrics_path().display()))?;
    let mut runs = Vec::new();
    for start in records.iter().filter(|r| r["kind"] == "run_start") {
        let name = start["run"].as_str().unwrap_or_default().to_string();
        let own: Vec<&Value> = records.iter().filter(|r| r["run"] == *name).collect();
        let evals: Vec<Eval> = own
            .iter()
            .filter(|r| r["kind"] == "eval")
            .filter_map(|r| {
                Some(Eval {
                    stage: r["stage"].as_str()?.to_string(),
                    at: Spent::of(r),
                    loss: r["val_loss"].as_f64()?,
                    bpb: r["val_bpb"].as_f64(),
                })
            })
            .collect();
        let stages = stages(start, &evals);
        runs.push(Run {
            label: name.clone(),
            name,
            dir: path.to_path_buf(),
            kind: start["run_kind"].as_str().unwrap_or("schedule").to_string(),
            arch: start["arch"].as_str().unwrap_or("?").to_string(),
            seed: start["seed"].as_u64().unwrap_or(0),
            final_params: start["final_params"].as_u64().unwrap_or(0),
            overrides: manifest.overrides.clone(),
            stages,
            growths: own
                .iter()
                .filter(|r| r["kind"] == "growth")
                .map(|r| (r["stage"].as_str().unwrap_or("").to_string(), Spent::of(r)))
                .collect(),
            total: own
                .iter()
                .find(|r| r["kind"] == "run_end")
                .map(|r| Spent::of(r)),
            evals,
        });
    }
    if runs.is_empty() && !records.is_empty() {
        return Err(format!(
            "{}: its runs were started by a gsc that did not record what a report needs \
             (no `run_start` record): run them again",
            path.display()
        ));
    }
    Ok(runs)
}

/// Each stage's size, and the tokens it trained: the tokens at its last
/// evaluation (every stage evaluates at its end) less those before it.
fn stages(start: &Value, evals: &[Eval]) -> Vec<Stage> {
    let mut before = 0.0;
    let empty = Vec::new();
    start["stages"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or("").to_string();
            let end = evals
                .iter()
                .rev()
                .find(|e| e.stage == name)
                .map(|e| e.at.tokens);
            let tokens = end.map(|t| t - before);
            before = end.unwrap_or(before);
            Stage {
                name,
                params: s["params"].as_u64().unwrap_or(0),
                tokens,
            }
        })
        .collect()
}

/// A run's name, and where names repeat, the `--set` overrides that tell
/// the runs apart (or their directories).
fn label(runs: &mut [Run]) {
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for i in 0..runs.len() {
        let twins: Vec<usize> = (0..runs.len()).filter(|&j| names[j] == names[i]).collect();
        if twins.len() == 1 {
            continue;
        }
        let shared = |o: &String| twins.iter().all(|&j| runs[j].overrides.contains(o));
        let own: Vec<String> = runs[i]
            .overrides
            .iter()
            .filter(|o| !shared(o))
            .cloned()
            .collect();
        runs[i].label = if own.is_empty() {
            let dir = runs[i]
                .dir
                .file_name()
                .map_or(String::new(), |d| d.to_string_lossy().into_owned());
            format!("{} [{dir}]", names[i])
        } else {
            format!("{} ({})", names[i], own.join(", "))
        };
    }
}
