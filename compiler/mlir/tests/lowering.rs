//! The MLIR lowering of every kind of loop kernel a training step has
//! (snapshots of the kernel-level MLIR for the CPU and CUDA targets), PTX
//! that `ptxas` accepts for sm_80 and sm_90 for every program of every
//! architecture, and failures that name their phase, kernel and MLIR's
//! own diagnostic.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{tiny, train};
use gsc_compiler::kernel::{Kernel, KernelProgram};
use gsc_compiler::plan::{Activation, Arch, ModelConfig, NormKind};
use gsc_mlir::pipeline::Session;
use gsc_mlir::{compile_ptx, kernel_mlir, CudaOptions, Target};
use std::collections::BTreeMap;

/// Every architecture and variant whose kernels differ: gpt with GELU and
/// RMSNorm (tied), gpt with SwiGLU and LayerNorm (untied), nGPT.
fn models() -> Vec<(&'static str, ModelConfig)> {
    vec![
        (
            "gpt",
            tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true),
        ),
        (
            "gpt_ln_swiglu",
            tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Swiglu, false),
        ),
        (
            "ngpt",
            tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, true),
        ),
    ]
}

/// `(model, "step" | "forward", program)` for every model.
fn programs() -> Vec<(&'static str, &'static str, KernelProgram)> {
    let mut out = vec![];
    for (name, model) in models() {
        let stage = gsc_compiler::compile_stage(&model, &train(Some(1.0)), 2)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((name, "step", stage.kernels));
        out.push((name, "forward", stage.forward_kernels));
    }
    out
}

#[test]
fn every_loop_kernel_kind_lowers_to_mlir() {
    // One program per distinct kernel name (the fused ops), first seen.
    let mut kinds: BTreeMap<String, KernelProgram> = BTreeMap::new();
    for (_, _, p) in programs() {
        // As the GPU gets it: the embedding gradient and attention as
        // loop kernels.
        let p = gsc_kernel_ir::library::for_gpu(&p);
        for k in &p.kernels {
            let Kernel::Loop(l) = k else { continue };
            kinds
                .entry(l.name.clone())
                .or_insert_with(|| KernelProgram {
                    buffers: p.buffers.clone(),
                    kernels: vec![k.clone()],
                    arena_len: p.arena_len,
                });
        }
    }
    assert!(kinds.len() >= 10, "only {} kernel kinds", kinds.len());
    for (name, p) in &kinds {
        let cpu = kernel_mlir(p, Target::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cuda = kernel_mlir(p, Target::Cuda).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The math helpers are the same in every module: snapshot them once.
        let strip = |t: &str| -> String {
            let mut out = String::new();
            let mut skip = false;
            for line in t.lines() {
                let l = line.trim_start();
                if l.starts_with("func.func private @gsc_") {
                    skip = true;
                }
                if !skip {
                    out.push_str(line);
                    out.push('\n');
                }
                if skip && (line == "  }" || line == "    }") {
                    skip = false;
                }
            }
            out
        };
        insta::assert_snapshot!(
            format!("kernel_{name}"),
            format!("// cpu\n{}\n// cuda\n{}", strip(&cpu), strip(&cuda))
        );
    }
}

#[test]
fn the_math_helpers_are_arith_only() {
    let (_, _, p) = programs().into_iter().next().expect("a program");
    let text = kernel_mlir(&p, Target::Cpu).expect("lowers");
    let helpers: String = text
        .split("func.func ")
        .filter(|f| f.starts_with("private @gsc_"))
        .collect::<Vec<_>>()
        .join("func.func ");
    assert!(helpers.contains("@gsc_exp") && helpers.contains("@gsc_log"));
    // No call into a vendor math library: only arith and math.fma/absf.
    assert!(!helpers.contains("math.exp") && !helpers.contains("call"));
    insta::assert_snapshot!("math_helpers", helpers);
}

fn ptxas(toolkit: &std::path::Path) -> std::path::PathBuf {
    toolkit.join("bin").join("ptxas")
}

#[test]
fn ptxas_accepts_every_program_for_sm80_and_sm90() {
    let dir = std::env::temp_dir().join(format!("gsc-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for chip in ["sm_80", "sm_90"] {
        let options = CudaOptions::for_chip(chip).unwrap_or_else(|e| {
            panic!("{e}\n(the tests need the PyPI wheel nvidia-cuda-nvcc-cu12: pip install nvidia-cuda-nvcc-cu12)")
        });
        let ptxas = ptxas(&options.toolkit);
        for (model, which, p) in programs() {
            let m = compile_ptx(&p, &options).unwrap_or_else(|e| panic!("{model} {which}: {e}"));
            // What the GPU runs: attention and the embedding gradient as
            // loop kernels (and products).
            let loops = gsc_kernel_ir::library::for_gpu(&p)
                .kernels
                .iter()
                .filter(|k| matches!(k, Kernel::Loop(_)))
                .count();
            assert_eq!(
                m.entries.len(),
                loops,
                "{model} {which}: one entry per loop kernel of the GPU form"
            );
            for e in &m.entries {
                assert!(
                    m.ptx.contains(&format!(".entry {}(", e.symbol)),
                    "{model} {which}: no .entry {}",
                    e.symbol
                );
            }
            assert!(
                !m.ptx.contains(".extern"),
                "{model} {which}: unresolved externs"
            );
            let path = dir.join(format!("{model}-{which}-{chip}.ptx"));
            std::fs::write(&path, &m.ptx).expect("write ptx");
            let out = std::process::Command::new(&ptxas)
                .arg(format!("-arch={chip}"))
                .arg(&path)
                .arg("-o")
                .arg(path.with_extension("cubin"))
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
            assert!(
                out.status.success(),
                "ptxas rejects {model} {which} for {chip}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_parse_failure_names_the_phase_the_kernel_and_the_diagnostic() {
    let text = "module {\n  func.func @k7_gelu(%x: f32) -> f32 {\n    %y = arith.addf %x, %nope : f32\n    return %y : f32\n  }\n}\n";
    let session = Session::new(text.to_string());
    let Err(err) = session.parse() else {
        panic!("an undefined value is an error");
    };
    assert_eq!(err.phase, "parse");
    assert_eq!(err.kernel.as_deref(), Some("k7_gelu"));
    let all = err.diagnostics.join("\n");
    assert!(all.contains("undeclared SSA value"), "{all}");
    assert!(all.contains(":3:"), "the diagnostic has its line: {all}");
}

#[test]
fn a_bad_pipeline_is_reported_with_its_phase() {
    let session = Session::new("module {}\n".to_string());
    let mut m = session.parse().expect("parses");
    let err = session
        .phase("lower", "builtin.module(no-such-pass)", &mut m)
        .expect_err("an unknown pass is an error");
    assert_eq!(err.phase, "lower");
    assert!(err.diagnostics.join("\n").contains("no-such-pass"));
}
