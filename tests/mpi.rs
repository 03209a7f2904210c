//! Data-parallel training under `mpirun` (the `mpi` feature): two ranks
//! train as one process does, hold the same state after every growth,
//! write one set of files, stop at the same step on a signal, go down
//! together when one of them dies, and the job resumes from its last
//! checkpoint on as many ranks or on another number.
//!
//! Tolerance of the equivalence: 5e-4 relative on every logged loss, and
//! 1e-5 on the gradient norms of the first 20 steps. Two ranks each average the loss and gradients over half
//! the batch, then the halves are averaged: the same sums as one process
//! (whose results do not depend on its thread count), added in another
//! order, in f32. That moves a gradient in its last bits (~1e-7
//! relative). AdamW divides by √v, so where a gradient is near zero — the
//! units a growth just added, nearly symmetric — such a difference becomes
//! an update of full size; on `examples/smoke.gs` the losses then differ
//! by up to 1.1e-4 (measured, five steps after the growth), 2e-5 at the
//! end. A gradient norm, the size of one batch's gradient, is far more
//! sensitive: once the trajectories have parted in their last bits (from
//! step 35 on) the two runs' norms differ by up to 1.5 %, so they are
//! compared where both runs still follow one trajectory (to 7e-7
//! measured). A bug (a share counted twice or not at all, gradients summed
//! but not averaged, ranks out of step) moves the losses or the first
//! gradient norms by percents.

#![cfg(feature = "mpi")]

mod common;

use common::{fresh, gsc, run_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mpirun(ranks: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-n", &ranks.to_string()])
        // CI runs as root; two ranks fit any machine this runs on.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg("--oversubscribe")
        .arg(env!("CARGO_BIN_EXE_gsc"));
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().expect("mpirun or gsc runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{c:?} failed:\n{text}");
    text
}

fn records(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// `field` of every record of `kind`, with its step.
fn series(dir: &Path, kind: &str, field: &str) -> Vec<(u64, f64)> {
    records(dir, kind)
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r[field].as_f64().unwrap()))
        .collect()
}

/// The largest relative difference between two series of the same steps.
fn max_relative(a: &[(u64, f64)], b: &[(u64, f64)]) -> f64 {
    assert_eq!(a.len(), b.len(), "records: {a:?} against {b:?}");
    assert!(!a.is_empty());
    let mut worst = 0f64;
    for ((s1, x1), (s2, x2)) in a.iter().zip(b) {
        assert_eq!(s1, s2);
        worst = worst.max((x1 - x2).abs() / x1.abs());
    }
    worst
}

/// The (step, loss) of every step record and (step, val_loss) of every eval.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    let mut v = series(dir, "step", "loss");
    v.extend(
        records(dir, "eval")
            .iter()
            .map(|r| (r["step"].as_u64().unwrap(), r["val_loss"].as_f64().unwrap())),
    );
    v
}

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/smoke.gs")
}

#[test]
fn two_ranks_train_as_one_process_through_growth() {
    let root = fresh("mpi-equal");
    let one = root.join("one");
    let two = root.join("two");
    let mut c = gsc();
    c.arg("run").arg(smoke()).arg("--runs-dir").arg(&one);
    ok(c);
    let mut c = mpirun(2);
    c.arg("run")
        .arg(smoke())
        .arg("--runs-dir")
        .arg(&two)
        .arg("--rank-logs");
    ok(c);
    let (one, two) = (run_dir(&one), run_dir(&two));
    let loss = max_relative(&losses(&one), &losses(&two));
    let early = |d: &Path| -> Vec<(u64, f64)> {
        let mut v = series(d, "step", "grad_norm");
        v.retain(|(s, _)| *s <= 20);
        v
    };
    let norm = max_relative(&early(&one), &early(&two));
    eprintln!(
        "2 ranks against 1 process: losses within {loss:.2e}, gradient norms of the first \
         20 steps within {norm:.2e} (relative)"
    );
    assert!(loss <= 5e-4, "the losses of 2 ranks differ by {loss:e}");
    assert!(
        norm <= 1e-5,
        "the gradient norms of 2 ranks differ by {norm:e}"
    );

    // Rank 0 alone wrote the metrics; each rank logged the state it holds
    // after the growth, and they are the same bits.
    assert_eq!(records(&two, "run_end").len(), 1);
    assert_eq!(records(&two, "growth").len(), 1);
    let digests: Vec<Vec<String>> = (0..2)
        .map(|r| {
            let log = std::fs::read_to_string(two.join(format!("ranks/rank-{r}.log"))).unwrap();
            assert!(log.starts_with(&format!("rank {r} of 2: pid ")), "{log}");
            log.lines()
                .filter(|l| l.contains("holds parameters and moments"))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(digests[0].len(), 1, "{digests:?}");
    assert_eq!(digests[0], digests[1]);
    let logged = records(&two, "growth")[0]["state_digest"].clone();
    assert_eq!(logged, digests[0][0].as_str());

    // Both runs resume on two ranks from the state just after the growth:
    // the two ranks' run repeats its own numbers exactly, one process's
    // run goes on within the tolerance.
    let (before_two, before_one) = (losses(&two), losses(&one));
    for (dir, before, tolerance) in [(&two, &before_two, 0.0), (&one, &before_one, 5e-4)] {
        back_to_the_growth(dir);
        let mut c = mpirun(2);
        c.arg("run").arg("--resume").arg(dir);
        ok(c);
        let after = losses(dir);
        let worst = max_relative(before, &after);
        assert!(
            worst <= tolerance,
            "{}: resumed on 2 ranks, the losses differ by {worst:e}",
            dir.display()
        );
    }
}

/// Run directory `dir` as if its run had been killed just after its
/// growth: the checkpoints after it are gone, and so is its end.
fn back_to_the_growth(dir: &Path) {
    for f in common::step_checkpoints(dir, "tiny") {
        let meta = common::checkpoint_parts(&f).1;
        if meta["step"].as_u64().unwrap() > 40 {
            std::fs::remove_file(f).unwrap();
        }
    }
    common::unfinish(dir);
}

#[test]
fn a_batch_that_does_not_divide_among_the_ranks_is_refused() {
    let root = fresh("mpi-batch");
    let mut c = mpirun(3);
    c.arg("run")
        .arg(smoke())
        .arg("--runs-dir")
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "stage `tiny.small`: a global batch of 8 sequences does not divide among 3 ranks"
        ),
        "{err}"
    );
}

