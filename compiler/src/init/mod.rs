//! Initial parameters of a stage trained from scratch.

pub mod rng;

use crate::plan::{Arch, ModelConfig, ParamRole, ParamSpec, UnitNorm};
use rng::SplitMix64;

/// Every parameter of `cfg.params()`, in that order, row-major.
///
/// gpt: weight matrices normal(0, init_std), with Wo and Wdown scaled by
/// 1/√(2·layers) as in GPT-2; norm gains 1, biases 0. ngpt: weight matrices
/// drawn the same way, then every unit-norm row or column normalised; scaled
/// vectors stored as `scale`, so that their effective value is `init`.
/// Each tensor has its own stream (seed and index mixed), so adding a
/// parameter does not change the others.
pub fn init_params(cfg: &ModelConfig, seed: u64) -> Vec<Vec<f64>> {
    let residual_scale = 1.0 / (2.0 * cfg.layers.max(1) as f64).sqrt();
    cfg.params()
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let stream = seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            init_one(cfg, spec, &mut SplitMix64::new(stream), residual_scale)
        })
        .collect()
}

fn init_one(
    cfg: &ModelConfig,
    spec: &ParamSpec,
    rng: &mut SplitMix64,
    residual_scale: f64,
) -> Vec<f64> {
    let n = spec.numel();
    if let Some(s) = spec.scaled {
        return vec![s.scale; n];
    }
    match spec.role {
        ParamRole::NormGain => return vec![1.0; n],
        ParamRole::NormBias => return vec![0.0; n],
        _ => {}
    }
    let mut std = cfg.init_std;
    if cfg.arch == Arch::Gpt && matches!(spec.role, ParamRole::Wo | ParamRole::WDown) {
        std *= residual_scale;
    }
    let mut w: Vec<f64> = (0..n).map(|_| std * rng.normal()).collect();
    if let Some(unit) = spec.unit_norm {
        normalize(&mut w, &spec.shape, unit);
    }
    w
}

/// Scales every row (or column) of a row-major matrix to norm 1.
pub fn normalize(w: &mut [f64], shape: &[usize], unit: UnitNorm) {
    let cols = shape.last().copied().unwrap_or(1).max(1);
    let rows = w.len() / cols;
    let (count, len, stride, step) = match unit {
        UnitNorm::Rows => (rows, cols, 1, cols),
        UnitNorm::Cols => (cols, rows, cols, 1),
    };
    for v in 0..count {
        let at = |k: usize| v * step + k * stride;
        let norm = (0..len).map(|k| w[at(k)] * w[at(k)]).sum::<f64>().sqrt();
        if norm > 0.0 {
            for k in 0..len {
                w[at(k)] /= norm;
            }
        }
    }
}
