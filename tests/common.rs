//! Shared by the integration tests: the example files and the ui cases.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `gsc` binary of this build.
pub fn gsc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gsc"))
}

/// The one run directory under `root` (the runs' cache aside).
pub fn run_dir(root: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with(".cache"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// An empty directory for test `name` under the system's temporary folder.
pub fn fresh(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("gsc-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// A checkpoint's tensors (the bytes after the safetensors header) and its
/// metadata document.
pub fn checkpoint_parts(path: &Path) -> (Vec<u8>, serde_json::Value) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = serde_json::from_str(header["__metadata__"]["gsc"].as_str().unwrap()).unwrap();
    (bytes[8 + n..].to_vec(), meta)
}

/// Forgets that the runs of run directory `dir` ended (their `run_end`
/// records), as if the process had been killed just before: a resume then
/// trains on from the newest checkpoint it accepts.
pub fn unfinish(dir: &Path) {
    let metrics = dir.join("metrics.jsonl");
    let kept: String = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"run_end\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&metrics, kept).unwrap();
}

/// The periodic checkpoints of run `run` in run directory `dir`, oldest first.
pub fn step_checkpoints(dir: &Path, run: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints").join(run))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| stem(p).starts_with("step-"));
    files.sort();
    files
}

pub fn gs_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "gs"))
        .collect();
    files.sort();
    files
}

/// Every shipped `.gs` file: `examples/` and `examples/experiments/`. The
/// Gutenberg experiments need `../shared/data` (copied by fetch-data): a
/// checkout without it skips them, and says so.
pub fn examples() -> Vec<PathBuf> {
    let mut files = gs_files("examples");
    if Path::new("examples/experiments").is_dir() {
        let books = Path::new("data/gutenberg_00.txt").exists();
        for f in gs_files("examples/experiments") {
            if books || !stem(&f).starts_with("gutenberg") {
                files.push(f);
            } else {
                eprintln!(
                    "{}: skipped, no data/gutenberg_*.txt (../shared/data)",
                    f.display()
                );
            }
        }
    }
    assert!(files.len() >= 4, "the four examples are missing");
    assert!(
        Path::new("data/tinyshakespeare.txt").exists(),
        "the examples' data is missing: run ./scripts/fetch-data (or ./scripts/test)"
    );
    files
}

pub fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}
