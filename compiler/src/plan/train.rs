//! Training settings of one stage, resolved to numbers.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Applied only to parameters whose `ParamSpec::weight_decay` is set.
    pub weight_decay: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Constant,
    Cosine,
    Linear,
    /// Warmup-stable-decay: the peak until the last `decay_steps`, then a
    /// linear decay to `min` (the late-expansion recipe depends on it).
    Wsd,
}

/// LR multiplier over the whole schedule (all stages): linear warmup, then
/// `decay` from 1 down to `min` at `total_steps`. Growth steps may add a
/// re-warm, which restarts a linear ramp from the current multiplier's 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub decay: Decay,
    pub warmup_steps: u64,
    /// Final multiplier as a fraction of the peak LR.
    pub min_ratio: f64,
    /// Steps over which the decay runs; the sum of all stages' steps.
    pub total_steps: u64,
    /// `wsd` only: the length of the final decay.
    #[serde(default)]
    pub decay_steps: u64,
}

impl LrSchedule {
    /// The multiplier at global step `step` (0-based), ignoring re-warms.
    pub fn multiplier(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return (step + 1) as f64 / self.warmup_steps as f64;
        }
        // The decay runs over [start, total_steps).
        let start = match self.decay {
            Decay::Wsd => self.total_steps.saturating_sub(self.decay_steps),
            _ => self.warmup_steps,
        };
        if step < start {
            return 1.0;
        }
        let span = self.total_steps.saturating_sub(start).max(1) as f64;
        let t = ((step - start) as f64 / span).min(1.0);
        let shape = match self.decay {
            Decay::Constant => return 1.0,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            Decay::Linear | Decay::Wsd => 1.0 - t,
        };
        self.min_ratio + (1.0 - self.min_ratio) * shape
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optimizer: AdamW,
    pub schedule: LrSchedule,
    /// Sequences per step.
    pub batch: usize,
    pub seed: u64,
    /// Global-norm gradient clipping threshold; `None` disables clipping.
    pub clip: Option<f64>,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// What a non-finite loss or gradient does to the run.
    #[serde(default)]
    pub on_nonfinite: NonFinite,
    /// The number format of the matrix products' operands.
    #[serde(default)]
    pub precision: Precision,
}

/// The number format the matrix products multiply in. Parameters, Adam's
/// moments, activations and every sum stay f32 whichever it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// Operands rounded to bfloat16, products summed in f32 (what CPUs with
    /// AVX512_BF16 and GPU tensor cores multiply at twice the f32 rate).
    Bf16,
}

impl Precision {
    /// As written in a .gs file.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// The policy for a step whose loss or gradient norm is NaN or infinite.
/// Whatever it is, the step's update is undone by returning to the newest
/// checkpoint, whose state every step checks finite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum NonFinite {
    /// Stop the run, naming the stage, the step and the first non-finite
    /// tensor; the checkpoints hold the last good state.
    #[default]
    Stop,
    /// Return to the newest checkpoint and train on, leaving out the batch
    /// of the failed step.
    Skip,
    /// Return to the newest checkpoint and train on from it with the
    /// learning rate times `lr_factor` (again at each further rollback).
    Rollback { lr_factor: f64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(decay: Decay) -> LrSchedule {
        LrSchedule {
            decay,
            warmup_steps: 10,
            min_ratio: 0.0,
            total_steps: 100,
            decay_steps: 20,
        }
    }

    #[test]
    fn wsd_holds_the_peak_until_its_decay() {
        let s = schedule(Decay::Wsd);
        assert_eq!(s.multiplier(0), 0.1);
        assert_eq!(s.multiplier(9), 1.0);
        assert_eq!(s.multiplier(50), 1.0);
        assert_eq!(s.multiplier(79), 1.0);
        assert_eq!(s.multiplier(80), 1.0);
        assert_eq!(s.multiplier(90), 0.5);
        assert!((s.multiplier(99) - 0.05).abs() < 1e-12);
        // Linear decays from the end of the warmup instead.
        assert_eq!(schedule(Decay::Linear).multiplier(55), 0.5);
    }
}
