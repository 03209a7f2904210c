//! `ramp` growth end to end: `gsc run` of a file whose gpt and nGPT runs
//! grow a head and FFN units by `ramp(5 steps)` trains through the ramp and
//! past it, and its growth records show the loss kept exactly (the new
//! units start behind gates at 0); the gated stage's kernels read the gates.

use std::path::{Path, PathBuf};
use std::process::Command;

fn gsc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gsc"))
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with(".cache"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    std::fs::read_to_string(dirs[0].join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ramped_growth_trains_past_the_ramp_and_keeps_the_loss() {
    let root = std::env::temp_dir().join(format!("gsc-ramp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let o = gsc()
        .args(["run", "tests/fixtures/ramp.gs", "--runs-dir"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = records(&root);
    for run in ["g", "n"] {
        let of_run = |kind: &str| -> Vec<&serde_json::Value> {
            records
                .iter()
                .filter(|r| r["kind"] == kind && r["run"] == run)
                .collect()
        };
        let growth = of_run("growth");
        assert_eq!(growth.len(), 1, "{run}: {growth:?}");
        let g = growth[0];
        assert_eq!(g["exact"], true, "{run}: {g}");
        let (before, after) = (
            g["loss_before"].as_f64().unwrap(),
            g["loss_after"].as_f64().unwrap(),
        );
        assert!(
            (before - after).abs() <= 1e-6 * before.abs(),
            "{run}: loss {before} → {after} at the growth"
        );
        assert_eq!(g["steps"][0]["method"]["method"], "ramp", "{run}: {g}");
        // The stage after the growth trains all 10 steps: 5 of ramp, 5 past it.
        let steps: Vec<u64> = of_run("step")
            .iter()
            .filter(|r| r["stage"] == "big")
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (11..=20).collect::<Vec<_>>(), "{run}");
        let last = of_run("eval").last().unwrap()["val_loss"].as_f64().unwrap();
        assert!(last.is_finite(), "{run}: final val_loss {last}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_gated_stage_reads_its_gates() {
    let o = gsc()
        .args([
            "compile",
            "tests/fixtures/ramp.gs",
            "--emit=kernels",
            "--stage=n.big",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("buffer head_gate : 3xf32 (io)")
            && text.contains("buffer ffn_gate : 96xf32 (io)"),
        "{text}"
    );
    // The stage before the growth has no gates.
    let o = gsc()
        .args([
            "compile",
            "tests/fixtures/ramp.gs",
            "--emit=kernels",
            "--stage=n.small",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains("head_gate") && !text.contains("ffn_gate"),
        "{text}"
    );
}
