//! A `grow MODEL { … }` block → a RunPlan: stages with concrete shapes, the
//! growth steps before each, and the budget of each stage in steps.

use super::data::Data;
use super::eval::{self, NoNames};
use super::growth;
use super::model::Model;
use super::train::{self, TrainSettings};
use crate::diag::{suggestion, Diag};
use crate::plan::{
    Decay, Gate, GrowthStep, ModelConfig, RunKind, RunPlan, StagePlan, Target, Totals,
};
use crate::syntax::{Budget, Expr, GrowBlock, SchedStmt, Span, Unit};

/// What `set` changes between stages.
pub const SET_KEYS: &[&str] = &["batch", "lr"];

/// A stage before the schedule's total length (and so its LR schedule) is known.
pub struct Draft {
    pub name: String,
    pub growth: Vec<GrowthStep>,
    pub model: ModelConfig,
    pub batch: usize,
    pub lr: f64,
    pub steps: Option<u64>,
    pub until: Option<Target>,
}

pub fn check(
    block: &GrowBlock,
    model: &Model,
    data: &Data,
    train: &TrainSettings,
    diags: &mut Vec<Diag>,
) -> Option<RunPlan> {
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let mut cur = model.config.clone();
    let mut batch = train.batch;
    let mut lr = train.optimizer.lr;
    // The product of every `lr_scale` so far: it multiplies the base LR (the
    // train block's, or the last `set lr`) of every later stage.
    let mut lr_scale = 1.0;
    let mut pending: Vec<GrowthStep> = Vec::new();
    // Each pending step's `lr_scale` option.
    let mut pending_scales: Vec<Option<f64>> = Vec::new();
    let mut stage_scales: Vec<Vec<f64>> = Vec::new();
    // The gates of the pending `ramp` steps, with the step each comes from.
    let mut pending_gates: Vec<(Gate, Span)> = Vec::new();
    let mut stage_gates: Vec<Vec<Gate>> = Vec::new();
    let mut pending_span: Option<Span> = None;
    let mut drafts: Vec<(Draft, Span)> = Vec::new();
    let mut unbounded: Option<Span> = None;
    let mut context_span = model.spans.context;
    let mut broken = false;

    check_context(cur.context, context_span, data, diags);
    for stmt in &block.stmts {
        if let Some(u) = unbounded {
            diags.push(
                Diag::error(
                    "gs::unbounded-stage",
                    "nothing can come after a stage with no end",
                )
                .label(stmt.span(), "never reached")
                .label(u, "this stage trains until its target, with no cap")
                .help("give the earlier stage a cap, e.g. `until val_loss <= 1.5 or 10k steps`"),
            );
            break;
        }
        match stmt {
            SchedStmt::Stage(st) => {
                if let Some((_, first)) = drafts.iter().find(|(d, _)| d.name == st.name.name) {
                    diags.push(
                        Diag::error(
                            "gs::duplicate-name",
                            format!("two stages are named `{}`", st.name.name),
                        )
                        .label(st.name.span, "second stage with this name")
                        .label(*first, "first one")
                        .help("give each stage its own name"),
                    );
                }
                let tokens_per_step = (batch * cur.context) as f64;
                let flops_per_step = cur.flops_per_token() * tokens_per_step;
                let (steps, until) = match &st.budget {
                    Budget::Amount { amount } => {
                        match budget(amount, tokens_per_step, flops_per_step) {
                            Ok(s) => (Some(s), None),
                            Err(d) => {
                                diags.push(d);
                                broken = true;
                                (Some(0), None)
                            }
                        }
                    }
                    Budget::Until {
                        metric,
                        strict,
                        target,
                        cap,
                        span,
                    } => {
                        if metric.name != "val_loss" {
                            diags.push(
                                Diag::error(
                                    "gs::unknown-name",
                                    format!("cannot train until `{}`", metric.name),
                                )
                                .label(metric.span, "not a metric")
                                .help(
                                    match suggestion(&metric.name, &["val_loss"]) {
                                        s if s.starts_with("did") => s,
                                        _ => "stages train until a validation-loss target: write \
                                          `until val_loss <= 1.5 or 10k steps`"
                                            .to_string(),
                                    },
                                ),
                            );
                        }
                        let value = eval::number(target, &mut NoNames)
                            .map_err(|d| diags.push(d))
                            .unwrap_or(1.0);
                        if value <= 0.0 {
                            diags.push(
                                    Diag::error("gs::value", "a loss target must be positive")
                                        .label(target.span, "never reached")
                                        .help("the cross-entropy loss is always above 0: write e.g. `val_loss <= 1.5`"),
                                );
                        }
                        let steps = match cap {
                            Some(c) => budget(c, tokens_per_step, flops_per_step)
                                .map_err(|d| diags.push(d))
                                .ok(),
                            None => {
                                unbounded = Some(*span);
                                None
                            }
                        };
                        (
                            steps,
                            Some(Target {
                                metric: metric.name.clone(),
                                value,
                                strict: *strict,
                            }),
                        )
                    }
                };
                let draft = Draft {
                    name: st.name.name.clone(),
                    growth: std::mem::take(&mut pending),
                    model: cur.clone(),
                    batch,
                    lr: lr * lr_scale,
                    steps,
                    until,
                };
                for (gate, span) in &pending_gates {
                    if steps.is_some_and(|n| n < gate.steps) {
                        diags.push(
                            Diag::error(
                                "gs::value",
                                format!(
                                    "this ramp of {} steps is longer than stage `{}`",
                                    gate.steps, st.name.name
                                ),
                            )
                            .label(
                                *span,
                                "the new units would not be fully on when the stage ends",
                            )
                            .label(st.name.span, format!("{} steps", steps.unwrap_or(0)))
                            .help("ramp over at most the stage's steps, or train the stage longer"),
                        );
                    }
                }
                stage_gates.push(
                    std::mem::take(&mut pending_gates)
                        .into_iter()
                        .map(|(g, _)| g)
                        .collect(),
                );
                let scales = std::mem::take(&mut pending_scales);
                stage_scales.push(if scales.iter().any(Option::is_some) {
                    scales.into_iter().map(|s| s.unwrap_or(1.0)).collect()
                } else {
                    Vec::new()
                });
                pending_span = None;
                drafts.push((draft, st.name.span));
            }
            SchedStmt::Grow(g) => {
                if broken {
                    continue;
                }
                if drafts.is_empty() {
                    diags.push(
                        Diag::error("gs::growth-before-first-stage", "a growth step before the first stage grows a model that was never trained")
                            .label(g.span, "nothing has been trained yet")
                            .help("start with the bigger model instead (change the model block), or put a stage before this step"),
                    );
                    broken = true;
                    continue;
                }
                match growth::check(g, &cur) {
                    Ok(growth::Checked {
                        step,
                        grown,
                        lr_scale: scale,
                    }) => {
                        if step.axis == crate::plan::Axis::Context {
                            context_span = g.span;
                            check_context(grown.context, context_span, data, diags);
                        }
                        if !step.exact {
                            let (how, help) = if step.method == crate::plan::Method::Stack {
                                (
                                    step.method.describe(),
                                    "expected for a G_stack baseline; for an exact step write `by identity`".to_string(),
                                )
                            } else {
                                (
                                    format!("{} with noise", step.method.describe()),
                                    format!("noise is only exact on d_model, where it is projected off the copies; remove `noise` from this {} step", step.axis.name()),
                                )
                            };
                            diags.push(
                                Diag::warning("gs::inexact-growth", format!("growing {} by {how} does not preserve the model's function", step.axis.name()))
                                    .label(g.span, "the loss will jump here")
                                    .help(help),
                            );
                        }
                        if let Some((_, ramp)) =
                            pending_gates.iter().find(|(gt, _)| gt.axis == step.axis)
                        {
                            diags.push(
                                Diag::error(
                                    "gs::method",
                                    format!(
                                        "{} grows again before the stage that ramps its new units in",
                                        step.axis.name()
                                    ),
                                )
                                .label(g.span, "grows the gated axis")
                                .label(*ramp, "ramped here")
                                .help(format!(
                                    "grow {} once, by ramp, before this stage, or put a stage between the two steps",
                                    step.axis.name()
                                )),
                            );
                            broken = true;
                            continue;
                        }
                        if let Some(gate) = growth::gate(&step, &cur) {
                            pending_gates.push((gate, g.span));
                        }
                        pending.push(step);
                        pending_scales.push(scale);
                        lr_scale *= scale.unwrap_or(1.0);
                        pending_span.get_or_insert(g.span);
                        cur = grown;
                    }
                    Err(d) => {
                        diags.push(d);
                        // Later steps would be checked against a wrong shape.
                        broken = true;
                    }
                }
            }
            SchedStmt::Set(s) => match s.key.name.as_str() {
                "batch" => match train::batch(&s.value) {
                    Ok(b) => batch = b,
                    Err(d) => diags.push(d),
                },
                "lr" => match eval::number(&s.value, &mut NoNames) {
                    Ok(v) if v > 0.0 => lr = v,
                    Ok(_) => diags.push(
                        Diag::error("gs::value", "the learning rate must be positive")
                            .label(s.value.span, "not positive"),
                    ),
                    Err(d) => diags.push(d),
                },
                other => diags.push(
                    Diag::error(
                        "gs::unknown-key",
                        format!("`set {other}` is not a schedule setting"),
                    )
                    .label(s.key.span, "cannot be set between stages")
                    .help(
                        if crate::plan::Axis::ALL.iter().any(|(n, _)| *n == other) {
                            format!(
                                "`{other}` changes with a growth step, e.g. `grow {other} to …`; \
                                 `set` takes `batch` or `lr`"
                            )
                        } else {
                            format!(
                                "{}; dimensions change with `grow`",
                                suggestion(other, SET_KEYS)
                            )
                        },
                    ),
                ),
            },
        }
    }
    if let Some(span) = pending_span {
        diags.push(
            Diag::error(
                "gs::growth-after-last-stage",
                "this growth is never trained",
            )
            .label(span, "no stage follows")
            .help("add a stage after it, e.g. `stage final: train 1000 steps`"),
        );
    }
    if drafts.is_empty() {
        diags.push(
            Diag::error(
                "gs::empty-schedule",
                format!("the schedule of `{}` has no stage", block.model.name),
            )
            .label(block.model.span, "nothing to train")
            .help("add a stage, e.g. `stage main: train 1000 steps`"),
        );
    }
    if unbounded.is_some() && train.decay != Decay::Constant {
        diags.push(
            Diag::error(
                "gs::unbounded-stage",
                "a decaying LR schedule needs a run of known length",
            )
            .label(unbounded.unwrap_or_default(), "no cap on this stage")
            .label(
                train.schedule_span,
                "this schedule decays over the whole run",
            )
            .help("give the stage a cap (`or 10k steps`), or use `schedule = constant`"),
        );
    }
    if diags.iter().filter(|d| d.is_error()).count() > errors_before {
        return None;
    }
    let mut run = assemble(
        &block.model.name,
        RunKind::Schedule,
        drafts.into_iter().map(|(d, _)| d).collect(),
        train,
    );
    for ((stage, scales), gates) in run.stages.iter_mut().zip(stage_scales).zip(stage_gates) {
        stage.lr_scale = scales;
        stage.gates = gates;
    }
    Some(run)
}

