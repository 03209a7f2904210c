//! What a fault costs a run: a signal, a second signal, a full disk, a
//! damaged or foreign checkpoint. Each ends with the run resumed to exactly
//! the parameters and Adam moments of an uninterrupted run.

mod common;

use common::{checkpoint_parts, fresh, gsc, run_dir, step_checkpoints, unfinish};
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const RESUME: &str = "tests/fixtures/resume.gs";

/// The final tensors of an uninterrupted run of `file`, run once per file.
fn reference(file: &'static str) -> &'static Vec<u8> {
    static RESUME_REF: OnceLock<Vec<u8>> = OnceLock::new();
    static DISK_REF: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if file == RESUME {
        &RESUME_REF
    } else {
        &DISK_REF
    };
    cell.get_or_init(|| {
        let root = fresh(&format!("ref-{}", common::stem(Path::new(file))));
        let o = run(gsc().args(["run", file, "--runs-dir"]).arg(&root));
        assert!(o.status.success(), "{}", stderr(&o));
        final_tensors(&run_dir(&root))
    })
}

fn final_tensors(dir: &Path) -> Vec<u8> {
    let files = step_checkpoints(dir, "tiny");
    checkpoint_parts(files.last().expect("a final checkpoint")).0
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn resume(dir: &Path) -> Output {
    run(gsc().arg("run").arg("--resume").arg(dir))
}

/// Starts `gsc run RESUME` in `root`, waits for its first logged step, and
/// sends it `signals`; its output once it has exited.
fn signalled(root: &Path, signals: &[i32]) -> Output {
    let mut child = gsc()
        .args(["run", RESUME, "--runs-dir"])
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains(" step ") {
        line.clear();
    }
    for &sig in signals {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    child.wait_with_output().unwrap()
}

fn resumes_to_the_reference(dir: &Path) {
    let o = resume(dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        final_tensors(dir) == *reference(RESUME),
        "the resumed run ended with other parameters or moments"
    );
}

#[test]
fn a_signal_checkpoints_stops_and_says_how_to_resume() {
    for (sig, name, status) in [
        (libc::SIGINT, "SIGINT", 130),
        (libc::SIGTERM, "SIGTERM", 143),
    ] {
        let root = fresh(&format!("signal-{name}"));
        let o = signalled(&root, &[sig]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(status), "{err}");
        let dir = run_dir(&root);
        assert!(
            err.contains(&format!("stopped by {name} after step")),
            "{err}"
        );
        assert!(
            err.contains(&format!("resume with: gsc run --resume {}", dir.display())),
            "{err}"
        );
        // The checkpoint it names exists: the step it stopped after.
        let named = err
            .split("its state is in ")
            .nth(1)
            .and_then(|r| r.lines().next())
            .map(PathBuf::from)
            .expect("a checkpoint named");
        assert!(named.is_file(), "{err}");
        resumes_to_the_reference(&dir);
    }
}

#[test]
fn a_second_interrupt_exits_at_once_and_keeps_the_last_checkpoint() {
    let root = fresh("double");
    let mut child = gsc()
        .args(["run", "tests/fixtures/slow.gs", "--runs-dir"])
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains(" step      3 ") {
        line.clear();
    }
    let kill = || unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    kill();
    // The first is taken (its notice printed): the second comes within the
    // step it is finishing, which takes tens of milliseconds.
    let mut text = String::new();
    while err.read_line(&mut text).unwrap() > 0 && !text.contains("gsc: SIGINT") {}
    kill();
    std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    std::io::Read::read_to_string(&mut err, &mut text).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(!text.contains("stopped by"), "it finished the step: {text}");
    // Every checkpoint it left verifies: the resume takes the newest with
    // no warning, and logs each step once.
    let dir = run_dir(&root);
    let o = resume(&dir);
    assert!(
        o.status.success() && !stderr(&o).contains("warning"),
        "{}",
        stderr(&o)
    );
    let steps: Vec<u64> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "step")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

#[test]
fn a_full_disk_keeps_the_previous_checkpoint() {
    const DISK: &str = "tests/fixtures/disk.gs";
    let whole = fresh("disk-whole");
    let o = run(gsc().args(["run", DISK, "--runs-dir"]).arg(&whole));
    assert!(o.status.success(), "{}", stderr(&o));
    let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
    let d = run_dir(&whole);
    let (artifact, small, big) = (
        size(d.join("artifact.json")),
        size(d.join("checkpoints/tiny/growth-01-before.safetensors")),
        size(d.join("checkpoints/tiny/growth-01-after.safetensors")),
    );
    assert!(artifact.max(small) < big, "{artifact} {small} {big}");
    // A file-size limit between the sizes: every file of the first stage
    // fits, the first checkpoint after the growth does not.
    let limit = (artifact.max(small) + big) / 2;
    let root = fresh("disk-full");
    let mut cmd = gsc();
    cmd.args(["run", DISK, "--runs-dir"]).arg(&root);
    // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = run(&mut cmd);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "killed by {:?}: {err}",
        o.status.signal()
    );
    let dir = run_dir(&root);
    assert!(
        err.contains("cannot write checkpoint") && err.contains("growth-01-after"),
        "{err}"
    );
    assert!(
        err.contains("(step 10), is intact") && err.contains("gsc run --resume"),
        "{err}"
    );
    // No temporary file is left, and the resume ends where the whole run did.
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("checkpoints/tiny"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let o = resume(&dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(final_tensors(&dir) == final_tensors(&d));
}

/// A finished run of RESUME whose checkpoints the tests then damage.
fn finished_run(name: &str) -> PathBuf {
    let root = fresh(name);
    let o = run(gsc().args(["run", RESUME, "--runs-dir"]).arg(&root));
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = run_dir(&root);
    unfinish(&dir);
    dir
}

#[test]
fn a_corrupt_checkpoint_is_named_and_the_resume_falls_back() {
    let dir = finished_run("corrupt");
    let files = step_checkpoints(&dir, "tiny");
    let newest = files.last().unwrap().clone();
    // Drop the final checkpoint (so the run has steps left) and damage
    // the one before it: one flipped bit, deep in its tensors.
    std::fs::remove_file(&newest).unwrap();
    let damaged = &files[files.len() - 2];
    let mut bytes = std::fs::read(damaged).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(damaged, bytes).unwrap();
    // `gsc verify` tells the two apart.
    let good = &files[files.len() - 3];
    let o = run(gsc().arg("verify").arg(damaged).arg(good));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "damaged  checkpoint {} is corrupt: tensor",
            damaged.display()
        )) && out.contains(&format!(
            "ok       {}: run \"tiny\", stage \"b\", step 70",
            good.display()
        )),
        "{out}"
    );
    let o = resume(&dir);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "checkpoint {} is corrupt: tensor",
            damaged.display()
        )),
        "{err}"
    );
    assert!(err.contains("the newest good checkpoint"), "{err}");
    assert!(final_tensors(&dir) == *reference(RESUME));
}

