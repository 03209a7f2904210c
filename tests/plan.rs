//! The plan of every example, as text and as JSON, snapshotted: the schedule
//! transforms are the product, so every change to them is reviewed.

mod common;

use gsc_compiler::{check_source, plan::render::plan_text};

#[test]
fn example_plans() {
    for path in common::examples() {
        snapshot_plan(&path, &format!("examples/{}.gs", common::stem(&path)));
    }
}

/// Small files that each show one growth transform: HyperCloning on
/// d_model (eps kept), the asymmetric moment reset, `lr_scale`, and gates
/// ramping new heads and FFN units in.
#[test]
fn fixture_plans() {
    for stem in ["hypercloning", "asymmetric", "lr_scale", "ramp"] {
        let path = std::path::PathBuf::from(format!("tests/fixtures/{stem}.gs"));
        snapshot_plan(&path, &format!("fixtures/{stem}.gs"));
    }
}

/// Snapshots the plan of the file at `path` (shown as `name`), as text and JSON.
fn snapshot_plan(path: &std::path::Path, name: &str) {
    let source = std::fs::read_to_string(path).unwrap();
    let checked = check_source(name, &source, path.parent().unwrap(), &[]);
    assert!(
        !checked.report.has_errors(),
        "{}",
        checked.report.render(false)
    );
    let plan = checked.plan.expect("a file without errors has a plan");
    let stem = common::stem(path);
    insta::assert_snapshot!(format!("{stem}.plan"), plan_text(&plan));
    insta::assert_json_snapshot!(format!("{stem}.plan.json"), plan);
}

/// The numbers of performance.md's reference model S, computed by hand there.
#[test]
fn flops_per_token_matches_palm_count() {
    let source = std::fs::read_to_string("examples/gpt_vs_ngpt.gs").unwrap();
    let plan = check_source("x.gs", &source, std::path::Path::new("examples"), &[])
        .plan
        .unwrap();
    let gpt = &plan.runs[0].stages[0];
    // 4 blocks of 12·d² weights and 2 gains of d, the final gain: no biases, RoPE.
    let d = 256usize;
    let non_embedding = 4 * (12 * d * d + 2 * d) + d;
    assert_eq!(gpt.model.non_embedding_params(), non_embedding);
    assert_eq!(gpt.param_count, non_embedding + 256 * d);
    let expected = 6.0 * non_embedding as f64 + 12.0 * 4.0 * 256.0 * 256.0;
    assert_eq!(gpt.flops_per_token, expected);
    assert_eq!(plan.runs[0].totals.tokens, 3000 * 16 * 256);
}

/// `--set` overrides reach the plan, and a bad override is a diagnostic.
#[test]
fn overrides() {
    let source = std::fs::read_to_string("examples/smoke.gs").unwrap();
    let dir = std::path::Path::new("examples");
    let sets = [
        "train.batch=4".to_string(),
        "model.tiny.d_model=64".to_string(),
        "train.lr=1e-3".to_string(),
        "grow.tiny.grown=7 steps".to_string(),
    ];
    let plan = check_source("smoke.gs", &source, dir, &sets).plan.unwrap();
    let first = &plan.runs[0].stages[0];
    assert_eq!(first.train.batch, 4);
    assert_eq!(first.model.d_model, 64);
    assert_eq!(first.train.optimizer.lr, 1e-3);
    assert_eq!(plan.runs[0].stages[1].model.d_model, 80);
    assert_eq!(plan.runs[0].stages[1].steps, Some(7));

    let bad = check_source(
        "smoke.gs",
        &source,
        dir,
        &["model.tiny.heads=3".to_string()],
    );
    assert!(bad
        .report
        .diags
        .iter()
        .any(|d| d.code == "gs::divisibility"));
    for key in [
        "modle.d_model=3",
        "grow.tiny.nope=5 steps",
        "grow.nope.grown=5 steps",
        "train.batch=4\nmodel x = gpt {}",
        "train\n.batch=4",
    ] {
        let unknown = check_source("smoke.gs", &source, dir, &[key.to_string()]);
        assert!(
            unknown
                .report
                .diags
                .iter()
                .any(|d| d.code == "gs::override"),
            "{key}"
        );
    }
}
