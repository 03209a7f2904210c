//! Tokenizers end to end: a BPE trained when a run starts, kept in its run
//! directory and never trained again on resume; a tokenizer.json loaded by
//! a `.gs` file; bits per byte in the metrics.

mod common;

use common::{checkpoint_parts, fresh, gsc, run_dir, step_checkpoints, unfinish};
use std::path::{Path, PathBuf};

/// Runs `args` (a `gsc run …`) and returns its stdout, failing on an error.
fn run(args: &[&std::ffi::OsStr]) -> String {
    let o = gsc().arg("run").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `eval` and `run_end` records of a run directory.
fn evals(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "eval" || r["kind"] == "run_end")
        .collect()
}

/// Every evaluation has `val_bpb = val_loss · tokens/bytes / ln 2`, with
/// one ratio of tokens to bytes (the validation split's) for the run;
/// that ratio.
fn tokens_per_byte(records: &[serde_json::Value]) -> f64 {
    assert!(records.len() >= 3, "{records:?}");
    let ratios: Vec<f64> = records
        .iter()
        .map(|r| {
            let (loss, bpb) = (r["val_loss"].as_f64().unwrap(), r["val_bpb"].as_f64());
            bpb.unwrap_or_else(|| panic!("no val_bpb in {r}")) * std::f64::consts::LN_2 / loss
        })
        .collect();
    for r in &ratios {
        assert!((r - ratios[0]).abs() < 1e-9, "{ratios:?}");
    }
    ratios[0]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// The run directory's copy with its last checkpoint gone and its end
/// forgotten: a resume goes on from the end of the first stage.
fn cut_after_first_stage(dir: &Path, to: &Path) -> PathBuf {
    copy_dir(dir, to);
    unfinish(to);
    let last = step_checkpoints(to, "tiny").pop().unwrap();
    std::fs::remove_file(last).unwrap();
    to.to_path_buf()
}

#[test]
fn a_bpe_run_keeps_its_tokenizer_logs_bits_per_byte_and_resumes_identically() {
    let root = fresh("bpe");
    let runs = root.join("runs");
    let out = run(&[
        "examples/bpe.gs".as_ref(),
        "--max-stage-steps".as_ref(),
        "3".as_ref(),
        "--runs-dir".as_ref(),
        runs.as_os_str(),
    ]);
    let dir = run_dir(&runs);
    // The BPE trained on the training split, with exactly the vocabulary asked for.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(json["model"]["type"], "BPE");
    assert_eq!(json["model"]["vocab"].as_object().unwrap().len(), 512);
    assert_eq!(json["model"]["merges"].as_array().unwrap().len(), 256);
    assert_eq!(json["pre_tokenizer"]["type"], "ByteLevel");
    assert!(out.contains("data: ") && out.contains("val_bpb "), "{out}");
    // About two bytes per token on Shakespeare.
    let whole = evals(&dir);
    let ratio = tokens_per_byte(&whole);
    assert!((0.4..0.6).contains(&ratio), "{ratio} tokens per byte");

    // Resumed from the first stage's end: the same tokenizer file, the
    // same parameters, the same evaluations.
    let tokenizer = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let cut = cut_after_first_stage(&dir, &root.join("cut"));
    run(&["--resume".as_ref(), cut.as_os_str()]);
    assert_eq!(
        std::fs::read(cut.join("tokenizer.json")).unwrap(),
        tokenizer
    );
    let last = |d: &Path| checkpoint_parts(step_checkpoints(d, "tiny").last().unwrap()).0;
    assert!(last(&cut) == last(&dir), "the resumed run ended elsewhere");
    let strip = |records: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        records
            .into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("seconds");
                r
            })
            .collect()
    };
    assert_eq!(strip(evals(&cut)), strip(whole));

    // A BPE run whose tokenizer is gone is not resumed with another one.
    let lost = cut_after_first_stage(&dir, &root.join("lost"));
    std::fs::remove_file(lost.join("tokenizer.json")).unwrap();
    let o = gsc()
        .arg("run")
        .arg("--resume")
        .arg(&lost)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("tokenizer.json is missing"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_gs_file_loads_a_tokenizer_json_and_a_byte_run_keeps_the_byte_one() {
    let root = fresh("hf-tokenizer");
    let runs = root.join("runs");
    run(&[
        "tests/fixtures/hf_tokenizer.gs".as_ref(),
        "--runs-dir".as_ref(),
        runs.as_os_str(),
    ]);
    let dir = run_dir(&runs);
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    assert_eq!(
        read(&dir.join("tokenizer.json")),
        read(Path::new("tests/fixtures/tokenizer.json"))
    );
    let ratio = tokens_per_byte(&evals(&dir));
    assert!((0.3..0.8).contains(&ratio), "{ratio} tokens per byte");

    // The same file with the byte tokenizer: bits per byte are nats / ln 2,
    // and the run directory holds the byte tokenizer.json (id i = byte i).
    let bytes = root.join("bytes");
    run(&[
        "tests/fixtures/hf_tokenizer.gs".as_ref(),
        "--set".as_ref(),
        "data.tokenizer=bytes".as_ref(),
        "--runs-dir".as_ref(),
        bytes.as_os_str(),
    ]);
    let dir = run_dir(&bytes);
    assert!((tokens_per_byte(&evals(&dir)) - 1.0).abs() < 1e-12);
    let json = read(&dir.join("tokenizer.json"));
    let vocab = json["model"]["vocab"].as_object().unwrap();
    assert_eq!(vocab.len(), 256);
    assert_eq!(
        (vocab["A"].as_u64(), vocab["Ġ"].as_u64()),
        (Some(65), Some(32))
    );

    // A tokenizer larger than the model's vocabulary is refused at run
    // time too (here one put in the run directory behind gsc's back).
    unfinish(&dir);
    std::fs::copy("tests/fixtures/tokenizer.json", dir.join("tokenizer.json")).unwrap();
    let o = gsc().arg("run").arg("--resume").arg(&dir).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let refused = "stage `main`'s model has a vocabulary of 256, smaller than the tokenizer's 512";
    assert!(err.contains(refused), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
