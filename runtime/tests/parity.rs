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
    five_gated_steps(backend, cfg, Gates::default())
}

/// Five steps of a stage with `gates`, the last unit of each gated axis
/// ramping in over them (step / 5) while the others stay at 1.
fn five_gated_steps(
    backend: &dyn Backend,
    cfg: &ModelConfig,
    gates: Gates,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let batch = 3;
    let train = train_config(1e-2, 0.1, Some(1.0));
    let compiled = compile_stage_gated(cfg, &train, batch, gates).unwrap();
    let mut p = backend.load(&compiled.kernels).unwrap();
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
            let (l_ref, p_ref) = five_gated_steps(&InterpBackend::<f64>::default(), &cfg, gates);
            let (l_cpu, p_cpu) = five_gated_steps(&Cpu, &cfg, gates);
            let name = format!("cpu {:?} {gates:?}", cfg.arch);
            assert_close(&format!("{name} losses"), &l_cpu, &l_ref);
            for (i, spec) in cfg.params().iter().enumerate() {
                assert_close(&format!("{name} {}", spec.name), &p_cpu[i], &p_ref[i]);
            }
        }
    }
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
