//! `compare NAME = scratch(MODEL, BUDGET)` and `doubling(MODEL, BUDGET, at = 50%)`:
//! baselines planned from the same file, so one command runs the comparison.

use super::eval::{self, Args, NoNames};
use super::schedule::{self, Draft};
use super::train::TrainSettings;
use crate::diag::{suggestion, Diag};
use crate::plan::{Axis, GrowthStep, Method, ModelConfig, OptimizerPolicy, RunKind, RunPlan};
use crate::syntax::{CompareItem, ExprKind, Unit};

/// The baselines `compare` plans.
pub const BASELINES: &[&str] = &["scratch", "doubling"];

pub fn check(c: &CompareItem, runs: &[RunPlan], train: &TrainSettings) -> Result<RunPlan, Diag> {
    let mut diags = Vec::new();
    let Some(args) = Args::of(&c.run, &["at"], &mut diags) else {
        return Err(diags.remove(0));
    };
    let kind = match args.callee {
        "scratch" => RunKind::Scratch,
        "doubling" => RunKind::Doubling,
        other => {
            return Err(
                Diag::error("gs::unknown-name", format!("unknown baseline `{other}`"))
                    .label(args.callee_span, "not a baseline")
                    .help(suggestion(other, BASELINES)),
            )
        }
    };
    if let Some(d) = diags.pop() {
        return Err(d);
    }
    args.at_most_positional(2, &mut diags);
    if let Some(d) = diags.pop() {
        return Err(d);
    }
    let [of, budget] = args.positional[..] else {
        return Err(Diag::error(
            "gs::argument",
            format!(
                "`{}` takes the schedule to compare with and a budget",
                args.callee
            ),
        )
        .label(args.span, "missing arguments")
        .help(format!("write e.g. `{}(base, same tokens)`", args.callee)));
    };
    let ExprKind::Ref { name } = &of.kind else {
        return Err(eval::not_a(of, "the name of a grown model"));
    };
    let names: Vec<&str> = runs
        .iter()
        .filter(|r| r.kind == RunKind::Schedule)
        .map(|r| r.name.as_str())
        .collect();
    let Some(run) = runs
        .iter()
        .find(|r| r.kind == RunKind::Schedule && r.name == name.name)
    else {
        return Err(Diag::error(
            "gs::unknown-name",
            format!("no schedule grows `{}`", name.name),
        )
        .label(name.span, "not a grown model")
        .help(suggestion(&name.name, &names)));
    };
    let last = run.stages.last().expect("a checked schedule has a stage");
    let full = last.model.clone();
    let batch = last.train.batch;
    let lr = last.train.optimizer.lr;
    let tokens_per_step = (batch * full.context) as f64;

    // The budget in tokens of the final shape (for `same flops`, what buys the same FLOPs).
    let tokens_for = |flops_per_token: f64| -> Result<f64, Diag> {
        match &budget.kind {
            ExprKind::Same { unit } => {
                if !run.totals.bounded {
                    return Err(Diag::error("gs::unbounded-stage", format!("`{}` has no fixed budget to match", run.name))
                        .label(budget.span, "the schedule ends with an uncapped stage")
                        .help("give its last stage a cap, or write an explicit budget such as `10k steps`"));
                }
                match unit {
                    Unit::Tokens => Ok(run.totals.tokens as f64),
                    Unit::Flops => Ok(run.totals.flops / flops_per_token),
                    Unit::Steps => Ok(run.totals.steps as f64 * tokens_per_step),
                    u => Err(Diag::error(
                        "gs::unit",
                        format!("cannot match a budget in {}", u.word()),
                    )
                    .label(budget.span, "not a budget")
                    .help("write `same tokens`, `same flops` or `same steps`")),
                }
            }
            _ => {
                let steps =
                    schedule::budget(budget, tokens_per_step, flops_per_token * tokens_per_step)?;
                Ok(steps as f64 * tokens_per_step)
            }
        }
    };
    let draft = |name: &str, model: &ModelConfig, growth: Vec<GrowthStep>, tokens: f64| Draft {
        name: name.to_string(),
        growth,
        model: model.clone(),
        batch,
        lr,
        steps: Some(((tokens / tokens_per_step).round() as u64).max(1)),
        until: None,
    };
    let drafts = match kind {
        RunKind::Scratch => {
            if args.get("at").is_some() {
                return Err(Diag::error("gs::argument", "`scratch` takes no `at`")
                    .label(args.span, "from scratch there is no growth")
                    .help("remove `at = …`"));
            }
            vec![draft(
                "scratch",
                &full,
                Vec::new(),
                tokens_for(full.flops_per_token())?,
            )]
        }
        _ => {
            let at = match args.get("at") {
                None => 0.5,
                Some(a) => {
                    let v = eval::number(a, &mut NoNames)?;
                    if !(v > 0.0 && v < 1.0) {
                        return Err(Diag::error(
                            "gs::value",
                            "`at` is the fraction of the budget before the doubling",
                        )
                        .label(a.span, "must lie strictly between 0 and 1")
                        .help("write e.g. `at = 50%`"));
                    }
                    v
                }
            };
            let half = halve(&full).ok_or_else(|| {
                Diag::error("gs::divisibility", format!("`{}`'s final shape cannot be halved in width", run.name))
                    .label(of.span, format!("d_model {}, heads {}, kv_heads {}, ffn {}", full.d_model, full.heads, full.kv_heads, full.ffn))
                    .help("a doubling baseline starts at half of d_model, heads, kv_heads and ffn: they must all be even")
            })?;
            // Split the tokens so the FLOPs match what `same flops` asks for, if it does.
            let per_token = at * half.flops_per_token() + (1.0 - at) * full.flops_per_token();
            let tokens = tokens_for(per_token)?;
            let growth = doubling_steps(&half, &full);
            vec![
                draft("half", &half, Vec::new(), tokens * at),
                draft("doubled", &full, growth, tokens * (1.0 - at)),
            ]
        }
    };
    Ok(schedule::assemble(&c.name.name, kind, drafts, train))
}

/// The half-width model a doubling baseline starts from.
fn halve(m: &ModelConfig) -> Option<ModelConfig> {
    let even = [m.d_model, m.heads, m.kv_heads, m.ffn]
        .iter()
        .all(|v| v % 2 == 0);
    even.then(|| ModelConfig {
        d_model: m.d_model / 2,
        heads: m.heads / 2,
        kv_heads: m.kv_heads / 2,
        ffn: m.ffn / 2,
        ..m.clone()
    })
}

/// HyperCloning: every width ×2 by copying, from `half` to `full`. Growing
/// `heads` of a model without GQA grows `kv_heads` with it, so that axis
/// gets a step of its own only under GQA.
fn doubling_steps(half: &ModelConfig, full: &ModelConfig) -> Vec<GrowthStep> {
    let mut cur = half.clone();
    let mut steps = Vec::new();
    for axis in [Axis::DModel, Axis::Heads, Axis::KvHeads, Axis::Ffn] {
        let from = axis.size(&cur);
        if from == axis.size(full) {
            continue;
        }
        let before = cur.clone();
        cur = cur.grown(axis, from * 2);
        let mut step = GrowthStep {
            axis,
            from,
            to: from * 2,
            method: Method::Copy,
            positions: Vec::new(),
            noise: 0.0,
            optimizer: OptimizerPolicy::Map,
            rewarm_steps: 0,
            exact: true,
            changes: Vec::new(),
        };
        step.changes = super::growth::changes(&before, &cur, &step);
        steps.push(step);
    }
    steps
}
