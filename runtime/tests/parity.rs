//! Five whole training steps on the CPU backend (and, with the `mlir`
//! feature, on the MLIR backend) agree with the reference interpreter (f64)
//! for each architecture, through the same `Backend` interface the training
//! loop uses.
//!
//! Tolerance: 2e-4 relative to each tensor's largest value. The CPU backend
//! computes in f32 with a different summation order (blocked GEMM, flash
//! attention, f32x4 reductions); over five AdamW steps at lr 1e-2 an update
//! moves a weight by ~1e-2, so f32 rounding (~1e-7 per op, a few hundred ops
//! deep) stays three orders of magnitude below anything a bug would cause.

mod common;

use common::{tiny, train_config};
use gsc_compiler::compile_stage_gated;
use gsc_compiler::graph::Gates;
use gsc_compiler::kernel::Storage;
use gsc_compiler::plan::{Activation, Arch, ModelConfig, NormKind};
use gsc_runtime::backend::{Backend, Cpu};
use gsc_runtime::grow::ModelState;
use gsc_runtime::interp::InterpBackend;

fn five_steps(backend: &dyn Backend, cfg: &ModelConfig) -> (Vec<f32>, Vec<Vec<f32>>) {
    five_gated_steps(backend, cfg, Gates::default(), None)
}

/// Five steps of a stage with `gates`, the last unit of each gated axis
/// ramping in over them (step / 5) while the others stay at 1; from step
/// `switch` on, on the code the program compiled beside its first.
fn five_gated_steps(
    backend: &dyn Backend,
    cfg: &ModelConfig,
    gates: Gates,
    switch: Option<usize>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let batch = 3;
    let train = train_config(1e-2, 0.1, Some(1.0));
    let compiled = compile_stage_gated(cfg, &train, batch, gates).unwrap();
    let mut p = backend.load(&compiled.kernels).unwrap();
    let beside = switch.is_some() && p.compile_beside();
    let st = ModelState::init(cfg, 11);
    for (i, w) in st.params.iter().enumerate() {
        p.write(
            Storage::Param(i),
            &w.iter().map(|&x| x as f32).collect::<Vec<_>>(),
        )
        .unwrap();
    }
    let mut rng = gsc_compiler::init::rng::SplitMix64::new(5);
    let mut losses = Vec::new();
    // One fixed batch: the loss must fall as the model fits it.
    let n = batch * cfg.context;
    let tokens: Vec<i32> = (0..n).map(|_| rng.below(cfg.vocab as u64) as i32).collect();
    let targets: Vec<i32> = (0..n).map(|_| rng.below(cfg.vocab as u64) as i32).collect();
    for step in 1..=5 {
        if switch == Some(step) {
            assert_eq!(p.switch_code().unwrap(), beside);
        }
        p.write_ints(Storage::Tokens, &tokens).unwrap();
        p.write_ints(Storage::Targets, &targets).unwrap();
        p.write(Storage::Lr, &[1e-2]).unwrap();
        p.write(Storage::Step, &[step as f32]).unwrap();
        let ramp = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| if i + 1 == n { step as f32 / 5.0 } else { 1.0 })
                .collect()
        };
        if gates.heads {
            p.write(Storage::HeadGate, &ramp(cfg.heads)).unwrap();
        }
        if gates.ffn {
            p.write(Storage::FfnGate, &ramp(cfg.ffn)).unwrap();
        }
        p.run().unwrap();
        losses.push(p.read(Storage::Loss).unwrap()[0]);
    }
    let params = (0..cfg.params().len())
        .map(|i| p.read(Storage::Param(i)).unwrap())
        .collect();
    (losses, params)
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 2e-4 * scale,
        "{what}: max |Δ| {worst:e} against scale {scale:e}"
    );
}

#[test]
fn cpu_matches_the_interpreter_over_five_steps() {
    matches_the_interpreter_over_five_steps(&Cpu);
}

/// Stages with gates (heads, FFN units, both) ramping in, gpt and nGPT.
#[test]
fn cpu_matches_the_interpreter_with_gates() {
    for cfg in [
        tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true),
        tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false),
    ] {
        for gates in common::GATES {
            let (l_ref, p_ref) =
                five_gated_steps(&InterpBackend::<f64>::default(), &cfg, gates, None);
            let (l_cpu, p_cpu) = five_gated_steps(&Cpu, &cfg, gates, None);
            let name = format!("cpu {:?} {gates:?}", cfg.arch);
            assert_close(&format!("{name} losses"), &l_cpu, &l_ref);
            for (i, spec) in cfg.params().iter().enumerate() {
                assert_close(&format!("{name} {}", spec.name), &p_cpu[i], &p_ref[i]);
            }
        }
    }
}

