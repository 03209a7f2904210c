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
    require_data();
    files
}

pub fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The corpora the examples and the grammar reference's examples train on,
/// made by `scripts/fetch-data`.
pub fn require_data() {
    assert!(
        Path::new("data/tinyshakespeare.txt").exists(),
        "the examples' data is missing: run ./scripts/fetch-data (or ./scripts/test)"
    );
}

/// What a `gs` block of the grammar reference must give under `gsc check`,
/// as its fence says: ```` ```gs ```` no diagnostic at all,
/// ```` ```gs error=gs::CODE ```` errors of that code alone, and
/// ```` ```gs warning=gs::CODE ```` no error and warnings of that code alone.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    Clean,
    Error(String),
    Warning(String),
}

/// One fenced `gs` block of `grammar/README.md`: a whole file, checked from
/// the repository root. A first line `// gsc check FILE --set K=V …` gives
/// the overrides it is checked with.
pub struct ReferenceExample {
    /// The line of the opening fence in grammar/README.md (1-based).
    pub line: usize,
    pub expect: Expect,
    pub source: String,
    pub overrides: Vec<String>,
}

pub const REFERENCE: &str = "grammar/README.md";

/// Every fenced `gs` block of the grammar reference, in order; an
/// annotation the test cannot read fails here, naming its line.
pub fn reference_examples() -> Vec<ReferenceExample> {
    let text = std::fs::read_to_string(REFERENCE).unwrap_or_else(|e| panic!("{REFERENCE}: {e}"));
    let mut examples = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```gs") else {
            continue;
        };
        let info = info.trim();
        let expect = if info.is_empty() {
            Expect::Clean
        } else if let Some(code) = info.strip_prefix("error=") {
            Expect::Error(code.to_string())
        } else if let Some(code) = info.strip_prefix("warning=") {
            Expect::Warning(code.to_string())
        } else {
            panic!(
                "{REFERENCE}:{}: unknown fence `{line}`: write ```gs, ```gs error=gs::CODE or ```gs warning=gs::CODE",
                n + 1
            );
        };
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let overrides = body
            .first()
            .and_then(|l| l.strip_prefix("// gsc check FILE"))
            .map(|flags| {
                flags
                    .split("--set")
                    .map(|o| o.trim().trim_matches('\'').to_string())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        examples.push(ReferenceExample {
            line: n + 1,
            expect,
            source: body.iter().map(|l| format!("{l}\n")).collect(),
            overrides,
        });
    }
    examples
}
