//! A plan cut short: every stage trains at most a few steps, so that one
//! command goes through every stage and growth of every run quickly (the
//! examples' tests, and a user's dry run before a long one).

use super::{Method, Plan, RunPlan, Totals};

impl Plan {
    /// Caps every stage at `steps` steps (uncapped `until` stages included)
    /// and its evaluations at `EVAL_BATCHES` batches. Stage boundaries,
    /// totals and the LR schedule follow: warmup, decay and re-warms shrink
    /// in proportion to the run, and ramps to fit their stage.
    pub fn cut_short(&mut self, steps: u64) {
        for run in &mut self.runs {
            run.cut_short(steps.max(1));
        }
    }
}

/// Batches per evaluation in a plan cut short.
pub const EVAL_BATCHES: usize = 2;

impl RunPlan {
    fn cut_short(&mut self, cap: u64) {
        let old_total = self
            .stages
            .first()
            .map_or(1, |s| s.train.schedule.total_steps)
            .max(1);
        let total: u64 = self
            .stages
            .iter()
            .map(|s| s.steps.map_or(cap, |n| n.min(cap)))
            .sum();
        let scale =
            |n: u64| ((n as f64 * total as f64 / old_total as f64).round() as u64).min(total);
        let mut totals = Totals {
            bounded: true,
            ..Totals::default()
        };
        let mut first_step = 0;
        for stage in &mut self.stages {
            let steps = stage.steps.map_or(cap, |n| n.min(cap));
            stage.steps = Some(steps);
            stage.first_step = first_step;
            first_step += steps;
            stage.train.eval_batches = stage.train.eval_batches.min(EVAL_BATCHES);
            let s = &mut stage.train.schedule;
            s.total_steps = total;
            s.warmup_steps = scale(s.warmup_steps);
            s.decay_steps = scale(s.decay_steps);
            for g in &mut stage.growth {
                g.rewarm_steps = scale(g.rewarm_steps);
                if let Method::Ramp { steps: n } = &mut g.method {
                    *n = (*n).min(steps);
                }
            }
            // A ramp ends within its stage, as the check requires.
            for gate in &mut stage.gates {
                gate.steps = gate.steps.min(steps);
            }
            totals.steps += steps;
            totals.tokens += stage.tokens().unwrap_or(0);
            totals.flops += stage.flops().unwrap_or(0.0);
        }
        self.totals = totals;
    }
}

#[cfg(test)]
mod tests {
    use crate::check_source;
    use crate::plan::Plan;
    use std::path::Path;

    fn plan(train: &str, growth: &str, last_stage: &str) -> Plan {
        // A folder per call: tests run in parallel, and one rewriting the
        // text while another checks it would hand that one an empty file.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gsc-cut-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.txt"), "some text to train on. ".repeat(400)).unwrap();
        let source = format!(
            r#"data d {{ text = "t.txt" }}
            model m = gpt {{ context = 16  d_model = 32  heads = 2  layers = 1 }}
            train {{ schedule = {train} }}
            grow m {{
                stage a: train 900 steps
                grow layers + 1, rewarm = 50 steps
                {growth}
                stage b: train {last_stage}
            }}"#
        );
        let checked = check_source("t.gs", &source, Path::new(&dir), &[]);
        checked.plan.expect("a valid file")
    }

    #[test]
    fn every_stage_is_kept_and_capped() {
        let mut plan = plan("constant", "", "until val_loss <= 0.1");
        plan.cut_short(10);
        let run = &plan.runs[0];
        let steps: Vec<_> = run.stages.iter().map(|s| (s.first_step, s.steps)).collect();
        assert_eq!(steps, [(0, Some(10)), (10, Some(10))]);
        assert_eq!(run.totals.steps, 20);
        assert!(run.totals.bounded);
        assert_eq!(run.stages[1].growth.len(), 1);
        assert_eq!(run.stages[1].train.eval_batches, super::EVAL_BATCHES);
    }

    #[test]
    fn the_lr_schedule_shrinks_with_the_run() {
        let mut plan = plan(
            "wsd(warmup = 100 steps, decay = 20%)",
            "grow heads + 1 by ramp(50 steps)",
            "100 steps",
        );
        plan.cut_short(10);
        let b = &plan.runs[0].stages[1];
        let s = &b.train.schedule;
        // 1000 steps became 20: everything in proportion.
        assert_eq!((s.total_steps, s.warmup_steps, s.decay_steps), (20, 2, 4));
        assert_eq!(b.growth[0].rewarm_steps, 1);
        // The ramp still ends within its stage, now 10 steps long.
        assert_eq!(b.gates[0].steps, 10);
    }
}
