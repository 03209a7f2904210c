//! Which checkpoint `gsc export` and `gsc generate` read: a file named
//! directly, or one of a run directory's, chosen by run name and step.

use gsc_compiler::plan::ModelConfig;
use gsc_runtime::checkpoint::{peek_metadata, Checkpoint};
use std::path::{Path, PathBuf};

/// A verified checkpoint and what it holds.
pub struct Picked {
    pub ck: Checkpoint,
    pub model: ModelConfig,
    /// The run directory (`runs/NAME-STAMP`) the file belongs to, if it is
    /// in one: where the run's tokenizer is.
    pub run_dir: Option<PathBuf>,
}

impl Picked {
    /// `run NAME, stage S, step N`, for messages and model cards.
    pub fn describe(&self) -> String {
        let m = &self.ck.metadata;
        format!(
            "run {}, stage {}, step {}",
            m["run"].as_str().unwrap_or("?"),
            m["stage"].as_str().unwrap_or("?"),
            m["step"]
        )
    }
}

/// The checkpoint at `path` (a `.safetensors` file), or in the run directory
/// `path`: of run `run` (needed when it holds several), at `step` (by
/// default the newest). At a step with a growth, the grown model is taken;
/// name the `growth-NN-before` file to get the model before it.
pub fn pick(path: &Path, run: Option<&str>, step: Option<u64>) -> Result<Picked, String> {
    let (file, run_dir) = if path.is_file() {
        if run.is_some() || step.is_some() {
            return Err(format!(
                "{} is a checkpoint file: --run and --step choose within a run directory",
                path.display()
            ));
        }
        // runs/NAME-STAMP/checkpoints/RUN/FILE
        let run_dir = path
            .ancestors()
            .nth(3)
            .filter(|d| d.join("run.json").is_file());
        (path.to_owned(), run_dir.map(Path::to_owned))
    } else if path.is_dir() {
        (in_run_dir(path, run, step)?, Some(path.to_owned()))
    } else {
        return Err(format!(
            "{} is neither a run directory nor a checkpoint file",
            path.display()
        ));
    };
    let ck = Checkpoint::load(&file).map_err(|e| e.to_string())?;
    let model = serde_json::from_value(ck.metadata["model"].clone()).map_err(|e| {
        format!(
            "checkpoint {} does not describe its model: {e}",
            file.display()
        )
    })?;
    Ok(Picked { ck, model, run_dir })
}

fn in_run_dir(dir: &Path, run: Option<&str>, step: Option<u64>) -> Result<PathBuf, String> {
    let root = dir.join("checkpoints");
    let runs = subdirs(&root).map_err(|e| {
        format!(
            "{} is not a run directory (no readable checkpoints/ folder: {e})",
            dir.display()
        )
    })?;
    let run = match (run, runs.as_slice()) {
        (Some(r), _) if runs.iter().any(|n| n == r) => r.to_owned(),
        (Some(r), _) => {
            return Err(format!(
                "{} has no run `{r}`; its runs: {}",
                dir.display(),
                runs.join(", ")
            ))
        }
        (None, [only]) => only.clone(),
        (None, []) => return Err(format!("{} has no checkpoints yet", dir.display())),
        (None, _) => {
            return Err(format!(
                "{} holds several runs: choose one with --run ({})",
                dir.display(),
                runs.join(", ")
            ))
        }
    };
    // (step, stage index, path) of every readable header.
    let mut found: Vec<(u64, u64, PathBuf)> = std::fs::read_dir(root.join(&run))
        .map_err(|e| format!("{}: {e}", root.join(&run).display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|p| {
            let m = peek_metadata(&p)?;
            Some((m["step"].as_u64()?, m["stage_index"].as_u64()?, p))
        })
        .collect();
    found.sort();
    let steps = || {
        let mut s: Vec<String> = found.iter().map(|f| f.0.to_string()).collect();
        s.dedup();
        s.join(", ")
    };
    let chosen = match step {
        Some(n) => found.iter().rev().find(|f| f.0 == n).ok_or_else(|| {
            format!(
                "run `{run}` has no checkpoint at step {n}; it has steps {}",
                steps()
            )
        })?,
        None => found
            .last()
            .ok_or_else(|| format!("run `{run}` has no checkpoints yet"))?,
    };
    Ok(chosen.2.clone())
}

fn subdirs(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}
