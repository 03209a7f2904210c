//! `precision = bf16` trains as `f32` does: the same small GPT, data, seed
//! and schedule (300 steps with a width and a depth growth between two
//! stages) run once in each precision, and the bf16 loss curve tracks the
//! f32 one.
//!
//! Tolerance: every logged training loss and every validation loss within
//! 0.05 nats of f32's. Rounding each operand of each product to bf16 moves
//! it by up to 2⁻⁸ relative; the runs share their batches, so the curves
//! differ by that perturbation carried through 300 AdamW steps alone, not
//! by sampling noise. On this model the largest gap is about 0.02 nats
//! (the test prints it); a product that dropped its bf16 rounding leaves
//! the curves equal, which the test refuses, and one that rounded to far
//! fewer bits moves them apart by more than the tolerance.

mod common;

use serde_json::Value;
use std::path::Path;

fn source(data: &Path, precision: &str) -> String {
    format!(
        r#"data shakespeare {{
    text = "{}"
    tokenizer = bytes
    val = 10%
}}

model tiny = gpt {{
    vocab = tokenizer
    context = 64
    d_model = 48
    heads = 3
    layers = 2
    ffn = 4 * d_model
}}

train {{
    optimizer = adamw(lr = 3e-3, betas = (0.9, 0.95), weight_decay = 0.1)
    schedule = cosine(warmup = 20 steps, min = 0.1)
    batch = 8 sequences
    seed = 3
    precision = {precision}
    eval every 100 steps on 4 batches
    checkpoint every 1000 steps
    log every 10 steps
}}

grow tiny {{
    stage small: train 150 steps
    grow d_model * 1.25 by isometric(split = uneven)
    grow layers + 1 at [1] by identity
    stage grown: train 150 steps
}}
"#,
        data.display()
    )
}

/// Trains the file in `precision` and returns its metrics records.
fn train(precision: &str) -> Vec<Value> {
    common::require_data();
    let data = std::fs::canonicalize("data/tinyshakespeare.txt").unwrap();
    let root = common::fresh(&format!("precision-{precision}"));
    let file = root.join(format!("{precision}.gs"));
    std::fs::write(&file, source(&data, precision)).unwrap();
    let runs = root.join("runs");
    let o = common::gsc()
        .args(["run", file.to_str().unwrap(), "--runs-dir"])
        .arg(&runs)
        .output()
        .expect("gsc runs");
    assert!(
        o.status.success(),
        "{precision}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(common::run_dir(&runs).join("metrics.jsonl")).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `(step, value)` of every record of `kind`.
fn curve(records: &[Value], kind: &str, field: &str) -> Vec<(u64, f64)> {
    records
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| (r["step"].as_u64().unwrap(), r[field].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_bf16_run_tracks_the_f32_loss_curve_through_its_growths() {
    const TOLERANCE: f64 = 0.05;
    let (f32_run, bf16_run) = (train("f32"), train("bf16"));
    let mut widest: f64 = 0.0;
    for (kind, field) in [("step", "loss"), ("eval", "val_loss")] {
        let (want, got) = (curve(&f32_run, kind, field), curve(&bf16_run, kind, field));
        assert_eq!(
            want.iter().map(|p| p.0).collect::<Vec<_>>(),
            got.iter().map(|p| p.0).collect::<Vec<_>>(),
            "{kind}: the runs logged different steps"
        );
        assert!(want.len() >= 3, "{kind}: {want:?}");
        for ((step, w), (_, g)) in want.iter().zip(&got) {
            assert!(
                (w - g).abs() <= TOLERANCE,
                "{kind} at step {step}: f32 {w:.4}, bf16 {g:.4}"
            );
            widest = widest.max((w - g).abs());
        }
    }
    eprintln!("bf16 against f32 over 300 steps: largest loss gap {widest:.4} nats");
    assert!(widest > 0.0, "the bf16 run computed exactly what f32 did");
    // Both learned: the byte-level loss starts near ln 256 ≈ 5.5.
    let last = curve(&bf16_run, "eval", "val_loss").last().unwrap().1;
    assert!(last < 2.9, "bf16 validation loss after 300 steps: {last}");
    // The growth is checked in f32 whatever the run's precision: exact.
    let growth = bf16_run.iter().find(|r| r["kind"] == "growth").unwrap();
    let (before, after) = (
        growth["loss_before"].as_f64().unwrap(),
        growth["loss_after"].as_f64().unwrap(),
    );
    assert!((before - after).abs() < 1e-4, "growth: {before} → {after}");
}
