//! The run directory `runs/<name>-<id>/`: a self-describing record of a run —
//! `run.json` (source, compiler and runtime versions, artifact hash, machine),
//! `metrics.jsonl` (one object per logged step, eval and growth) and
//! `checkpoints/`.

use crate::fsutil::write_atomic;
use crate::machine::Machine;
use crate::run::train::DataFile;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// The `.gs` file, made absolute.
    pub source_path: String,
    pub source: String,
    /// `--set` overrides, in order.
    pub overrides: Vec<String>,
    pub compiler_version: String,
    /// The runtime that started the run (`gsc_runtime::VERSION`); empty in
    /// run directories from before it was recorded.
    #[serde(default)]
    pub runtime_version: String,
    /// Content hash of the compiled artifact (source, overrides, compiler version).
    pub artifact_hash: String,
    pub backend: String,
    pub machine: Machine,
    pub started_unix: u64,
    /// The one run `--run` chose, if any: a resume continues only it.
    #[serde(default)]
    pub only_run: Option<String>,
    /// `--max-stage-steps`: every stage was cut to at most this many steps.
    #[serde(default)]
    pub max_stage_steps: Option<u64>,
    /// `--keep-checkpoints`, if given: kept by a resume that does not give it.
    #[serde(default)]
    pub keep_checkpoints: Option<usize>,
    /// The data files and their hashes, as the run last read them; empty in
    /// run directories from before they were recorded.
    #[serde(default)]
    pub data: Vec<DataFile>,
}

pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Creates `root/<name>-<utc timestamp>` (with a suffix if it exists).
    pub fn create(root: &Path, name: &str) -> std::io::Result<RunDir> {
        std::fs::create_dir_all(root)?;
        let stamp = utc_stamp(unix_now());
        // `create_dir` fails on an existing folder, so that runs started
        // in the same second (an experiment's, side by side) never share one.
        for n in 1.. {
            let path = match n {
                1 => root.join(format!("{name}-{stamp}")),
                n => root.join(format!("{name}-{stamp}-{n}")),
            };
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::create_dir_all(path.join("checkpoints"))?;
                    return Ok(RunDir { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the suffixes are unbounded")
    }

    pub fn open(path: &Path) -> std::io::Result<RunDir> {
        if !path.join("run.json").is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("`{}` is not a run directory (no run.json)", path.display()),
            ));
        }
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    pub fn write_manifest(&self, m: &Manifest) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?;
        write_atomic(&self.path.join("run.json"), &json)
    }

    pub fn manifest(&self) -> std::io::Result<Manifest> {
        let bytes = std::fs::read(self.path.join("run.json"))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path.join("run.json").display()),
            )
        })
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
}

/// `metrics.jsonl`, appended one line at a time and flushed, so a killed run
/// keeps every line it logged. It counts each run's records: a checkpoint
/// stores its run's count, and a resume from it drops the records logged
/// after it, which the resumed run logs again.
pub struct Metrics {
    path: PathBuf,
    /// `None` for a rank other than 0, which counts what it would log but
    /// leaves the file to rank 0.
    file: Option<std::fs::File>,
    counts: HashMap<String, u64>,
}

impl Metrics {
    /// Opens the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Metrics> {
        Ok(Metrics {
            file: Some(append(path)?),
            ..Metrics::mirror(path)?
        })
    }

    /// The log as a rank that does not write it sees it: records counted
    /// as [`Metrics::open`] counts them, nothing written.
    pub fn mirror(path: &Path) -> std::io::Result<Metrics> {
        let mut counts = HashMap::new();
        for r in Metrics::records(path)? {
            *counts.entry(run_of(&r)).or_default() += 1;
        }
        Ok(Metrics {
            path: path.to_owned(),
            file: None,
            counts,
        })
    }

    /// Every record logged so far (unreadable lines, from a kill mid-write, are skipped).
    pub fn records(path: &Path) -> std::io::Result<Vec<serde_json::Value>> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(std::io::BufReader::new(std::fs::File::open(path)?)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect())
    }

    /// Records of `run` logged so far.
    pub fn count(&self, run: &str) -> u64 {
        self.counts.get(run).copied().unwrap_or(0)
    }

    /// Keeps the first `keep` records of `run` (and every other run's),
    /// dropping what a killed process logged after the checkpoint a resume
    /// starts from, and any line it left half-written.
    pub fn truncate_run(&mut self, run: &str, keep: u64) -> std::io::Result<()> {
        if self.file.is_none() {
            let seen = self.count(run);
            self.counts.insert(run.to_owned(), keep.min(seen));
            return Ok(());
        }
        let mut seen = 0;
        let mut text = String::new();
        for r in Metrics::records(&self.path)? {
            if run_of(&r) == run {
                seen += 1;
                if seen > keep {
                    continue;
                }
            }
            text.push_str(&r.to_string());
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes())?;
        // The rename replaced the file: append to the new one.
        self.file = Some(append(&self.path)?);
        self.counts.insert(run.to_owned(), keep.min(seen));
        Ok(())
    }

    pub fn log(&mut self, record: &serde_json::Value) -> std::io::Result<()> {
        if let Some(file) = &mut self.file {
            let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
            line.push('\n');
            file.write_all(line.as_bytes())?;
            file.flush()?;
        }
        *self.counts.entry(run_of(record)).or_default() += 1;
        Ok(())
    }
}

fn run_of(record: &serde_json::Value) -> String {
    record["run"].as_str().unwrap_or_default().to_owned()
}

fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYYMMDD-HHMMSS` in UTC, from seconds since the epoch (civil-from-days).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2026-11-28 07:53:35 UTC
        assert_eq!(utc_stamp(1_795_852_415), "20261128-075335");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }

    #[test]
    fn metrics_resume_drops_lines_after_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("gsc-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let mut m = Metrics::open(&path).unwrap();
        for step in [10, 20, 30] {
            m.log(&serde_json::json!({ "run": "a", "step": step, "loss": 1.0 }))
                .unwrap();
        }
        m.log(&serde_json::json!({ "run": "b", "step": 10 }))
            .unwrap();
        drop(m);
        // A kill mid-line leaves half a record.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"run\":\"a\",\"st")
            .unwrap();
        let mut m = Metrics::open(&path).unwrap();
        assert_eq!((m.count("a"), m.count("b")), (3, 1));
        m.truncate_run("a", 2).unwrap();
        m.log(&serde_json::json!({ "run": "a", "step": 30, "loss": 0.5 }))
            .unwrap();
        assert_eq!(m.count("a"), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.lines().last().unwrap().contains("0.5"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