/// Turns drafts into stages once the total length is known.
pub fn assemble(name: &str, kind: RunKind, drafts: Vec<Draft>, train: &TrainSettings) -> RunPlan {
    // Saturating: each stage is bounded, but a file may hold any number of them.
    let total_steps: u64 = drafts
        .iter()
        .filter_map(|d| d.steps)
        .fold(0, u64::saturating_add);
    let bounded = drafts.last().is_some_and(|d| d.steps.is_some());
    let mut first_step = 0;
    let mut totals = Totals {
        bounded,
        ..Totals::default()
    };
    let stages = drafts
        .into_iter()
        .map(|d| {
            let stage = StagePlan {
                name: d.name,
                growth: d.growth,
                lr_scale: Vec::new(),
                gates: Vec::new(),
                train: train.config(d.model.arch, d.batch, d.lr, total_steps),
                first_step,
                steps: d.steps,
                until: d.until,
                param_count: d.model.param_count(),
                flops_per_token: d.model.flops_per_token(),
                model: d.model,
            };
            first_step = first_step.saturating_add(d.steps.unwrap_or(0));
            totals.steps = totals.steps.saturating_add(stage.steps.unwrap_or(0));
            totals.tokens = totals.tokens.saturating_add(stage.tokens().unwrap_or(0));
            totals.flops += stage.flops().unwrap_or(0.0);
            stage
        })
        .collect();
    RunPlan {
        name: name.to_string(),
        kind,
        stages,
        totals,
    }
}