/// The newest step logged in the run directory under `root`, if any.
fn logged_step(root: &Path) -> Option<u64> {
    let dir = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir() && !p.ends_with(".cache"))?;
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "step")
        .filter_map(|r| r["step"].as_u64())
        .max()
}

/// `tests/fixtures/ranks.gs` on two ranks logging to files, under `root`,
/// once it has trained past its growth (step 40) and a checkpoint after it.
fn job_past_the_growth(root: &Path) -> std::process::Child {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ranks.gs");
    let mut c = mpirun(2);
    c.arg("run")
        .arg(&file)
        .arg("--runs-dir")
        .arg(root)
        .arg("--rank-logs")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut job = c.spawn().unwrap();
    let started = Instant::now();
    while logged_step(root).is_none_or(|s| s < 70) {
        assert!(job.try_wait().unwrap().is_none(), "the job ended early");
        assert!(started.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    job
}

/// How `job` ended, within a minute.
fn ended(job: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let since = Instant::now();
    loop {
        if let Some(s) = job.try_wait().unwrap() {
            return s;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the job hangs after {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rank_log(dir: &Path, rank: usize) -> String {
    std::fs::read_to_string(dir.join(format!("ranks/rank-{rank}.log"))).unwrap()
}

#[test]
fn a_signal_stops_every_rank_at_the_same_step() {
    let root = fresh("mpi-signal");
    let mut job = job_past_the_growth(&root);
    // SAFETY: a signal to the mpirun this test started, which passes it on.
    assert_eq!(unsafe { libc::kill(job.id() as i32, libc::SIGTERM) }, 0);
    assert!(!ended(&mut job, "SIGTERM").success());
    let dir = run_dir(&root);
    let stopped: Vec<String> = (0..2)
        .map(|r| {
            let log = rank_log(&dir, r);
            let line = log
                .lines()
                .find(|l| l.contains("stopped by SIGTERM after step"));
            line.unwrap_or_else(|| panic!("rank {r}: {log}"))
                .split(" of stage")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(stopped[0], stopped[1]);
    let step: u64 = stopped[0].rsplit(' ').next().unwrap().parse().unwrap();
    let name = format!("checkpoints/m/step-{step:09}.safetensors");
    assert!(dir.join(&name).is_file(), "{name}");
    let mut c = mpirun(2);
    c.arg("run").arg("--resume").arg(&dir);
    ok(c);
    assert_eq!(records(&dir, "run_end")[0]["step"], 640);
}

#[test]
fn a_dead_rank_ends_the_job_which_resumes_on_one_rank() {
    let root = fresh("mpi-kill");
    let mut job = job_past_the_growth(&root);
    let dir = run_dir(&root);
    let log = rank_log(&dir, 1);
    let pid: i32 = log
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {log}"));
    // SAFETY: a signal to the rank this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = ended(&mut job, "a rank died");
    assert!(!status.success());
    let at = logged_step(&root).unwrap();
    assert!(at < 640, "the job trained on to step {at} without its rank");

    // One process resumes the two ranks' job from its last checkpoint.
    let mut c = gsc();
    c.arg("run").arg("--resume").arg(&dir);
    let out = ok(c);
    // From a checkpoint in stage b: stage a is not trained again.
    assert!(
        !out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["m", "a"])),
        "{out}"
    );
    let end = records(&dir, "run_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["step"], 640);
    // Every step logged once: what the dead job logged after its
    // checkpoint was dropped and trained again.
    let steps: Vec<u64> = records(&dir, "step")
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=640).collect::<Vec<u64>>());
}
