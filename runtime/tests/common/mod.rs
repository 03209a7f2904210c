//! Shared by the interpreter's tests: tiny models, a fixed batch, and running
//! compiled programs.
#![allow(dead_code)]

use gsc_compiler::graph::Gates;
use gsc_compiler::init::rng::SplitMix64;
use gsc_compiler::kernel::{KernelProgram, Storage};
use gsc_compiler::plan::*;
use gsc_compiler::{compile_stage, compile_stage_gated, CompiledStage};
use gsc_runtime::interp::{run, Float, Memory};

pub fn tiny(arch: Arch, norm: NormKind, activation: Activation, tied: bool) -> ModelConfig {
    ModelConfig {
        arch,
        vocab: 11,
        context: 4,
        d_model: 8,
        heads: 2,
        kv_heads: 2,
        head_dim: 4,
        layers: 2,
        ffn: 12,
        activation,
        norm,
        tied,
        rope_base: 10000.0,
        init_std: 0.3,
        norm_eps: 1e-5,
    }
}

pub fn train_config(lr: f64, weight_decay: f64, clip: Option<f64>) -> TrainConfig {
    TrainConfig {
        optimizer: AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
        },
        schedule: LrSchedule {
            decay: Decay::Constant,
            warmup_steps: 0,
            min_ratio: 1.0,
            total_steps: 1000,
            decay_steps: 0,
        },
        batch: 2,
        seed: 1,
        clip,
        eval_every: 10,
        eval_batches: 1,
        checkpoint_every: 100,
        log_every: 1,
        on_nonfinite: Default::default(),
        precision: Default::default(),
    }
}

pub const BATCH: usize = 2;

pub fn stage(cfg: &ModelConfig, train: &TrainConfig) -> CompiledStage {
    compile_stage(cfg, train, BATCH).expect("tiny model compiles")
}

/// A fixed random batch: tokens and next tokens.
pub fn batch(cfg: &ModelConfig, seed: u64) -> (Vec<i32>, Vec<i32>) {
    let mut rng = SplitMix64::new(seed);
    let n = BATCH * cfg.context;
    let seq: Vec<i32> = (0..n + 1)
        .map(|_| (rng.next_u64() % cfg.vocab as u64) as i32)
        .collect();
    (seq[..n].to_vec(), seq[1..].to_vec())
}

pub fn to_f<F: Float>(v: &[f64]) -> Vec<F> {
    v.iter().map(|&x| F::from_f64(x)).collect()
}

pub fn to_f64<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Memory for `prog` holding `params` and the batch.
pub fn memory<F: Float>(
    prog: &KernelProgram,
    params: &[Vec<f64>],
    tokens: &[i32],
    targets: &[i32],
) -> Memory<F> {
    let mut mem = Memory::<F>::new(prog);
    for (i, p) in params.iter().enumerate() {
        mem.write(Storage::Param(i), &to_f(p))
            .expect("param buffer");
    }
    mem.write_ints(Storage::Tokens, tokens).expect("tokens");
    mem.write_ints(Storage::Targets, targets).expect("targets");
    for gate in [Storage::HeadGate, Storage::FfnGate] {
        if let Some(b) = prog.buffers.iter().find(|b| b.storage == gate) {
            mem.write(gate, &to_f(&gate_values(b.len))).expect("gate");
        }
    }
    mem
}

/// Gate values of a gated stage's tests: 1 for the first unit, then values
/// between 0 and 1 (a ramp part-way), so that every gate entry matters.
pub fn gate_values(len: usize) -> Vec<f64> {
    (0..len).map(|i| 1.0 - 0.29 * (i % 4) as f64).collect()
}

/// A stage compiled with `gates`.
pub fn gated_stage(cfg: &ModelConfig, train: &TrainConfig, gates: Gates) -> CompiledStage {
    compile_stage_gated(cfg, train, BATCH, gates).expect("tiny gated model compiles")
}

/// Every combination of gates worth testing: heads, FFN, both.
pub const GATES: [Gates; 3] = [
    Gates {
        heads: true,
        ffn: false,
    },
    Gates {
        heads: false,
        ffn: true,
    },
    Gates {
        heads: true,
        ffn: true,
    },
];

/// The loss of the forward kernels.
pub fn loss(stage: &CompiledStage, params: &[Vec<f64>], tokens: &[i32], targets: &[i32]) -> f64 {
    let mut mem = memory::<f64>(&stage.forward_kernels, params, tokens, targets);
    run(&stage.forward_kernels, &mut mem).expect("forward runs");
    mem.read(Storage::Loss).expect("loss")[0]
}

/// Loss and every parameter's gradient from the compiled training step (f64).
pub fn grads(
    stage: &CompiledStage,
    params: &[Vec<f64>],
    tokens: &[i32],
    targets: &[i32],
) -> (f64, Vec<Vec<f64>>) {
    let mut mem = memory::<f64>(&stage.kernels, params, tokens, targets);
    mem.write(Storage::Lr, &[0.0]).expect("lr");
    mem.write(Storage::Step, &[1.0]).expect("step");
    run(&stage.kernels, &mut mem).expect("training step runs");
    let g = (0..params.len())
        .map(|i| mem.read(Storage::Grad(i)).expect("grad"))
        .collect();
    (mem.read(Storage::Loss).expect("loss")[0], g)
}

/// ‖a − b‖ / max(‖a‖, ‖b‖, tiny).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    d / na.max(nb).max(1e-30)
}

/// Central differences of `f` at `params`, for the elements `which(tensor)`.
pub fn finite_diff(
    params: &[Vec<f64>],
    which: impl Fn(usize, usize) -> Vec<usize>,
    f: impl Fn(&[Vec<f64>]) -> f64,
) -> Vec<Vec<(usize, f64)>> {
    let h = 1e-5;
    let mut p = params.to_vec();
    (0..params.len())
        .map(|t| {
            which(t, params[t].len())
                .into_iter()
                .map(|i| {
                    let x = p[t][i];
                    p[t][i] = x + h;
                    let up = f(&p);
                    p[t][i] = x - h;
                    let down = f(&p);
                    p[t][i] = x;
                    (i, (up - down) / (2.0 * h))
                })
                .collect()
        })
        .collect()
}

/// Up to `k` element indices of a tensor of `n`, spread deterministically.
pub fn sample(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut rng = SplitMix64::new(seed);
    let mut v: Vec<usize> = (0..k)
        .map(|_| (rng.next_u64() % n as u64) as usize)
        .collect();
    v.sort();
    v.dedup();
    v
}
