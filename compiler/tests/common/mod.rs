//! Tiny configurations shared by the compiler's tests.
#![allow(dead_code)]

use gsc_compiler::plan::*;

pub fn tiny(arch: Arch, norm: NormKind, activation: Activation, tied: bool) -> ModelConfig {
    ModelConfig {
        arch,
        vocab: 11,
        context: 4,
        d_model: 8,
        heads: 2,
        kv_heads: 2,
        head_dim: 4,
        layers: 1,
        ffn: 12,
        activation,
        norm,
        tied,
        rope_base: 10000.0,
        init_std: 0.2,
        norm_eps: 1e-5,
    }
}

pub fn train(clip: Option<f64>) -> TrainConfig {
    TrainConfig {
        optimizer: AdamW {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        schedule: LrSchedule {
            decay: Decay::Constant,
            warmup_steps: 0,
            min_ratio: 1.0,
            total_steps: 100,
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