#[test]
fn a_checkpoint_of_another_file_is_refused() {
    let dir = finished_run("foreign");
    // The other fixture's run is also called `tiny`, at another shape.
    let other = fresh("foreign-other");
    let o = run(gsc()
        .args(["run", "tests/fixtures/disk.gs", "--runs-dir"])
        .arg(&other));
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpts = dir.join("checkpoints/tiny");
    for f in std::fs::read_dir(&ckpts).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let foreign = step_checkpoints(&run_dir(&other), "tiny").pop().unwrap();
    let planted = ckpts.join("step-000000099.safetensors");
    std::fs::copy(&foreign, &planted).unwrap();
    let o = resume(&dir);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "checkpoint {} was written from another source file or other overrides: skipping it",
            planted.display()
        )),
        "{err}"
    );
    assert!(err.contains("no usable checkpoint of run `tiny`"), "{err}");
    // It started again, and ended as the reference run (the planted file
    // aside, which it leaves alone).
    std::fs::remove_file(planted).unwrap();
    assert!(final_tensors(&dir) == *reference(RESUME));
}

#[test]
fn a_resume_over_changed_data_is_refused_unless_allowed() {
    let root = fresh("data");
    let text = root.join("text.txt");
    std::fs::copy("tests/fixtures/small.txt", &text).unwrap();
    let source = std::fs::read_to_string(RESUME)
        .unwrap()
        .replace("\"small.txt\"", "\"text.txt\"")
        .replace("40 steps", "4 steps");
    let file = root.join("data.gs");
    std::fs::write(&file, source).unwrap();
    let o = run(gsc().arg("run").arg(&file).arg("--runs-dir").arg(&root));
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = run_dir(&root);
    let manifest = std::fs::read_to_string(dir.join("run.json")).unwrap();
    assert!(manifest.contains("\"sha256\""), "{manifest}");

    std::fs::write(
        &text,
        "another text entirely, long enough to sample from. ".repeat(20),
    )
    .unwrap();
    let o = resume(&dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the data changed since the run last read it")
            && err.contains("text.txt (1020 bytes")
            && err.contains("--allow-data-change"),
        "{err}"
    );
    let o = run(gsc()
        .args(["run", "--allow-data-change", "--resume"])
        .arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"kind\":\"data_changed\""), "{metrics}");
    // The run now compares against the data it continued on.
    let o = resume(&dir);
    assert!(
        o.status.success() && !stderr(&o).contains("data changed"),
        "{}",
        stderr(&o)
    );
}