/// `1500 steps`, `2M tokens` or `1e15 flops` → a number of steps (rounded up).
pub fn budget(e: &Expr, tokens_per_step: f64, flops_per_step: f64) -> Result<u64, Diag> {
    let q = eval::quantity(e, &mut NoNames)?;
    let steps = match q.unit {
        Some(Unit::Steps) => q.value,
        Some(Unit::Tokens) => (q.value / tokens_per_step).ceil(),
        Some(Unit::Flops) => (q.value / flops_per_step).ceil(),
        Some(u) => {
            return Err(Diag::error(
                "gs::unit",
                format!(
                    "a stage trains for steps, tokens or flops, not {}",
                    u.word()
                ),
            )
            .label(e.span, format!("in {}", u.word()))
            .help("write e.g. `1500 steps`, `2M tokens` or `1e15 flops`"))
        }
        None => {
            return Err(Diag::error("gs::unit", "a training budget needs a unit")
                .label(e.span, "steps? tokens? flops?")
                .help(format!(
                    "write e.g. `{} steps` or `{} tokens`",
                    eval::show_number(q.value),
                    eval::show_number(q.value)
                )))
        }
    };
    if steps < 1.0 || q.percent {
        return Err(
            Diag::error("gs::value", "a stage must train for at least one step")
                .label(e.span, "less than one step")
                .help(match q.unit {
                    Some(Unit::Steps) => {
                        "write a positive number of steps, e.g. `100 steps`".to_string()
                    }
                    _ => format!(
                        "one step is {} tokens here",
                        eval::show_number(tokens_per_step)
                    ),
                }),
        );
    }
    if steps.fract() != 0.0 {
        return Err(
            Diag::error("gs::not-integer", "a number of steps must be whole")
                .label(e.span, "fractional steps")
                .help(format!(
                    "write `{} steps` or `{} steps`",
                    eval::show_number(steps.floor()),
                    eval::show_number(steps.ceil())
                )),
        );
    }
    if steps * tokens_per_step > 1e16 {
        return Err(Diag::error("gs::value", "this budget is too large")
            .label(e.span, format!("{} steps", eval::show_number(steps)))
            .help("gsc plans stages of up to 10^16 tokens"));
    }
    Ok(steps as u64)
}

