//! `gsc report` on run directories with known evaluations: the crossings,
//! speed-ups and tokens per parameter it prints, and the plots it writes.

use gsc_runtime::machine::Machine;
use gsc_runtime::run::dir::{Manifest, RunDir};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A run directory holding one run whose evaluations are `evals`
/// (FLOPs, loss in nats), at 1 token per 1e6 FLOPs and 1 second per 1e9
/// FLOPs; with `val_bpb` for a validation split of `tokens_per_byte`.
fn run_dir(
    root: &Path,
    name: &str,
    kind: &str,
    stages: &[(&str, u64, f64)],
    evals: &[(f64, f64)],
    growth_at: Option<f64>,
    tokens_per_byte: Option<f64>,
) -> PathBuf {
    let dir = RunDir::create(root, name).unwrap();
    dir.write_manifest(&Manifest {
        name: name.into(),
        source_path: "/x/exp.gs".into(),
        source: String::new(),
        overrides: vec![format!("train.seed=1")],
        compiler_version: "test".into(),
        runtime_version: "test".into(),
        artifact_hash: "0".into(),
        backend: "cpu".into(),
        machine: Machine::describe(),
        started_unix: 0,
        only_run: Some(name.into()),
        max_stage_steps: None,
        keep_checkpoints: None,
        data: Vec::new(),
    })
    .unwrap();
    let at = |flops: f64| json!({ "flops": flops, "tokens": flops / 1e6, "seconds": flops / 1e9 });
    let mut lines = vec![
        json!({ "kind": "run_start", "run": name, "step": 0, "run_kind": kind, "arch": "gpt",
        "seed": 1, "final_params": stages.last().unwrap().1,
        "stages": stages.iter().map(|(n, p, _)| json!({ "name": n, "params": p })).collect::<Vec<_>>() }),
    ];
    for (i, &(flops, loss)) in evals.iter().enumerate() {
        // Stages end where their FLOPs run out.
        let stage = stages.iter().find(|s| flops <= s.2).unwrap().0;
        let mut r = at(flops);
        r["kind"] = json!("eval");
        r["run"] = json!(name);
        r["stage"] = json!(stage);
        r["step"] = json!(i + 1);
        r["val_loss"] = json!(loss);
        if let Some(ratio) = tokens_per_byte {
            r["val_bpb"] = json!(loss * ratio / std::f64::consts::LN_2);
        }
        lines.push(r);
    }
    if let Some(g) = growth_at {
        let mut r = at(g);
        r["kind"] = json!("growth");
        r["run"] = json!(name);
        r["stage"] = json!(stages[1].0);
        lines.push(r);
    }
    let mut end = at(evals.last().unwrap().0);
    end["kind"] = json!("run_end");
    end["run"] = json!(name);
    lines.push(end);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.metrics_path(), text).unwrap();
    dir.path
}

#[test]
fn report_measures_every_run_against_its_scratch_run() {
    let root = std::env::temp_dir().join(format!("gsc-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let scratch = run_dir(
        &root,
        "scratch",
        "scratch",
        &[("scratch", 1_000_000, 1e13)],
        &[
            (2e12, 2.4),
            (4e12, 2.0),
            (6e12, 1.8),
            (8e12, 1.7),
            (1e13, 1.6),
        ],
        None,
        None,
    );
    // Reaches 1.6 between 4e12 (1.62) and 5e12 (1.58): at 4.5e12.
    let grown = run_dir(
        &root,
        "grown",
        "schedule",
        &[("small", 250_000, 2e12), ("big", 1_000_000, 1e13)],
        &[
            (1e12, 2.2),
            (2e12, 1.9),
            (3e12, 1.7),
            (4e12, 1.62),
            (5e12, 1.58),
            (1e13, 1.5),
        ],
        Some(2e12),
        None,
    );
    let out = root.join("report");
    let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
        .args([
            "report",
            scratch.to_str().unwrap(),
            grown.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(md, String::from_utf8_lossy(&o.stdout));
    let md = md.replace(root.to_str().unwrap(), "ROOT");
    let md = md.replace(
        scratch.file_name().unwrap().to_str().unwrap(),
        "SCRATCH_DIR",
    );
    let md = md.replace(grown.file_name().unwrap().to_str().unwrap(), "GROWN_DIR");
    insta::assert_snapshot!(md);
    for plot in ["loss_vs_flops", "loss_vs_tokens"] {
        let svg = std::fs::read_to_string(out.join(format!("{plot}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("grown") && svg.contains("scratch"));
        let png = std::fs::read(out.join(format!("{plot}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
    // A baseline that names no run is an error that lists the runs.
    let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
        .args([
            "report",
            grown.to_str().unwrap(),
            "--baseline",
            "nope",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the runs are: grown"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// A byte run and a BPE run compare in bits per byte: the BPE run's loss
/// in nats per token is higher, but each of its tokens holds two bytes.
#[test]
fn runs_of_different_tokenizers_compare_in_bits_per_byte() {
    let root = std::env::temp_dir().join(format!("gsc-report-bpb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let stages = [("main", 1_000_000, 1e13)];
    let bytes = run_dir(
        &root,
        "scratch",
        "scratch",
        &stages,
        &[(2e12, 2.4), (1e13, 1.6)],
        None,
        Some(1.0),
    );
    // 2.0 nats per token at 0.5 tokens per byte: 1.4427 bits per byte,
    // below the byte run's 1.6 / ln 2 = 2.3083, which it reaches two
    // thirds of the way from 1e12 (2.5966) to 2e12 (2.1640); in nats it
    // would never reach 1.6.
    let bpe = run_dir(
        &root,
        "bpe",
        "schedule",
        &stages,
        &[(1e12, 3.6), (2e12, 3.0), (1e13, 2.0)],
        None,
        Some(0.5),
    );
    let report = |dirs: &[&Path]| {
        let out = root.join("report");
        let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
            .arg("report")
            .args(dirs)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let svg = std::fs::read_to_string(out.join("loss_vs_flops.svg")).unwrap();
        (String::from_utf8_lossy(&o.stdout).into_owned(), svg)
    };
    let (md, svg) = report(&[&bytes, &bpe]);
    assert!(md.contains("validation losses in bits per byte"), "{md}");
    assert!(svg.contains("validation loss (bits per byte)"));
    let row = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{md}"))
            .split(" | ")
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (scratch, grown) = (row("scratch"), row("bpe"));
    // final loss, L*, FLOPs to L*, speed-up.
    assert_eq!(scratch[9..11], ["2.3083", "2.3083"]);
    assert_eq!(grown[9..13], ["1.4427", "2.3083", "1.667e12", "6.00×"]);

    // A run from before bits per byte were logged: all in nats.
    let old = run_dir(
        &root,
        "old",
        "schedule",
        &stages,
        &[(1e12, 2.2), (1e13, 1.5)],
        None,
        None,
    );
    let (md, svg) = report(&[&bytes, &old]);
    assert!(md.contains("validation losses in nats per token"), "{md}");
    assert!(svg.contains("validation loss (nats per token)"));
    assert!(md.contains("| 1.6000 |"), "{md}");
    std::fs::remove_dir_all(&root).unwrap();
}