/// RESUME with a learning rate that overflows the parameters at its first
/// step (so the second is non-finite), and `extra` in its train block.
fn diverging(name: &str, extra: &str) -> (PathBuf, Output) {
    let root = fresh(name);
    let small = std::fs::canonicalize("tests/fixtures/small.txt").unwrap();
    let source = std::fs::read_to_string(RESUME)
        .unwrap()
        .replace(
            "\"small.txt\"",
            &format!("{:?}", small.display().to_string()),
        )
        .replace(
            "optimizer = adamw(lr = 3e-3)",
            &format!("optimizer = adamw(lr = 1e30)\n    clip = none\n    {extra}"),
        );
    let file = root.join("diverging.gs");
    std::fs::write(&file, source).unwrap();
    let o = run(gsc().arg("run").arg(&file).arg("--runs-dir").arg(&root));
    (run_dir(&root), o)
}

fn records(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[test]
fn a_nonfinite_step_stops_the_run_naming_where() {
    let (dir, o) = diverging("nan-stop", "");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("step 2 of stage `a` went non-finite (loss ")
            && err.contains("gradient norm NaN); the first non-finite tensor: the gradients")
            && err.contains("set `on_nonfinite`"),
        "{err}"
    );
    // Nothing of the failed step was logged or saved.
    assert!(records(&dir, "step").iter().all(|r| r["loss"].is_number()));
}

#[test]
fn a_rollback_lowers_the_learning_rate_and_trains_on() {
    let (dir, o) = diverging("nan-rollback", "on_nonfinite = rollback(lr = 1e-32)");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("step 2 of stage `a` went non-finite")
            && err.contains("back to the newest checkpoint, the learning rate times 1e-32"),
        "{err}"
    );
    let events = records(&dir, "nonfinite");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["lr_factor"], 1e-32);
    // Every step logged once, at the lowered rate, with a finite loss.
    let steps = records(&dir, "step");
    assert_eq!(steps.len(), 16);
    assert!(steps
        .iter()
        .all(|r| r["lr"].as_f64().unwrap() <= 1e-2 + 1e-12));
}

#[test]
fn skipping_leaves_batches_out_and_gives_up_after_ten() {
    // Every step after the first overflows: each is left out in turn,
    // until the policy has acted ten times.
    let (dir, o) = diverging("nan-skip", "on_nonfinite = skip");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for step in 2..=11 {
        assert!(
            err.contains(&format!("leaving out the batch of step {step}\n")),
            "{step}: {err}"
        );
    }
    assert!(
        err.contains("step 12 of stage `a` went non-finite"),
        "{err}"
    );
    let events = records(&dir, "nonfinite");
    assert_eq!(events.len(), 10);
    assert_eq!(
        events[9]["skipped"],
        serde_json::json!((1..=10).collect::<Vec<u64>>())
    );
}
