//! Kill anywhere: a run with a growth is SIGKILLed at random moments — in
//! start-up, a step, an evaluation, a checkpoint write, a growth — and
//! resumed each time; it must end with the parameters, Adam moments and
//! metrics of an uninterrupted run, bit for bit (metrics without their
//! wall-clock fields). `GSC_KILLS` sets the number of kills (a few in the
//! suite; `scripts/kill-test N` for the long version), `GSC_KILL_SEED` the
//! random moments.

mod common;

use common::{checkpoint_parts, fresh, gsc, step_checkpoints};
use gsc_runtime::rng::SplitMix64;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILE: &str = "tests/fixtures/resume.gs";

/// Fields that measure time or memory, which no two runs share.
const CLOCK_FIELDS: &[&str] = &["ms_per_step", "tokens_per_s", "mfu", "seconds", "peak_rss"];

/// What a finished run leaves that must not depend on its kills.
struct Outcome {
    tensors: Vec<u8>,
    metrics: Vec<serde_json::Value>,
}

fn outcome(dir: &Path) -> Outcome {
    let last = step_checkpoints(dir, "tiny")
        .pop()
        .expect("a final checkpoint");
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).expect("whole lines only");
            for f in CLOCK_FIELDS {
                r.as_object_mut().unwrap().remove(*f);
            }
            r
        })
        .collect();
    Outcome {
        tensors: checkpoint_parts(&last).0,
        metrics,
    }
}

/// What the run was doing when it was killed: writing a checkpoint if it
/// left its temporary file; growing if the first stage's final checkpoint
/// exists and the grown state's does not; else what it printed last.
fn moment(dir: Option<&Path>, stdout: &str) -> &'static str {
    let names: Vec<String> = dir
        .and_then(|d| std::fs::read_dir(d.join("checkpoints/tiny")).ok())
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let has = |n: &str| names.iter().any(|f| f.contains(n));
    let last = stdout.lines().last().unwrap_or("");
    if has(".tmp-") {
        "checkpoint write"
    } else if has("step-000000040") && !has("growth-01-after") || last.contains("grow into") {
        "growth"
    } else if last.contains("val_loss") {
        "evaluation"
    } else if last.contains(" step ") {
        "step"
    } else {
        "start-up"
    }
}

/// Runs `cmd`, SIGKILLing it after `after` unless it ends first; whether
/// it was killed, and what it printed.
fn run_until(cmd: &mut Command, after: Duration) -> (bool, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let killed = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = err.join().unwrap();
            assert!(status.success(), "the run failed: {status}\n{err}");
            break false;
        }
        if started.elapsed() >= after {
            child.kill().unwrap();
            child.wait().unwrap();
            break true;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    (killed, out.join().unwrap())
}

#[test]
fn killed_anywhere_and_resumed_equals_uninterrupted() {
    let keep = std::env::var("GSC_KILL_KEEP").is_ok();
    let kills: usize = std::env::var("GSC_KILLS").map_or(3, |v| v.parse().expect("GSC_KILLS"));
    let seed: u64 = std::env::var("GSC_KILL_SEED").map_or(1, |v| v.parse().expect("GSC_KILL_SEED"));
    let root = fresh("kill");
    // Every run shares one runs folder, and so the artifact cache: after the
    // first, a run's start-up is as short as a resume's.
    let runs = root.join("runs");
    let start = || {
        let mut c = gsc();
        c.args(["run", FILE, "--runs-dir"]).arg(&runs);
        c
    };
    let dirs = || -> Vec<PathBuf> {
        std::fs::read_dir(&runs)
            .map(|it| it.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default()
    };
    let (_, _) = run_until(&mut start(), Duration::MAX);
    let started = Instant::now();
    let (_, _) = run_until(&mut start(), Duration::MAX);
    let span = started.elapsed();
    let reference = outcome(&dirs().into_iter().find(|d| !d.ends_with(".cache")).unwrap());

    // The kill moments, reproducible from the seed.
    let mut rng = SplitMix64::new(seed);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut done, mut rounds) = (0, 0);
    while done < kills {
        // One round: a fresh run, killed and resumed until it finishes.
        rounds += 1;
        let mut before = dirs();
        let mut dir: Option<PathBuf> = None;
        loop {
            let mut cmd = match &dir {
                None => start(),
                Some(d) => {
                    let mut c = gsc();
                    c.arg("run").arg("--resume").arg(d);
                    c
                }
            };
            let after = if done < kills {
                span.mul_f64(rng.uniform())
            } else {
                Duration::MAX
            };
            let (killed, stdout) = run_until(&mut cmd, after);
            // A run killed before it made its directory (or wrote its
            // run.json, which comes first) starts again.
            dir = dir.or_else(|| {
                dirs()
                    .into_iter()
                    .find(|d| !before.contains(d) && d.join("run.json").is_file())
            });
            if !killed {
                break;
            }
            if dir.is_none() {
                before = dirs();
            }
            done += 1;
            *seen.entry(moment(dir.as_deref(), &stdout)).or_default() += 1;
            eprintln!(
                "DEBUG {after:?} {} {:?}",
                moment(dir.as_deref(), &stdout),
                stdout.lines().last()
            );
        }
        let dir = dir.expect("a finished run has a directory");
        let got = outcome(&dir);
        assert!(
            got.tensors == reference.tensors,
            "round {rounds} (seed {seed}): other parameters or moments than the uninterrupted run: {}",
            dir.display()
        );
        let first_difference = (0..got.metrics.len().max(reference.metrics.len()))
            .find(|&i| got.metrics.get(i) != reference.metrics.get(i));
        if let Some(i) = first_difference {
            panic!(
                "round {rounds} (seed {seed}): metrics.jsonl differs from the uninterrupted run's at record {i}: {:?} against {:?} ({})",
                got.metrics.get(i),
                reference.metrics.get(i),
                dir.display()
            );
        }
    }
    let moments: Vec<String> = seen.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "kill-test: {done} kills survived bit-identically out of {done}, in {rounds} runs \
         (seed {seed}; killed in {})",
        moments.join(", ")
    );
    if !keep {
        let _ = std::fs::remove_dir_all(&root);
    }
}
