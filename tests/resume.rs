//! A run killed at any moment and resumed ends with exactly the parameters
//! of an uninterrupted run; and its metrics hold each step once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn gsc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gsc"))
}

fn run_dir(root: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with(".cache"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn final_checkpoint(dir: &Path) -> Vec<u8> {
    let ck = dir.join("checkpoints/tiny");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let last = files.last().expect("a checkpoint");
    assert!(last.ends_with("step-000000080.safetensors"), "{last:?}");
    std::fs::read(last).unwrap()
}

fn checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("checkpoints/tiny")).map_or(0, |d| d.count())
}

fn fresh(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("gsc-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let whole = fresh("whole");
    let o = gsc()
        .args(["run", "tests/fixtures/resume.gs", "--runs-dir"])
        .arg(&whole)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = final_checkpoint(&run_dir(&whole));

    let cut = fresh("cut");
    let mut child = gsc()
        .args(["run", "tests/fixtures/resume.gs", "--runs-dir"])
        .arg(&cut)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a checkpoint or two exist (or when it is done, on a fast machine).
    let started = Instant::now();
    loop {
        let dirs = std::fs::read_dir(&cut)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir() && !e.path().ends_with(".cache"))
            .count();
        if dirs == 1 && checkpoints(&run_dir(&cut)) >= 2
            || started.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let dir = run_dir(&cut);
    // Resume, and kill the resumed run too, mid-way, before finishing it.
    let mut again = gsc()
        .arg("run")
        .arg("--resume")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = again.kill();
    again.wait().unwrap();
    let o = gsc().arg("run").arg("--resume").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        final_checkpoint(&dir),
        reference,
        "resumed run ended with different parameters"
    );

    // Every step is logged once, in order.
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "step")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=16).map(|i| i * 5).collect::<Vec<_>>(),
        "{metrics}"
    );
    // A finished run resumes to nothing.
    let o = gsc().arg("run").arg("--resume").arg(&dir).output().unwrap();
    assert!(o.status.success());
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&cut);
}
