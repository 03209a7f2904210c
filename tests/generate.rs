//! `gsc generate`: text from a run's checkpoints on the CLI — the prompt
//! continued by the requested number of tokens, the same text for the same
//! seed, and clear errors for what cannot be sampled.

mod common;

use std::path::Path;
use std::process::Output;

fn gsc(args: &[&str]) -> Output {
    common::gsc().args(args).output().expect("gsc runs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).expect("gsc prints UTF-8")
}

fn smoke_run(root: &Path) -> String {
    let runs = root.join("runs");
    let o = gsc(&[
        "run",
        "examples/smoke.gs",
        "--max-stage-steps",
        "3",
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::run_dir(&runs).to_str().unwrap().to_owned()
}

#[test]
fn generates_reproducible_text_from_any_checkpoint() {
    common::require_data();
    let root = common::fresh("generate");
    let dir = smoke_run(&root);
    let sample = |extra: &[&str]| {
        let mut args = vec!["generate", &dir, "--prompt", "ROMEO:", "-n", "150"];
        args.extend(extra);
        stdout(&gsc(&args))
    };
    let text = sample(&["--seed", "5"]);
    assert!(text.starts_with("ROMEO:"), "{text:?}");
    // Byte tokens: 150 new bytes (invalid UTF-8 shows as U+FFFD, one char
    // each), more than the context of 64, so the window slides.
    let new = text.trim_end_matches('\n').strip_prefix("ROMEO:").unwrap();
    assert!((50..=150).contains(&new.chars().count()), "{new:?}");
    assert_eq!(text, sample(&["--seed", "5"]));
    assert_ne!(text, sample(&["--seed", "6"]));
    // Greedy decoding does not depend on the seed.
    let greedy = sample(&["--temperature", "0", "--seed", "1"]);
    assert_eq!(greedy, sample(&["--temperature", "0", "--seed", "2"]));
    // At step 3, the end of the first stage, `--step` takes the grown model;
    // growth preserves the function, so it continues the prompt as the
    // model before the growth (named by its file) does.
    let before = sample(&["--step", "3", "--temperature", "0"]);
    assert!(before.starts_with("ROMEO:"));
    let file = format!("{dir}/checkpoints/tiny/growth-01-before.safetensors");
    let o = gsc(&[
        "generate",
        &file,
        "--prompt",
        "ROMEO:",
        "-n",
        "150",
        "--temperature",
        "0",
    ]);
    assert_eq!(stdout(&o), before);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn what_cannot_be_sampled_is_refused_with_a_reason() {
    common::require_data();
    let root = common::fresh("generate-errors");
    let dir = smoke_run(&root);
    let refused = |args: &[&str], says: &str| {
        let o = gsc(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    };
    refused(
        &["generate", &dir, "--step", "4"],
        "no checkpoint at step 4; it has steps 3, 6",
    );
    refused(
        &["generate", &dir, "--run", "huge"],
        "has no run `huge`; its runs: tiny",
    );
    refused(&["generate", &dir, "--prompt", ""], "the prompt is empty");
    refused(
        &["generate", root.to_str().unwrap()],
        "is not a run directory",
    );
    let missing = root.join("nothing-here");
    refused(
        &["generate", missing.to_str().unwrap()],
        "neither a run directory nor a checkpoint file",
    );
    refused(&["export", &dir, "--to", "hf", &dir], "is not empty");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_bpe_run_samples_text_through_its_tokenizer() {
    common::require_data();
    let root = common::fresh("generate-bpe");
    let runs = root.join("runs");
    let o = gsc(&[
        "run",
        "examples/bpe.gs",
        "--max-stage-steps",
        "3",
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = common::run_dir(&runs);
    let o = gsc(&[
        "generate",
        dir.to_str().unwrap(),
        "--prompt",
        "ROMEO:",
        "-n",
        "40",
        "--seed",
        "2",
    ]);
    let text = stdout(&o);
    // 40 tokens of about two bytes each: more characters than tokens.
    let new = text.trim_end_matches('\n').strip_prefix("ROMEO:").unwrap();
    assert!(new.chars().count() > 40, "{new:?}");
    std::fs::remove_dir_all(&root).ok();
}
