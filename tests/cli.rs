//! End-to-end runs of the `gsc` binary: exit codes and what it prints.

mod common;

use std::process::{Command, Output};

fn gsc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gsc"))
        .args(args)
        .output()
        .expect("gsc runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("gsc exited, not killed by a signal")
}

#[test]
fn check_accepts_every_example() {
    for path in common::examples() {
        let o = gsc(&["check", path.to_str().unwrap()]);
        assert_eq!(
            code(&o),
            0,
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn compile_prints_the_plan() {
    for path in common::examples() {
        let o = gsc(&["compile", path.to_str().unwrap(), "--emit=plan"]);
        assert_eq!(code(&o), 0);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("FLOPs/token") && text.contains("total:"),
            "{text}"
        );
        let o = gsc(&[
            "compile",
            path.to_str().unwrap(),
            "--emit=plan",
            "--format=json",
        ]);
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
        assert!(
            json["runs"][0]["stages"][0]["param_count"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
}

#[test]
fn compile_emits_every_level_of_a_stage() {
    for (emit, needle) in [
        ("ir", "matmul"),
        ("ir-grad", "matmul"),
        ("kernels", "peak planned memory"),
    ] {
        let o = gsc(&[
            "compile",
            "examples/smoke.gs",
            &format!("--emit={emit}"),
            "--stage=tiny.grown",
        ]);
        assert_eq!(
            code(&o),
            0,
            "{emit}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.starts_with("// stage tiny.grown") && text.contains(needle),
            "{emit}: {text}"
        );
    }
    let o = gsc(&["compile", "examples/smoke.gs", "--emit=ir", "--stage=nope"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("tiny.small, tiny.grown"));
}

#[test]
fn errors_exit_1_with_a_diagnostic() {
    let o = gsc(&["check", "tests/ui/heads_not_dividing.gs"]);
    assert_eq!(code(&o), 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gs::divisibility") && err.contains("help:"),
        "{err}"
    );

    let o = gsc(&["check", "no/such/file.gs"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no/such/file.gs"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(&gsc(&["compile"])), 2);
    assert_eq!(
        code(&gsc(&["compile", "examples/smoke.gs", "--emit=nonsense"])),
        2
    );
    assert_eq!(code(&gsc(&["frobnicate"])), 2);
    assert_eq!(code(&gsc(&["--help"])), 0);
}

#[test]
fn fmt_check_and_rewrite() {
    let dir = std::env::temp_dir().join(format!("gsc-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("messy.gs");
    std::fs::write(
        &file,
        "model m=gpt{context=8 d_model=8 // dims\nheads=2 layers=1}\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(code(&gsc(&["fmt", "--check", f])), 1);
    assert_eq!(code(&gsc(&["fmt", f])), 0);
    assert_eq!(code(&gsc(&["fmt", "--check", f])), 0);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, "model m = gpt {\n    context = 8\n    d_model = 8 // dims\n    heads = 2\n    layers = 1\n}\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Many broken files through the real binary: exit 1 with a diagnostic, or 0;
/// never a crash (101 is Rust's panic exit code).
#[test]
fn broken_files_never_crash_the_binary() {
    let dir = std::env::temp_dir().join(format!("gsc-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::fs::read_to_string("examples/fractional.gs").unwrap();
    let mut failures = 0;
    for i in 0..120usize {
        // Cut the file at a different place each time and glue on a shifted tail.
        let cut = (i * 7919) % source.len();
        let cut = (0..=cut)
            .rev()
            .find(|c| source.is_char_boundary(*c))
            .unwrap();
        let resume = ((cut + i % 13).min(source.len())..=source.len())
            .find(|c| source.is_char_boundary(*c))
            .unwrap();
        let text = format!("{}{}", &source[..cut], &source[resume..]);
        let file = dir.join(format!("case{i}.gs"));
        std::fs::write(&file, text).unwrap();
        let o = gsc(&["check", file.to_str().unwrap()]);
        let c = code(&o);
        assert!(
            c == 0 || c == 1,
            "exit code {c} on case {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if c == 1 {
            failures += 1;
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("gs::")
                    || String::from_utf8_lossy(&o.stderr).contains("error")
            );
        }
    }
    assert!(
        failures > 60,
        "most cut-up files should be rejected, {failures} were"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A gsc built without the CUDA backend says how to get it.
#[cfg(not(feature = "cuda"))]
#[test]
fn the_cuda_backend_without_the_feature_is_a_clear_error() {
    for args in [
        &[
            "run",
            "examples/smoke.gs",
            "--backend",
            "cuda",
            "--runs-dir",
            "/nonexistent/runs",
        ][..],
        &["bench", "S", "--backend", "cuda", "--single"],
    ] {
        let o = gsc(args);
        assert_eq!(code(&o), 1, "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--features cuda"), "{args:?}: {err}");
    }
}

/// A gsc built without MLIR says how to get it, and compiles nothing.
#[cfg(not(feature = "mlir"))]
#[test]
fn mlir_paths_without_the_feature_are_a_clear_error() {
    for args in [
        &["compile", "examples/smoke.gs", "--emit=ptx"][..],
        &["compile", "examples/smoke.gs", "--emit=mlir"],
        &[
            "run",
            "examples/smoke.gs",
            "--backend",
            "mlir",
            "--runs-dir",
            "/nonexistent/runs",
        ],
    ] {
        let o = gsc(args);
        assert_eq!(code(&o), 1, "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--features mlir"), "{args:?}: {err}");
        assert!(String::from_utf8_lossy(&o.stdout).is_empty(), "{args:?}");
    }
}

/// The data-parallel view of the plan: 4 bytes of gradient a parameter,
/// a ring all-reduce of 2(N−1)/N of them, compute over N ranks, memory
/// per rank replicated and sharded; a batch that does not divide is marked.
#[test]
fn compile_with_ranks_prints_what_data_parallelism_costs() {
    let smoke = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/smoke.gs");
    let o = gsc(&["compile", smoke.to_str().unwrap(), "--ranks", "4"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let view = &text[text.find("data parallel over").expect("the view")..];
    insta::assert_snapshot!(view);
    let o = gsc(&["compile", smoke.to_str().unwrap(), "--ranks", "3"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("2.67*"), "{text}");
    assert!(text.contains("gsc run refuses it"), "{text}");
    let o = gsc(&[
        "compile",
        smoke.to_str().unwrap(),
        "--emit=ir",
        "--ranks",
        "2",
    ]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ranks goes with --emit=plan"));
}

/// The benchmarks' workloads check clean and are formatted, as the
/// examples are.
#[test]
fn bench_workloads_check_and_are_formatted() {
    let files = common::gs_files("bench/workloads");
    assert_eq!(files.len(), 3, "{files:?}");
    for path in files {
        let p = path.to_str().unwrap();
        for args in [vec!["check", p], vec!["fmt", "--check", p]] {
            let o = gsc(&args);
            assert_eq!(
                code(&o),
                0,
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// A bench line says which machine it ran on: the CPU, the instruction set
/// of gsc's kernels (GSC_ISA picks a narrower one) and the measured matmul
/// rate, against which the step's rate is given, and whose loop kernels ran.
#[test]
fn bench_names_the_machine_and_its_measured_peak() {
    let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
        .args(["bench", "S", "--single", "--steps", "1", "--warmup", "0"])
        .env("GSC_ISA", "portable")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["isa"], "portable");
    assert!(!line["cpu"].as_str().unwrap().is_empty());
    let peak = line["gemm_peak_gflops"].as_f64().unwrap();
    let rate = line["gflops"].as_f64().unwrap();
    assert!(peak > 0.0 && rate > 0.0, "{line}");
    let share = line["of_gemm_peak"].as_f64().unwrap();
    assert!((share - rate / peak).abs() < 0.01, "{line}");
    // What a long run trains with: MLIR's loop kernels where gsc has MLIR.
    let code = if cfg!(feature = "mlir") {
        "mlir"
    } else {
        "cranelift"
    };
    assert_eq!(line["loop_code"], code, "{line}");
}

#[test]
fn bench_trains_in_bf16_when_asked() {
    // Through the per-workload child process, which must be told too.
    let o = gsc(&[
        "bench",
        "S",
        "--precision",
        "bf16",
        "--steps",
        "1",
        "--warmup",
        "0",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["precision"], "bf16", "{line}");
    assert!(line["final_loss"].as_f64().unwrap().is_finite(), "{line}");
}