/// The model reads `context + 1` tokens per sequence, from both splits.
/// Only the byte tokenizer's splits are counted in tokens before a run;
/// the others' are bounded by their bytes (a token holds at least one).
pub fn check_context(context: usize, span: Span, data: &Data, diags: &mut Vec<Diag>) {
    let (train, val, unit) = match (data.plan.train_tokens, data.plan.val_tokens) {
        (Some(train), Some(val)) => (train, val, "tokens"),
        _ => {
            let (train, val) = data.plan.split_bytes();
            (train, val, "bytes")
        }
    };
    let (split, size) = if val <= train {
        ("validation", val)
    } else {
        ("training", train)
    };
    if context as u64 + 1 > size {
        diags.push(
            Diag::error(
                "gs::context-too-long",
                format!("context {context} is longer than the {split} split ({size} {unit})"),
            )
            .label(span, format!("needs {} tokens per sequence", context + 1))
            .label(
                data.val_span,
                if data.val_span == data.header {
                    format!("the {split} split: {size} {unit} (`val` is 10% by default)")
                } else {
                    format!("the {split} split: {size} {unit}")
                },
            )
            .help(match unit {
                "tokens" => format!(
                    "use `context = {}` or less, or train on more text",
                    size.saturating_sub(1)
                ),
                _ => format!(
                    "a token holds at least one byte: use a context well below {size}, or train on more text"
                ),
            }),
        );
    }
}
