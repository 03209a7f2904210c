//! The data-parallel step: the gradients of each rank's share of a batch,
//! averaged, then the update (`compile_split_step`), leave the same
//! parameters and moments as the fused step on the whole batch, over three
//! steps, for each architecture and with gates.
//!
//! Tolerances: in f64 (the reference interpreter) the order in which the
//! batch's tokens are added differs, and the gradients pass between the
//! programs as f32 (as every buffer a backend hands out): a rounding of
//! 6e-8 relative each step, so 1e-6 relative to each tensor's largest
//! value; the CPU backend in f32 is held to the 2e-4 of its parity
//! with the interpreter (`parity.rs`), since the split step adds in yet
//! another order and AdamW's `m / √v` amplifies last-bit differences in
//! small gradients.

mod common;

use common::{tiny, train_config, GATES};
use gsc_compiler::graph::Gates;
use gsc_compiler::kernel::Storage;
use gsc_compiler::plan::{Activation, Arch, ModelConfig, NormKind};
use gsc_compiler::{compile_split_step, compile_stage_gated};
use gsc_runtime::backend::{Backend, Cpu, Program};
use gsc_runtime::grow::ModelState;
use gsc_runtime::interp::InterpBackend;

const BATCH: usize = 4;
const STEPS: usize = 3;

/// Parameters and moments of `p`, one tensor per entry.
fn state(p: &dyn Program, cfg: &ModelConfig) -> Vec<Vec<f32>> {
    (0..cfg.params().len())
        .flat_map(|i| [Storage::Param(i), Storage::AdamM(i), Storage::AdamV(i)])
        .map(|s| p.read(s).unwrap())
        .collect()
}

fn init(p: &mut dyn Program, cfg: &ModelConfig) {
    let st = ModelState::init(cfg, 3);
    for (i, w) in st.params.iter().enumerate() {
        let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
        p.write(Storage::Param(i), &w).unwrap();
    }
}

/// `STEPS` steps on fixed batches of `BATCH` sequences: the losses and the
/// final state, from the fused step or from `ranks` shares.
fn train(
    backend: &dyn Backend,
    cfg: &ModelConfig,
    gates: Gates,
    ranks: usize,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let train = train_config(1e-2, 0.1, Some(0.5));
    let n = cfg.context;
    let mut rng = gsc_compiler::init::rng::SplitMix64::new(9);
    let mut tokens = || -> Vec<i32> {
        (0..BATCH * n)
            .map(|_| rng.below(cfg.vocab as u64) as i32)
            .collect()
    };
    let batches: Vec<(Vec<i32>, Vec<i32>)> = (0..STEPS).map(|_| (tokens(), tokens())).collect();
    let gate = |len: usize, step: usize| -> Vec<f32> {
        (0..len)
            .map(|i| if i + 1 == len { step as f32 / 4.0 } else { 1.0 })
            .collect()
    };
    let feed = |p: &mut dyn Program, t: &[i32], y: &[i32], step: usize| {
        p.write_ints(Storage::Tokens, t).unwrap();
        p.write_ints(Storage::Targets, y).unwrap();
        if gates.heads {
            p.write(Storage::HeadGate, &gate(cfg.heads, step)).unwrap();
        }
        if gates.ffn {
            p.write(Storage::FfnGate, &gate(cfg.ffn, step)).unwrap();
        }
    };
    let mut losses = Vec::new();
    if ranks == 1 {
        let fused = compile_stage_gated(cfg, &train, BATCH, gates).unwrap();
        let mut p = backend.load(&fused.kernels).unwrap();
        init(p.as_mut(), cfg);
        for (step, (t, y)) in batches.iter().enumerate() {
            feed(p.as_mut(), t, y, step);
            p.write(Storage::Lr, &[1e-2]).unwrap();
            p.write(Storage::Step, &[step as f32 + 1.0]).unwrap();
            p.run().unwrap();
            losses.push(p.read(Storage::Loss).unwrap()[0]);
        }
        return (losses, state(p.as_ref(), cfg));
    }
    let split = compile_split_step(cfg, &train, BATCH / ranks, gates).unwrap();
    let mut update = backend.load(&split.update).unwrap();
    init(update.as_mut(), cfg);
    let mut grads = backend.load_sharing(&split.grads, update.as_ref()).unwrap();
    let share = BATCH / ranks * n;
    for (step, (t, y)) in batches.iter().enumerate() {
        // Each "rank" in turn, on the same parameters; then the mean.
        let mut loss = 0.0;
        let mut sum: Vec<Vec<f32>> = vec![];
        for r in 0..ranks {
            let part = r * share..(r + 1) * share;
            feed(grads.as_mut(), &t[part.clone()], &y[part], step);
            grads.run().unwrap();
            loss += grads.read(Storage::Loss).unwrap()[0];
            for i in 0..cfg.params().len() {
                let g = grads.read(Storage::Grad(i)).unwrap();
                match sum.get_mut(i) {
                    Some(s) => s.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
                    None => sum.push(g),
                }
            }
        }
        for (i, g) in sum.iter().enumerate() {
            let mean: Vec<f32> = g.iter().map(|v| v / ranks as f32).collect();
            update.write(Storage::Grad(i), &mean).unwrap();
        }
        update.write(Storage::Lr, &[1e-2]).unwrap();
        update.write(Storage::Step, &[step as f32 + 1.0]).unwrap();
        update.run().unwrap();
        losses.push(loss / ranks as f32);
    }
    (losses, state(update.as_ref(), cfg))
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    assert!(
        worst <= rel * scale,
        "{what}: max |Δ| {worst:e} against scale {scale:e}"
    );
}

fn same_training(backend: &dyn Backend, cfg: &ModelConfig, gates: Gates, rel: f32) {
    let (l1, s1) = train(backend, cfg, gates, 1);
    for ranks in [2, 4] {
        let (l, s) = train(backend, cfg, gates, ranks);
        let name = format!("{} {:?} {gates:?} {ranks} ranks", backend.name(), cfg.arch);
        assert_close(&format!("{name}: losses"), &l, &l1, rel);
        for (k, (a, b)) in s.iter().zip(&s1).enumerate() {
            assert_close(&format!("{name}: state tensor {k}"), a, b, rel);
        }
    }
}

fn models() -> Vec<ModelConfig> {
    vec![
        tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true),
        tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Swiglu, false),
        tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false),
    ]
}

#[test]
fn split_steps_train_as_the_fused_step_in_f64() {
    for cfg in models() {
        same_training(
            &InterpBackend::<f64>::default(),
            &cfg,
            Gates::default(),
            1e-6,
        );
    }
}

#[test]
fn split_steps_train_as_the_fused_step_on_the_cpu_with_gates() {
    for cfg in models() {
        for gates in GATES {
            same_training(&Cpu, &cfg, gates, 2e-4);
        }
    }
}
