//! Limits before work: a run that will not fit in memory or on disk is
//! refused before it trains, with the numbers, and before its run
//! directory exists; and the memory estimate bounds what a run takes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `gsc run` in `runs` with `env` set (and no limit from the caller's).
fn run(runs: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::gsc();
    c.arg("run")
        .args(args)
        .arg("--runs-dir")
        .arg(runs)
        .env_remove("GSC_MEMORY_AVAILABLE")
        .env_remove("GSC_DISK_AVAILABLE")
        .envs(env.iter().copied());
    c.output().expect("gsc runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The run directories under `runs` (its cache aside).
fn run_dirs(runs: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(runs).map_or(vec![], |d| {
        d.map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && !p.ends_with(".cache"))
            .collect()
    })
}

#[test]
fn a_plan_too_big_for_memory_is_refused_before_its_run_directory_exists() {
    let runs = common::fresh("limits-memory");
    let o = run(
        &runs,
        &["examples/smoke.gs"],
        &[("GSC_MEMORY_AVAILABLE", "10MiB")],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("error: stage `grown` of run `tiny` needs ")
            && err.contains(" of memory (parameters ")
            && err.contains("Adam moments")
            && err.contains("activations")
            && err.contains("and this machine has 10.0 MiB available: lower train.batch")
            && err.contains("--no-limits"),
        "{err}"
    );
    assert!(out.contains("memory: peak"), "{out}");
    assert!(!out.contains("step "), "nothing trained: {out}");
    assert!(run_dirs(&runs).is_empty(), "{:?}", run_dirs(&runs));
    std::fs::remove_dir_all(&runs).unwrap();
}

#[test]
fn checkpoints_too_big_for_the_disk_are_refused_before_the_run_directory_exists() {
    let runs = common::fresh("limits-disk");
    let o = run(
        &runs,
        &["examples/smoke.gs", "--keep-checkpoints", "5"],
        &[("GSC_DISK_AVAILABLE", "1MiB")],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("error: the checkpoints of the runs need ")
            && err.contains(" on disk and 1.0 MiB is free there")
            && err.contains("--keep-checkpoints"),
        "{err}"
    );
    assert!(run_dirs(&runs).is_empty());
    std::fs::remove_dir_all(&runs).unwrap();
}

#[test]
fn no_limits_trains_anyway_with_a_warning() {
    let runs = common::fresh("limits-anyway");
    let o = run(
        &runs,
        &["examples/smoke.gs", "--max-stage-steps", "2", "--no-limits"],
        &[("GSC_MEMORY_AVAILABLE", "10MiB")],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(err.contains("warning: stage `grown`") && err.contains("running anyway"));
    assert_eq!(run_dirs(&runs).len(), 1);
    std::fs::remove_dir_all(&runs).unwrap();
}

#[test]
fn a_size_that_is_not_one_is_an_error() {
    let runs = common::fresh("limits-garbage");
    let o = run(
        &runs,
        &["examples/smoke.gs"],
        &[("GSC_MEMORY_AVAILABLE", "plenty")],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("GSC_MEMORY_AVAILABLE=plenty is not a size"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&runs);
}

/// A run resumed on a smaller machine is checked again; a finished run is
/// not counted.
#[test]
fn a_resumed_run_is_checked_again() {
    let runs = common::fresh("limits-resume");
    let o = run(&runs, &["examples/smoke.gs", "--max-stage-steps", "3"], &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let dir = common::run_dir(&runs);
    let dir_arg = dir.to_str().unwrap();
    let small = [("GSC_MEMORY_AVAILABLE", "10MiB")];
    let o = run(&runs, &["--resume", dir_arg], &small);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("memory: nothing left to train"), "{out}");
    // Killed before its end: the run is unfinished, and no longer fits.
    common::unfinish(&dir);
    let metrics = dir.join("metrics.jsonl");
    let kept = std::fs::read_to_string(&metrics).unwrap();
    let o = run(&runs, &["--resume", dir_arg], &small);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("of run `tiny` needs "), "{err}");
    assert_eq!(
        std::fs::read_to_string(&metrics).unwrap(),
        kept,
        "nothing trained"
    );
    std::fs::remove_dir_all(&runs).unwrap();
}

/// The estimate bounds the run's peak resident memory from above, and not
/// by much: the model S (4 layers, d_model 256, batch 16 × 256) on two
/// threads, whose buffers are most of it.
#[cfg(target_os = "linux")]
#[test]
// The child is reaped by `wait4`, which also reports its peak.
#[allow(clippy::zombie_processes)]
fn the_memory_estimate_bounds_the_measured_peak() {
    let runs = common::fresh("limits-rss");
    std::fs::create_dir_all(&runs).unwrap();
    let log = runs.join("stdout");
    let child = Command::new(env!("CARGO_BIN_EXE_gsc"))
        .args(["run", "examples/gpt_vs_ngpt.gs", "--run", "gpt"])
        .args(["--max-stage-steps", "1", "--runs-dir"])
        .arg(&runs)
        .env("RAYON_NUM_THREADS", "2")
        .env_remove("GSC_MEMORY_AVAILABLE")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (status, peak_kib) = wait_with_peak(child.id() as libc::pid_t);
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status, 0, "{out}");
    let estimate = estimated_peak(&out);
    let measured = peak_kib as f64 * 1024.0;
    eprintln!(
        "estimate {:.1} MiB, measured peak RSS {:.1} MiB, ratio {:.2}",
        estimate / 1048576.0,
        measured / 1048576.0,
        estimate / measured
    );
    assert!(
        measured <= estimate && estimate <= 1.5 * measured,
        "estimate {estimate}, measured {measured}"
    );
    std::fs::remove_dir_all(&runs).unwrap();
}

/// Waits for `pid`; its exit status and peak resident set in KiB.
#[cfg(target_os = "linux")]
fn wait_with_peak(pid: libc::pid_t) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid, and both pointers are to locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Bytes of `memory: peak 596 MiB …` in `gsc run`'s output.
#[cfg(target_os = "linux")]
fn estimated_peak(out: &str) -> f64 {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("memory: peak "))
        .unwrap_or_else(|| panic!("no estimate in {out}"));
    let mut words = line.split(' ');
    let number: f64 = words.next().unwrap().parse().unwrap();
    let unit = match words.next().unwrap() {
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => panic!("unit {u}"),
    };
    number * unit as f64
}
