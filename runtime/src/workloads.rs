//! The reference workloads of performance.md (S and M), shared by `gsc
//! bench`, the step benchmark and the tests that time nothing but need the
//! same shapes.

use gsc_compiler::plan::{
    Activation, AdamW, Arch, Decay, LrSchedule, ModelConfig, NormKind, TrainConfig,
};

/// Batch and context of S and M.
pub const BATCH: usize = 16;
pub const CONTEXT: usize = 256;

/// The workloads by name: S and M (the CPU's), and G, GPT-2 small's shape
/// (12 layers, d_model 768, context 1024), for GPUs.
pub const WORKLOADS: [&str; 3] = ["S", "M", "G"];

/// The reference models: GPT-2-style sizes (LayerNorm, GELU, tied head, as
/// the PyTorch peer), with gsc's RoPE instead of learned positions.
pub fn workload(name: &str, arch: Arch) -> Option<ModelConfig> {
    let (layers, d, heads, context) = match name {
        "S" => (4, 256, 4, CONTEXT),
        "M" => (6, 384, 6, CONTEXT),
        "G" => (12, 768, 12, 1024),
        _ => return None,
    };
    Some(ModelConfig {
        arch,
        vocab: 256,
        context,
        d_model: d,
        heads,
        kv_heads: heads,
        head_dim: d / heads,
        layers,
        ffn: 4 * d,
        activation: Activation::Gelu,
        norm: NormKind::LayerNorm,
        tied: arch == Arch::Gpt,
        rope_base: 10_000.0,
        norm_eps: 1e-5,
        init_std: 0.02,
    })
}

/// Sequences per step of workload `name`: 16, or 8 of G's longer ones.
pub fn batch_of(name: &str) -> usize {
    if name == "G" {
        8
    } else {
        BATCH
    }
}

pub fn train_config() -> TrainConfig {
    TrainConfig {
        optimizer: AdamW {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        schedule: LrSchedule {
            decay: Decay::Constant,
            warmup_steps: 0,
            min_ratio: 1.0,
            total_steps: 1,
            decay_steps: 0,
        },
        batch: BATCH,
        seed: 1,
        clip: Some(1.0),
        eval_every: 1,
        eval_batches: 1,
        checkpoint_every: 1,
        log_every: 1,
        on_nonfinite: Default::default(),
        precision: Default::default(),
    }
}