/// A program that switches code between steps (to MLIR's loop kernels,
/// with the `mlir` feature; without it there is nothing to switch to)
/// still tracks the interpreter, and runs the new code afterwards.
#[test]
fn cpu_switching_code_mid_run_matches_the_interpreter() {
    let cfg = tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Gelu, true);
    let (l_ref, p_ref) = five_gated_steps(
        &InterpBackend::<f64>::default(),
        &cfg,
        Gates::default(),
        None,
    );
    let (l_cpu, p_cpu) = five_gated_steps(&Cpu, &cfg, Gates::default(), Some(3));
    assert_close("switched losses", &l_cpu, &l_ref);
    for (i, spec) in cfg.params().iter().enumerate() {
        assert_close(&format!("switched {}", spec.name), &p_cpu[i], &p_ref[i]);
    }
    let train = train_config(1e-2, 0.1, Some(1.0));
    let compiled = compile_stage_gated(&cfg, &train, 3, Gates::default()).unwrap();
    let mut p = Cpu.load(&compiled.kernels).unwrap();
    let started = p.compile_beside();
    assert_eq!(started, cfg!(feature = "mlir"));
    assert_eq!(p.switch_code().unwrap(), started);
    let now = if started { "mlir" } else { "cranelift" };
    assert_eq!(p.code(), now);
    assert!(!p.switch_code().unwrap(), "nothing left to switch to");
}

/// Code compiled beside the first replaces it only when it compiled: a
/// failed one leaves the executor on its old code, still running.
#[test]
fn a_failed_code_switch_keeps_the_old_code() {
    use gsc_runtime::buffers::ProgramBuffers;
    use gsc_runtime::cpu::jit::{compile_program_with, JitError, JitOptions};
    use gsc_runtime::cpu::CpuBackend;
    let cfg = tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true);
    let train = train_config(1e-2, 0.1, Some(1.0));
    let program = compile_stage_gated(&cfg, &train, 2, Gates::default())
        .unwrap()
        .kernels;
    let mut exec = CpuBackend::new(&program).unwrap();
    let mut bufs = ProgramBuffers::new(&program).unwrap();
    exec.compile_beside(|_| Err(JitError::Program("refused".into())));
    let err = exec.switch_code().unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    exec.execute(&mut bufs).unwrap();
    // Another Cranelift build (scalar loops) is a switch all the same.
    exec.compile_beside(|p| {
        let options = JitOptions {
            simd: false,
            ..JitOptions::default()
        };
        compile_program_with(p, options).map(|j| Box::new(j) as _)
    });
    assert!(exec.switch_code().unwrap());
    exec.execute(&mut bufs).unwrap();
    assert_eq!(exec.loop_code(), "cranelift");
}

#[cfg(feature = "mlir")]
#[test]
fn mlir_matches_the_interpreter_over_five_steps() {
    matches_the_interpreter_over_five_steps(&gsc_runtime::backend::Mlir);
}

fn matches_the_interpreter_over_five_steps(backend: &dyn Backend) {
    let mut models = vec![
        tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true),
        tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Swiglu, false),
        tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false),
    ];
    // Widths that are not multiples of the vector width, and grouped queries.
    let mut odd = tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true);
    odd.d_model = 10;
    odd.heads = 4;
    odd.kv_heads = 2;
    odd.head_dim = 2;
    odd.ffn = 13;
    models.push(odd);
    for cfg in models {
        let (l_ref, p_ref) = five_steps(&InterpBackend::<f64>::default(), &cfg);
        let (l_cpu, p_cpu) = five_steps(backend, &cfg);
        let name = format!(
            "{} {:?}/{:?}/{:?}",
            backend.name(),
            cfg.arch,
            cfg.norm,
            cfg.activation
        );
        assert_close(&format!("{name} losses"), &l_cpu, &l_ref);
        assert!(
            l_ref[4] < l_ref[0],
            "{name}: the loss should fall: {l_ref:?}"
        );
        for (i, spec) in cfg.params().iter().enumerate() {
            assert_close(&format!("{name} {}", spec.name), &p_cpu[i], &p_ref[i]);
        }
    }
}
