//! The command line's MLIR paths (feature `mlir`): MLIR and PTX of every
//! stage of every example, and a whole schedule, growth included, trained
//! on `--backend mlir` to the same losses as on the Cranelift backend.

#![cfg(feature = "mlir")]

mod common;

use gsc_compiler::kernel::Kernel;

use std::process::{Command, Output};

fn gsc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gsc"))
        .args(args)
        .output()
        .expect("gsc runs")
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `RUN.STAGE` of every stage of `example`, from its JSON plan.
fn stages(example: &str) -> Vec<String> {
    let o = gsc(&["compile", example, "--emit=plan", "--format=json"]);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON plan");
    let mut out = vec![];
    for run in plan["runs"].as_array().expect("runs") {
        for st in run["stages"].as_array().expect("stages") {
            out.push(format!(
                "{}.{}",
                run["name"].as_str().unwrap(),
                st["name"].as_str().unwrap()
            ));
        }
    }
    out
}

#[test]
fn every_stage_of_every_example_lowers_to_mlir_and_ptx() {
    for path in common::examples() {
        let example = path.to_str().unwrap();
        let mut stages = stages(example);
        // The experiments' hundred stages are the examples' architectures at
        // other shapes, with the same kernel kinds: their first run's suffice.
        if example.contains("experiments") {
            let first = stages[0].split('.').next().unwrap().to_string() + ".";
            stages.retain(|s| s.starts_with(&first));
        }
        for stage in stages {
            let what = format!("{example} {stage}");
            let stage_arg = format!("--stage={stage}");
            let mlir = ok(
                &gsc(&["compile", example, "--emit=mlir", &stage_arg]),
                &what,
            );
            assert!(
                mlir.contains("scf.for") && mlir.contains("memref.store"),
                "{what}"
            );
            let gpu = ok(
                &gsc(&[
                    "compile",
                    example,
                    "--emit=mlir",
                    "--target=cuda",
                    &stage_arg,
                ]),
                &what,
            );
            assert!(
                gpu.contains("gpu.module @gsc_kernels") && gpu.contains("gpu.func"),
                "{what}"
            );
            for chip in ["sm_80", "sm_90"] {
                let ptx = ok(
                    &gsc(&["compile", example, "--emit=ptx", "--chip", chip, &stage_arg]),
                    &what,
                );
                assert!(
                    ptx.contains(&format!(".target {chip}")) && ptx.contains(".entry"),
                    "{what}"
                );
            }
        }
    }
}

