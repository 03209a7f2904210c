//! A run killed at any moment and resumed ends with exactly the parameters
//! of an uninterrupted run; and its metrics hold each step once.

mod common;

use common::{checkpoint_parts, fresh, gsc, run_dir, step_checkpoints, unfinish};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The tensors of the final checkpoint, and the tokens and FLOPs it records.
fn final_checkpoint(dir: &Path) -> (Vec<u8>, serde_json::Value) {
    let files = step_checkpoints(dir, "tiny");
    let last = files.last().expect("a checkpoint");
    assert!(last.ends_with("step-000000080.safetensors"), "{last:?}");
    let (tensors, meta) = checkpoint_parts(last);
    let spent = serde_json::json!([meta["progress"]["tokens"], meta["progress"]["flops"]]);
    (tensors, spent)
}

fn checkpoints(dir: &Path) -> usize {
    step_checkpoints(dir, "tiny").len()
}

/// Copies the run's artifact into `cache` under its hash with every kernel
/// constant nudged: the same plan, other kernels.
fn plant_other_kernels(dir: &Path, cache: &Path) {
    fn nudge(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    match x {
                        serde_json::Value::Number(n) if k == "Const" => {
                            *x = serde_json::json!(n.as_f64().unwrap() * 1.01 + 1e-3);
                        }
                        _ => nudge(x),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(nudge),
            _ => {}
        }
    }
    let mut a: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("artifact.json")).unwrap()).unwrap();
    let before = a.clone();
    nudge(&mut a["stages"]);
    assert_ne!(a, before, "no kernel constant to nudge");
    std::fs::create_dir_all(cache).unwrap();
    let hash = a["hash"].as_str().unwrap().to_string();
    std::fs::write(
        cache.join(format!("{hash}.json")),
        serde_json::to_vec(&a).unwrap(),
    )
    .unwrap();
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
    assert!(reference.1[0].as_f64().unwrap() > 0.0, "{:?}", reference.1);
    // The states just before and after the growth are kept.
    for when in ["before", "after"] {
        let f = run_dir(&whole).join(format!("checkpoints/tiny/growth-01-{when}.safetensors"));
        assert!(f.is_file(), "{}", f.display());
    }

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
    // Resume from elsewhere, where the default cache holds other kernels
    // under this run's artifact hash (as a rebuilt compiler would have left
    // them): the resumed run must still execute the kernels it started with.
    let elsewhere = fresh("elsewhere");
    plant_other_kernels(&dir, &elsewhere.join("runs/.cache"));
    // Resume, and kill the resumed run too, mid-way, before finishing it.
    let mut again = gsc()
        .current_dir(&elsewhere)
        .arg("run")
        .arg("--resume")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = again.kill();
    again.wait().unwrap();
    let o = gsc()
        .current_dir(&elsewhere)
        .arg("run")
        .arg("--resume")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        final_checkpoint(&dir),
        reference,
        "resumed run ended with different parameters, or other tokens and FLOPs spent"
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
    let o = gsc()
        .current_dir(&elsewhere)
        .arg("run")
        .arg("--resume")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success());
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&cut);
}

/// A `.gs` file in `root` with two tiny runs, `a` and `b`, of 3 steps each.
fn two_runs(root: &Path) -> PathBuf {
    let small = std::fs::canonicalize("tests/fixtures/small.txt").unwrap();
    let file = root.join("two.gs");
    let model = |name: &str| {
        format!("model {name} = gpt {{\n    context = 8\n    d_model = 8\n    heads = 2\n    layers = 1\n}}\n")
    };
    std::fs::write(
        &file,
        format!(
            "data text {{\n    text = {:?}\n}}\n{}{}train {{\n    optimizer = adamw(lr = 1e-3)\n    batch = 2 sequences\n}}\ngrow a {{\n    stage s: train 3 steps\n}}\ngrow b {{\n    stage s: train 3 steps\n}}\n",
            small.display().to_string(),
            model("a"),
            model("b")
        ),
    )
    .unwrap();
    file
}

/// Runs `a` of [`two_runs`] in `root` with `--run a`; its run directory.
fn run_a_of_two(root: &Path) -> PathBuf {
    let file = two_runs(root);
    let runs = root.join("runs");
    let o = gsc()
        .arg("run")
        .arg(&file)
        .args(["--run", "a", "--runs-dir"])
        .arg(&runs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run_dir(&runs)
}

/// A run started with `--run NAME` resumes as that run alone, not as every
/// run of its file.
#[test]
fn a_chosen_run_resumes_alone() {
    let dir = run_a_of_two(&fresh("only"));
    let o = gsc().arg("run").arg("--resume").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains(r#""run":"a""#), "{metrics}");
    assert!(
        !metrics.contains(r#""run":"b""#),
        "the resume trained run b:\n{metrics}"
    );
}

/// A resume by the build that started the run is silent; one by another
/// build of the runtime says that the steps from there may round differently.
#[test]
fn a_resume_by_another_runtime_build_is_named() {
    let dir = run_a_of_two(&fresh("other-build"));
    let resume = || gsc().arg("run").arg("--resume").arg(&dir).output().unwrap();
    let o = resume();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !stderr.contains("warning"),
        "{stderr}"
    );

    let manifest = dir.join("run.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m["runtime_version"] = "0.0.1+elsewhere".into();
    std::fs::write(&manifest, m.to_string()).unwrap();
    let o = resume();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("started by gsc runtime 0.0.1+elsewhere"),
        "{stderr}"
    );
}

/// A stage that reached its `until` target before its cap is over: a
/// resume from its final checkpoint grows into the next stage, as the
/// uninterrupted run did, instead of training the finished stage on.
#[test]
fn a_resume_after_a_stage_stopped_at_its_target_moves_on() {
    let root = fresh("until");
    let source = std::fs::read_to_string("tests/fixtures/resume.gs")
        .unwrap()
        .replace(
            "\"small.txt\"",
            &format!(
                "{:?}",
                std::fs::canonicalize("tests/fixtures/small.txt")
                    .unwrap()
                    .display()
                    .to_string()
            ),
        )
        .replace(
            "stage a: train 40 steps",
            "stage a: train until val_loss <= 100 or 40 steps",
        );
    let file = root.join("until.gs");
    std::fs::write(&file, source).unwrap();
    let runs = root.join("runs");
    let o = gsc()
        .arg("run")
        .arg(&file)
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("reached val_loss"), "{stdout}");
    let dir = run_dir(&runs);
    let reference = checkpoint_parts(step_checkpoints(&dir, "tiny").last().unwrap()).0;
    // Back to the end of stage a: its final checkpoint alone, the records
    // after it gone.
    let ckpts = dir.join("checkpoints/tiny");
    let before = ckpts.join("growth-01-before.safetensors");
    let (_, meta) = checkpoint_parts(&before);
    assert_eq!(meta["stage_done"], true);
    let kept = ckpts.join(format!(
        "step-{:09}.safetensors",
        meta["step"].as_u64().unwrap()
    ));
    std::fs::rename(&before, &kept).unwrap();
    for f in std::fs::read_dir(&ckpts).unwrap() {
        let f = f.unwrap().path();
        if f != kept {
            std::fs::remove_file(f).unwrap();
        }
    }
    unfinish(&dir);
    let o = gsc().arg("run").arg("--resume").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("grow into b") && !stdout.contains(" a        step"),
        "{stdout}"
    );
    let resumed = checkpoint_parts(step_checkpoints(&dir, "tiny").last().unwrap()).0;
    assert!(resumed == reference, "the resumed run ended elsewhere");
}
