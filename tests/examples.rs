//! Every run of every shipped example — growth schedules and comparison
//! baselines — goes through all its stages and growths (each stage cut to a
//! few steps), so that no example can break unseen.

mod common;

use std::path::Path;

fn gsc(args: &[&str]) -> std::process::Output {
    common::gsc().args(args).output().expect("gsc runs")
}

#[test]
fn every_run_of_every_example_gets_through_every_stage() {
    let root = std::env::temp_dir().join(format!("gsc-examples-{}", std::process::id()));
    for path in common::examples() {
        let file = path.to_str().unwrap();
        let plan = gsc(&["compile", file, "--emit=plan", "--format=json"]);
        assert!(
            plan.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&plan.stderr)
        );
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        let runs_dir = root.join(common::stem(&path));
        let o = gsc(&[
            "run",
            file,
            "--max-stage-steps",
            "2",
            "--runs-dir",
            runs_dir.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{file}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let records = metrics(&runs_dir);
        for run in plan["runs"].as_array().unwrap() {
            let name = run["name"].as_str().unwrap();
            let stages = run["stages"].as_array().unwrap();
            let count = |kind: &str| {
                records
                    .iter()
                    .filter(|r| r["run"] == name && r["kind"] == kind)
                    .count()
            };
            assert_eq!(count("run_end"), 1, "{file}: run `{name}` did not finish");
            let growths = stages
                .iter()
                .filter(|s| !s["growth"].as_array().unwrap().is_empty());
            assert_eq!(count("growth"), growths.count(), "{file}: run `{name}`");
            let end = records
                .iter()
                .find(|r| r["run"] == name && r["kind"] == "run_end")
                .unwrap();
            assert_eq!(end["step"], 2 * stages.len() as u64, "{file}: run `{name}`");
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// The records of the one run directory under `runs_dir`.
fn metrics(runs_dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(common::run_dir(runs_dir).join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}
