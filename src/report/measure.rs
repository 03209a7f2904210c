//! The comparison: where each run's validation loss first reaches its
//! reference's final loss (and 1.005 × it), interpolated between
//! evaluations, and what the reference spent for the same.

use super::runs::{Run, Spent};

/// Within this factor of the reference's final loss counts as matching it.
pub const CLOSE: f64 = 1.005;

#[derive(Clone, Debug)]
pub struct Row {
    /// The run measured against.
    pub reference: Option<usize>,
    /// The reference's final validation loss.
    pub target: Option<f64>,
    /// Where the run first reached `target`, and `CLOSE × target`.
    pub reach: Option<Spent>,
    pub close: Option<Spent>,
    /// The reference's FLOPs over the run's, to reach `target` and to come close.
    pub speedup: Option<f64>,
    pub speedup_close: Option<f64>,
    /// The run's loss at the reference's total FLOPs (None if it stopped
    /// more than 1 % before).
    pub loss_at_equal_flops: Option<f64>,
}

/// One row per run. The reference of a run is `baseline` when given, else
/// the from-scratch run of the same architecture, final size and seed.
pub fn compare(runs: &[Run], baseline: Option<&str>) -> Result<Vec<Row>, String> {
    let fixed = match baseline {
        Some(label) => Some(runs.iter().position(|r| r.label == label).ok_or_else(|| {
            let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
            format!(
                "no run is labelled `{label}`; the runs are: {}",
                labels.join(", ")
            )
        })?),
        None => None,
    };
    Ok(runs
        .iter()
        .map(|run| {
            let reference = fixed.or_else(|| {
                runs.iter().position(|r| {
                    r.kind == "scratch"
                        && r.arch == run.arch
                        && r.final_params == run.final_params
                        && r.seed == run.seed
                })
            });
            row(run, reference, runs)
        })
        .collect())
}

fn row(run: &Run, reference: Option<usize>, runs: &[Run]) -> Row {
    let r = reference.map(|i| &runs[i]);
    let target = r.and_then(Run::final_loss);
    let reach = target.and_then(|t| crossing(run, t));
    let close = target.and_then(|t| crossing(run, t * CLOSE));
    // What the reference spends: all of it to reach its own final loss.
    let ref_total = r.map(|r| r.spent().flops);
    let ref_close = r.zip(target).and_then(|(r, t)| crossing(r, t * CLOSE));
    let ratio = |a: Option<f64>, b: Option<Spent>| a.zip(b).map(|(a, b)| a / b.flops);
    Row {
        reference,
        target,
        speedup: ratio(ref_total, reach),
        speedup_close: ratio(ref_close.map(|s| s.flops), close),
        reach,
        close,
        loss_at_equal_flops: ref_total.and_then(|f| loss_at(run, f)),
    }
}

/// Where the validation loss first reaches `target`, linearly interpolated
/// between the evaluation before and the one that reached it.
pub fn crossing(run: &Run, target: f64) -> Option<Spent> {
    let i = run.evals.iter().position(|e| e.loss <= target)?;
    let hit = &run.evals[i];
    let Some(prev) = i.checked_sub(1).map(|p| &run.evals[p]) else {
        return Some(hit.at);
    };
    let t = (prev.loss - target) / (prev.loss - hit.loss);
    Some(prev.at.lerp(&hit.at, t))
}

/// The validation loss at `flops`, linearly interpolated between the
/// evaluations around it; None past the last one.
pub fn loss_at(run: &Run, flops: f64) -> Option<f64> {
    let e = &run.evals;
    let last = e.last()?;
    if flops >= last.at.flops {
        // Budgets are whole steps: a run within 1 % of `flops` has spent it.
        return (flops <= last.at.flops * 1.01).then_some(last.loss);
    }
    let i = e.iter().position(|x| x.at.flops >= flops)?;
    if i == 0 {
        return Some(e[0].loss);
    }
    let (a, b) = (&e[i - 1], &e[i]);
    let t = (flops - a.at.flops) / (b.at.flops - a.at.flops);
    Some(a.loss + t * (b.loss - a.loss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::runs::Eval;

    fn run(kind: &str, points: &[(f64, f64)]) -> Run {
        Run {
            label: kind.into(),
            name: kind.into(),
            dir: "d".into(),
            kind: kind.into(),
            arch: "gpt".into(),
            seed: 1,
            final_params: 100,
            overrides: vec![],
            stages: vec![],
            evals: points
                .iter()
                .map(|&(flops, loss)| Eval {
                    stage: "s".into(),
                    at: Spent {
                        flops,
                        tokens: flops / 10.0,
                        seconds: flops / 100.0,
                    },
                    loss,
                    bpb: None,
                })
                .collect(),
            growths: vec![],
            total: None,
        }
    }

    #[test]
    fn crossings_interpolate_between_evaluations() {
        let r = run("schedule", &[(100.0, 3.0), (200.0, 2.0), (300.0, 1.0)]);
        let at = crossing(&r, 1.5).unwrap();
        assert_eq!((at.flops, at.tokens, at.seconds), (250.0, 25.0, 2.5));
        assert_eq!(crossing(&r, 3.5).unwrap().flops, 100.0);
        assert!(crossing(&r, 0.5).is_none());
        assert_eq!(loss_at(&r, 150.0), Some(2.5));
        assert_eq!(loss_at(&r, 300.0), Some(1.0));
        assert_eq!(loss_at(&r, 302.0), Some(1.0));
        assert_eq!(loss_at(&r, 310.0), None);
    }

    #[test]
    fn each_run_is_measured_against_its_scratch_run() {
        let scratch = run("scratch", &[(100.0, 3.0), (400.0, 2.0)]);
        let grown = run("schedule", &[(100.0, 2.5), (200.0, 1.9)]);
        let rows = compare(&[scratch, grown], None).unwrap();
        let g = &rows[1];
        assert_eq!(g.reference, Some(0));
        assert_eq!(g.target, Some(2.0));
        // 2.0 is reached at 100 + (0.5 / 0.6)·100 FLOPs; scratch spent 400.
        let reach = g.reach.unwrap().flops;
        assert!((reach - (100.0 + 100.0 * 0.5 / 0.6)).abs() < 1e-9);
        assert!((g.speedup.unwrap() - 400.0 / reach).abs() < 1e-12);
        assert_eq!(rows[0].speedup, Some(1.0));
        assert!(compare(&[run("scratch", &[(1.0, 1.0)])], Some("nope")).is_err());
    }
}