/// The last `val_loss` line of a run's output.
fn final_val_loss(out: &str) -> f64 {
    out.lines()
        .rev()
        .filter_map(|l| l.split("val_loss ").nth(1))
        .find_map(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no val_loss in:\n{out}"))
}

/// The smoke schedule on MLIR's loop kernels, on Cranelift's, and on
/// Cranelift's switching to MLIR's after each stage's first step (what a
/// long stage of `--backend cpu` does): all end at the same loss.
#[test]
fn the_smoke_schedule_trains_and_grows_on_the_mlir_backend() {
    let dir = std::env::temp_dir().join(format!("gsc-mlir-cli-{}", std::process::id()));
    let runs = dir.to_str().unwrap();
    let mut losses = vec![];
    for (backend, switch) in [("mlir", "never"), ("cpu", "never"), ("cpu", "always")] {
        let what = format!("{backend}, switching {switch}");
        let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
            .args([
                "run",
                "examples/smoke.gs",
                "--backend",
                backend,
                "--runs-dir",
                runs,
            ])
            .env("GSC_SWITCH_CODE", switch)
            .output()
            .expect("gsc runs");
        let out = ok(&o, &what);
        assert!(out.contains(&format!("loaded on {backend}")), "{out}");
        let switched = out.matches("loop kernels now mlir's").count();
        let want = if backend == "cpu" && switch == "always" {
            2
        } else {
            0
        };
        assert_eq!(switched, want, "{what}: once per stage or never\n{out}");
        let planned = out
            .matches("loop kernels compiling beside, from step")
            .count();
        assert_eq!(
            planned, want,
            "{what}: announced at each stage's start\n{out}"
        );
        losses.push(final_val_loss(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Both compute in f32 with their own summation orders and math
    // functions: 80 steps apart, the loss agrees to a few units in 1e-4.
    for (name, loss) in [("cpu", losses[1]), ("cpu switching to mlir", losses[2])] {
        assert!(
            (losses[0] - loss).abs() < 2e-3,
            "mlir {} against {name} {loss}",
            losses[0],
        );
    }
}

#[test]
fn the_cuda_artifact_carries_ptx_for_every_program_and_chip() {
    let out = ok(
        &gsc(&[
            "compile",
            "examples/smoke.gs",
            "--target=cuda",
            "--emit=artifact",
            "--chip=sm_80,sm_90",
        ]),
        "artifact",
    );
    let a: gsc_runtime::run::artifact::Artifact = serde_json::from_str(&out).expect("an artifact");
    assert_eq!(a.stages.len(), 2);
    for st in &a.stages {
        for (name, p) in [("step", &st.step), ("forward", &st.forward)] {
            let hash = gsc_runtime::run::artifact::program_hash(p);
            for chip in ["sm_80", "sm_90"] {
                let x = st
                    .ptx
                    .iter()
                    .find(|x| x.program == name && x.chip == chip)
                    .unwrap_or_else(|| panic!("{}.{} {name} {chip}: no PTX", st.run, st.stage));
                assert_eq!(x.program_hash, hash, "keyed by the program it came from");
                assert!(x.llvm.starts_with("22."), "{}", x.llvm);
                for e in &x.entries {
                    assert!(x.ptx.contains(&format!(".entry {}(", e.symbol)));
                }
                // What the GPU runs: products (cuBLAS) and loop kernels,
                // every one of which has its entry in the PTX.
                let gpu = gsc_compiler::kernel::library::for_gpu(p);
                for (i, k) in gpu.kernels.iter().enumerate() {
                    match k {
                        Kernel::MatMul { .. } => {}
                        Kernel::Loop(_) => assert!(
                            x.entries.iter().any(|e| e.kernel == i),
                            "{name} {chip}: loop kernel k{i} ({}) has no PTX entry",
                            k.name()
                        ),
                        other => panic!("{name}: {} left for the GPU", other.name()),
                    }
                }
                assert!(
                    gpu.kernels.len() > p.kernels.len(),
                    "attention became several kernels"
                );
            }
        }
    }
}

/// A run on switching code (MLIR's loop kernels from each stage's second
/// step), killed mid-stage and resumed, switches again where it resumes and
/// ends with exactly the parameters of an uninterrupted one: which code runs
/// a step depends on the plan alone.
#[test]
fn a_run_switching_code_killed_and_resumed_equals_uninterrupted() {
    use common::{checkpoint_parts, fresh, run_dir, step_checkpoints};
    use std::process::Stdio;
    let last = |dir: &std::path::Path| {
        let files = step_checkpoints(dir, "tiny");
        let last = files.last().expect("a checkpoint").clone();
        assert!(last.ends_with("step-000000080.safetensors"), "{last:?}");
        checkpoint_parts(&last).0
    };
    let run = |root: &std::path::Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gsc"));
        c.args(["run", "tests/fixtures/resume.gs", "--runs-dir"])
            .arg(root)
            .env("GSC_SWITCH_CODE", "always");
        c
    };
    let whole = fresh("switch-whole");
    let out = ok(&run(&whole).output().unwrap(), "uninterrupted");
    assert_eq!(out.matches("loop kernels now mlir's").count(), 2, "{out}");
    let reference = last(&run_dir(&whole));

    let cut = fresh("switch-cut");
    let mut child = run(&cut).stdout(Stdio::null()).spawn().unwrap();
    // Killed once two checkpoints (steps 7 and 14) exist, in the first stage.
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none()
        && started.elapsed() < std::time::Duration::from_secs(120)
    {
        let dirs = std::fs::read_dir(&cut).unwrap().filter_map(Result::ok);
        let runs: Vec<_> = dirs
            .filter(|e| e.path().is_dir() && !e.path().ends_with(".cache"))
            .collect();
        if runs.len() == 1 && step_checkpoints(&runs[0].path(), "tiny").len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let dir = run_dir(&cut);
    let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
        .args(["run", "--resume"])
        .arg(&dir)
        .env("GSC_SWITCH_CODE", "always")
        .output()
        .unwrap();
    let resumed = ok(&o, "resumed");
    assert!(resumed.contains("loop kernels now mlir's"), "{resumed}");
    assert!(
        last(&dir) == reference,
        "the resumed run ended with other parameters"
    );
}

/// Every stage of every example switches to MLIR's loop kernels and trains
/// on them (what a long stage of `--backend cpu` does in a build with
/// MLIR), two steps a stage. The experiments are left out: they are the
/// examples' architectures at other shapes, with the same kernel kinds.
#[test]
fn every_stage_of_every_example_trains_on_switched_code() {
    common::require_data();
    let root = std::env::temp_dir().join(format!("gsc-mlir-switch-{}", std::process::id()));
    for path in common::gs_files("examples") {
        let file = path.to_str().unwrap();
        let plan = ok(
            &gsc(&["compile", file, "--emit=plan", "--format=json"]),
            file,
        );
        let plan: serde_json::Value = serde_json::from_str(&plan).expect("a JSON plan");
        for run in plan["runs"].as_array().expect("runs") {
            let name = run["name"].as_str().unwrap();
            let stages = run["stages"].as_array().unwrap().len();
            let dir = root.join(format!("{}-{name}", common::stem(&path)));
            let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
                .args(["run", file, "--run", name, "--max-stage-steps", "2"])
                .arg("--runs-dir")
                .arg(&dir)
                .env("GSC_SWITCH_CODE", "always")
                .output()
                .expect("gsc runs");
            let out = ok(&o, &format!("{file} run {name}"));
            assert_eq!(
                out.matches("loop kernels now mlir's").count(),
                stages,
                "{file} run {name}: one switch per stage\n{out}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
