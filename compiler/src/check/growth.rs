//! One `grow AXIS …` step: the new size, the method, and whether that method
//! keeps the model's function exactly on this axis and architecture
//! (growth.md). Every rule here is one of growth.md's.

use super::eval::{self, Args, Env, NoNames};
use super::model::nearest_divisors;
use crate::diag::{suggestion, Diag};
use crate::plan::{
    Arch, Axis, Gate, GrowthStep, Method, ModelConfig, NormKind, OptimizerPolicy, ParamChange,
    Split,
};
use crate::syntax::{ExprKind, GrowKind, GrowStep, Span, Unit};

/// The options after a growth step's method (`, noise = 1e-3`).
pub const OPTIONS: &[&str] = &["noise", "optimizer", "rewarm", "lr_scale"];

/// The current model's dimensions, for `grow ffn to 4 * d_model`.
pub struct Dims<'a>(pub &'a ModelConfig);

impl Env for Dims<'_> {
    fn lookup(&mut self, name: &str, span: Span) -> Result<f64, Diag> {
        let m = self.0;
        Ok(match name {
            "d_model" => m.d_model,
            "heads" => m.heads,
            "kv_heads" => m.kv_heads,
            "head_dim" => m.head_dim,
            "ffn" => m.ffn,
            "layers" => m.layers,
            "context" => m.context,
            "vocab" => m.vocab,
            _ => {
                return Err(
                    Diag::error("gs::unknown-name", format!("unknown name `{name}`"))
                        .label(span, "not a dimension of the model")
                        .help(suggestion(name, &self.names())),
                )
            }
        } as f64)
    }

    fn names(&self) -> Vec<&'static str> {
        vec![
            "d_model", "heads", "kv_heads", "head_dim", "ffn", "layers", "context", "vocab",
        ]
    }
}

/// One checked step: the step, the model after it, and its `lr_scale` option.
pub struct Checked {
    pub step: GrowthStep,
    pub grown: ModelConfig,
    /// Multiplies the peak learning rate of every later stage (1 unless given).
    pub lr_scale: Option<f64>,
}

/// Checks one step against the model as it is before it.
pub fn check(g: &GrowStep, model: &ModelConfig) -> Result<Checked, Diag> {
    let axis = Axis::ALL
        .iter()
        .find(|(n, _)| *n == g.axis.name)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let names: Vec<&str> = Axis::ALL.iter().map(|(n, _)| *n).collect();
            Diag::error("gs::unknown-name", format!("cannot grow `{}`", g.axis.name))
                .label(g.axis.span, "not a growable dimension")
                .help(suggestion(&g.axis.name, &names))
        })?;
    let from = axis.size(model);
    let to = target(g, axis, model)?;
    if to < from {
        return Err(Diag::error(
            "gs::shrink",
            format!("this shrinks {} from {from} to {to}", axis.name()),
        )
        .label(g.span, format!("{} {from} → {to}", axis.name()))
        .help("growth steps only grow; to start smaller, make the model smaller"));
    }
    if to == from {
        return Err(Diag::error(
            "gs::no-growth",
            format!("this leaves {} at {from}", axis.name()),
        )
        .label(g.amount.span, "grows nothing")
        .help("remove the step, or grow by more"));
    }
    divisibility(g, axis, model, to)?;
    let method = method(g, axis, model)?;
    let ratio = to as f64 / from as f64;
    let integer = to % from == 0;
    let exact = exactness(g, axis, model, &method, ratio, integer)?;
    let positions = positions(g, axis, from, to)?;
    let mut step = GrowthStep {
        axis,
        from,
        to,
        method,
        positions,
        noise: 0.0,
        optimizer: OptimizerPolicy::Map,
        rewarm_steps: 0,
        exact,
        changes: Vec::new(),
    };
    let lr_scale = options(g, &mut step)?;
    if step.noise > 0.0 && axis != Axis::DModel {
        // Only reading-side noise projected off the range of E is exact (growth.md).
        step.exact = false;
    }
    let grown = model.grown_by(axis, to, &step.method);
    step.changes = changes(model, &grown, &step);
    Ok(Checked {
        step,
        grown,
        lr_scale,
    })
}

fn target(g: &GrowStep, axis: Axis, model: &ModelConfig) -> Result<usize, Diag> {
    let from = axis.size(model);
    let mut env = Dims(model);
    let v = match g.kind {
        GrowKind::To => eval::number(&g.amount, &mut env)?,
        GrowKind::Add => from as f64 + eval::number(&g.amount, &mut env)?,
        GrowKind::Mul => {
            let f = eval::number(&g.amount, &mut env)?;
            if f <= 0.0 {
                return Err(Diag::error("gs::value", "a growth factor must be positive")
                    .label(g.amount.span, "not positive")
                    .help("the factor multiplies the current size, e.g. `* 2` or `* 1.25`"));
            }
            from as f64 * f
        }
    };
    if !v.is_finite() || v > super::model::limit(axis.name()) as f64 {
        return Err(
            Diag::error("gs::value", format!("{} would be too large", axis.name()))
                .label(g.amount.span, "too large")
                .help(format!(
                    "gsc supports {} up to {}",
                    axis.name(),
                    super::model::limit(axis.name())
                )),
        );
    }
    if (v - v.round()).abs() > 1e-9 {
        let (lo, hi) = (v.floor() as usize, v.ceil() as usize);
        // A factor is only worth suggesting when, as written, it lands exactly.
        let factor = |to: usize| {
            let f = (to as f64 / from as f64 * 1e4).round() / 1e4;
            ((f * from as f64 - to as f64).abs() < 1e-9)
                .then(|| format!("`* {}`", eval::show_number(f)))
        };
        let how = match (g.kind, factor(lo), factor(hi)) {
            (GrowKind::Mul, Some(a), Some(b)) => format!("{a} or {b}, or `to {lo}` / `to {hi}`"),
            (GrowKind::Mul, Some(a), None) => format!("{a}, or `to {lo}` / `to {hi}`"),
            (GrowKind::Mul, None, Some(b)) => format!("{b}, or `to {lo}` / `to {hi}`"),
            _ => format!("`to {lo}` or `to {hi}`"),
        };
        let v = eval::show_number((v * 1e6).round() / 1e6);
        return Err(Diag::error(
            "gs::fractional-growth",
            format!(
                "{} {from} grows to {v}, which is not a whole number",
                axis.name()
            ),
        )
        .label(g.amount.span, format!("{from} → {v}"))
        .help(format!(
            "the nearest whole sizes are {lo} and {hi}: write {how}"
        )));
    }
    Ok(v.round() as usize)
}

/// Sizes that would leave the attention inconsistent (GQA groups).
fn divisibility(g: &GrowStep, axis: Axis, model: &ModelConfig, to: usize) -> Result<(), Diag> {
    match axis {
        Axis::Heads if model.kv_heads != model.heads && !to.is_multiple_of(model.kv_heads) => {
            let lo = (to / model.kv_heads) * model.kv_heads;
            let hi = lo + model.kv_heads;
            let lo = if lo > model.heads {
                format!("{lo} or ")
            } else {
                String::new()
            };
            Err(Diag::error(
                "gs::divisibility",
                format!(
                    "heads = {to} is not a multiple of kv_heads = {}",
                    model.kv_heads
                ),
            )
            .label(g.amount.span, format!("heads {} → {to}", model.heads))
            .help(format!(
                "heads must stay a multiple of kv_heads = {}: grow heads to {lo}{hi}",
                model.kv_heads
            )))
        }
        Axis::KvHeads if !model.heads.is_multiple_of(to) => Err(Diag::error(
            "gs::divisibility",
            format!("kv_heads = {to} does not divide heads = {}", model.heads),
        )
        .label(g.amount.span, format!("kv_heads {} → {to}", model.kv_heads))
        .help(nearest_divisors(model.heads, to, "kv_heads"))),
        _ => Ok(()),
    }
}

/// Every growth method, whatever the axis.
pub const METHODS: &[&str] = &[
    "isometric",
    "copy",
    "zero",
    "identity",
    "stack",
    "ramp",
    "extend",
];

/// The methods that grow `axis`.
pub fn methods(axis: Axis) -> &'static [&'static str] {
    match axis {
        Axis::DModel => &["isometric", "copy", "zero"],
        Axis::Heads => &["zero", "copy", "ramp"],
        Axis::KvHeads => &["copy"],
        Axis::Ffn => &["copy", "zero", "ramp"],
        Axis::Layers => &["identity", "stack"],
        Axis::Context => &["extend"],
    }
}

fn method(g: &GrowStep, axis: Axis, model: &ModelConfig) -> Result<Method, Diag> {
    let allowed = methods(axis);
    let Some(m) = &g.method else {
        return Ok(match axis {
            Axis::DModel => Method::Isometric { split: Split::Even },
            Axis::Heads if model.arch == Arch::Ngpt => Method::Copy,
            Axis::Heads | Axis::Ffn => Method::Zero,
            Axis::KvHeads => Method::Copy,
            Axis::Layers => Method::Identity,
            Axis::Context => Method::Extend,
        });
    };
    let mut diags = Vec::new();
    let Some(args) = Args::of(m, &["split", "steps"], &mut diags) else {
        return Err(diags.remove(0));
    };
    if !allowed.contains(&args.callee) {
        let (label, help) = if METHODS.contains(&args.callee) {
            (
                format!("not a method for {}", axis.name()),
                format!("{} grows by {}", axis.name(), eval::list(allowed)),
            )
        } else {
            (
                "unknown method".to_string(),
                suggestion(args.callee, allowed),
            )
        };
        return Err(Diag::error(
            "gs::method",
            format!("`{}` is not a way to grow {}", args.callee, axis.name()),
        )
        .label(args.callee_span, label)
        .help(help));
    }
    args.at_most_positional(usize::from(args.callee == "ramp"), &mut diags);
    if let Some(d) = diags.into_iter().next() {
        return Err(d);
    }
    Ok(match args.callee {
        "isometric" => {
            let split = match args.get("split") {
                None => Split::Even,
                Some(s) => match eval::choice(s, &["even", "uneven"], "split")? {
                    "even" => Split::Even,
                    _ => Split::Uneven,
                },
            };
            Method::Isometric { split }
        }
        "copy" => Method::Copy,
        "zero" => Method::Zero,
        "identity" => Method::Identity,
        "stack" => Method::Stack,
        "extend" => Method::Extend,
        _ => {
            let Some(steps) = args.positional.first().copied().or(args.get("steps")) else {
                return Err(Diag::error("gs::missing-key", "a ramp needs its length")
                    .label(m.span, "how many steps?")
                    .help("write e.g. `ramp(200 steps)`"));
            };
            let n = eval::number_in(steps, &mut NoNames, Unit::Steps)?;
            Method::Ramp {
                steps: eval::to_count(n, steps.span, "the ramp length")? as u64,
            }
        }
    })
}

/// The gate of a `ramp` step taken on `model` (before it grows): the new
/// units' positions are where growth puts fresh units (after the old ones;
/// under grouped-query attention, after the old heads of every KV group).
pub fn gate(step: &GrowthStep, model: &ModelConfig) -> Option<Gate> {
    let Method::Ramp { steps } = step.method else {
        return None;
    };
    let (from, to) = (step.from, step.to);
    let new_units = match step.axis {
        Axis::Heads if model.kv_heads != model.heads => {
            let (g_old, g_new) = (from / model.kv_heads, to / model.kv_heads);
            (0..to).filter(|h| h % g_new >= g_old).collect()
        }
        Axis::Heads | Axis::Ffn => (from..to).collect(),
        _ => return None,
    };
    Some(Gate {
        axis: step.axis,
        steps,
        size: to,
        new_units,
    })
}

/// Whether the method keeps the function exactly; an error where it cannot
/// and an exact method exists.
fn exactness(
    g: &GrowStep,
    axis: Axis,
    m: &ModelConfig,
    method: &Method,
    ratio: f64,
    integer: bool,
) -> Result<bool, Diag> {
    let span = g.method.as_ref().map_or(g.span, |e| e.span);
    let ngpt = m.arch == Arch::Ngpt;
    let layernorm = !ngpt && m.norm == NormKind::LayerNorm;
    let ratio = show_ratio(ratio);
    let needs_integer = |what: &str, alt: &str| {
        Diag::error(
            "gs::inexact-growth",
            format!(
                "{what} needs a whole-number factor, but {} grows ×{ratio}",
                axis.name()
            ),
        )
        .label(span, format!("×{ratio} is not a whole number"))
        .help(alt.to_string())
    };
    match (axis, method) {
        (Axis::DModel, Method::Copy) if ngpt => Err(Diag::error(
            "gs::inexact-growth",
            "HyperCloning divides the weights that read the residual stream by the factor, which breaks nGPT's unit norms",
        )
        .label(span, "not exact in ngpt")
        .help("write `by isometric`: the isometric map copies with coefficient 1/√n, keeps every norm, and is exact for any ratio")),
        (Axis::DModel, Method::Copy) if !integer => {
            Err(needs_integer("copying (HyperCloning)", "`by isometric` is exact for any ratio (with RMSNorm or nGPT); or grow `* 2`"))
        }
        (Axis::DModel, Method::Isometric { split }) if layernorm && (!integer || *split == Split::Uneven) => Err(Diag::error(
            "gs::inexact-growth",
            "LayerNorm is only preserved by uniform copies of the residual stream",
        )
        .label(span, if integer { "uneven copies change the mean and variance" } else { "a fractional ratio makes uneven copies" })
        .label(g.amount.span, format!("×{ratio}"))
        .help("grow d_model by a whole factor with `by isometric(split = even)` or `by copy`, or use `norm = rmsnorm`, which is exact for any ratio")),
        (Axis::DModel, Method::Zero) if layernorm => Err(Diag::error("gs::inexact-growth", "zero-extension changes LayerNorm's mean and variance")
            .label(span, "not exact with LayerNorm")
            .help("grow by a whole factor with `by copy`, or use `norm = rmsnorm`")),
        (Axis::Heads, Method::Copy) if !integer => Err(needs_integer(
            "duplicating heads",
            if ngpt { "nGPT needs a gate for a fractional head count: write `by ramp(200 steps)`" } else { "`by zero` adds new heads exactly (zero output weights)" },
        )),
        (Axis::Heads, Method::Zero) if ngpt => Err(Diag::error("gs::inexact-growth", "nGPT keeps every column of Wo at unit norm, so new heads cannot start with zero output weights")
            .label(span, "not possible in ngpt")
            .help(if integer { "write `by copy` (duplicating every head is exact)" } else { "write `by ramp(200 steps)`: the new heads are gated in from 0" })),
        (Axis::KvHeads, Method::Copy) if !integer => Err(needs_integer("duplicating KV heads", "grow kv_heads by a whole factor, e.g. `* 2`")),
        (Axis::Layers, Method::Stack) => Ok(false),
        _ => Ok(true),
    }
}

/// A growth ratio as a person writes it: `2`, `1.25`, `1.3333`.
fn show_ratio(r: f64) -> String {
    eval::show_number((r * 1e4).round() / 1e4)
}

fn positions(g: &GrowStep, axis: Axis, from: usize, to: usize) -> Result<Vec<usize>, Diag> {
    let Some(at) = &g.at else {
        return Ok(if axis == Axis::Layers {
            (from..to).collect()
        } else {
            Vec::new()
        });
    };
    if axis != Axis::Layers {
        return Err(
            Diag::error("gs::argument", "only new layers have positions")
                .label(at.span, format!("{} has no positions", axis.name()))
                .help("remove the `at …` part"),
        );
    }
    let ExprKind::List { items } = &at.kind else {
        return Err(
            eval::not_a(at, "a list of positions").help(format!("write e.g. `at [{}]`", from))
        );
    };
    let added = to - from;
    if items.len() != added {
        return Err(Diag::error(
            "gs::layer-position",
            format!(
                "{added} new layer{} but {} position{}",
                plural(added),
                items.len(),
                plural(items.len())
            ),
        )
        .label(
            at.span,
            format!("{} position{}", items.len(), plural(items.len())),
        )
        .help(format!("give one position per new layer: {added} in all")));
    }
    let mut out = Vec::new();
    for item in items {
        let p = eval::number(item, &mut NoNames)?;
        if p < 0.0 || p.fract() != 0.0 || p as usize >= to {
            return Err(Diag::error(
                "gs::layer-position",
                format!(
                    "position {} is outside the grown stack of {to} layers",
                    eval::show_number(p)
                ),
            )
            .label(item.span, "out of range")
            .help(format!(
                "positions index the grown model's layers: 0 to {}",
                to - 1
            )));
        }
        let p = p as usize;
        if out.contains(&p) {
            return Err(
                Diag::error("gs::layer-position", format!("position {p} is given twice"))
                    .label(item.span, "repeated")
                    .help("each new layer needs its own position"),
            );
        }
        out.push(p);
    }
    out.sort_unstable();
    Ok(out)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The options after the method; returns `lr_scale`, which lives on the
/// stage rather than the step.
fn options(g: &GrowStep, step: &mut GrowthStep) -> Result<Option<f64>, Diag> {
    let mut lr_scale = None;
    let mut seen: Vec<&str> = Vec::new();
    for o in &g.options {
        let key = o.key.name.as_str();
        if !OPTIONS.contains(&key) {
            return Err(
                Diag::error("gs::unknown-key", format!("unknown growth option `{key}`"))
                    .label(o.key.span, "unknown option")
                    .help(suggestion(key, OPTIONS)),
            );
        }
        if seen.contains(&key) {
            return Err(
                Diag::error("gs::duplicate-key", format!("`{key}` is given twice"))
                    .label(o.key.span, "again here"),
            );
        }
        seen.push(key);
        match key {
            "noise" => {
                let v = eval::number(&o.value, &mut NoNames)?;
                if v < 0.0 {
                    return Err(
                        Diag::error("gs::value", "noise is a standard deviation, ≥ 0")
                            .label(o.value.span, "negative"),
                    );
                }
                step.noise = v;
            }
            "optimizer" => {
                step.optimizer = match eval::choice(
                    &o.value,
                    &["map", "zero_new", "asymmetric", "reset"],
                    "optimizer-state policy",
                )? {
                    "map" => OptimizerPolicy::Map,
                    "zero_new" => OptimizerPolicy::ZeroNew,
                    "asymmetric" => OptimizerPolicy::Asymmetric,
                    _ => OptimizerPolicy::Reset,
                }
            }
            "lr_scale" => {
                let v = eval::number(&o.value, &mut NoNames)?;
                if !(v > 0.0 && v.is_finite()) {
                    return Err(Diag::error(
                        "gs::value",
                        "`lr_scale` multiplies the learning rate: it must be positive",
                    )
                    .label(o.value.span, "not positive")
                    .help(
                        "write e.g. `lr_scale = 0.5` to halve the peak LR of every later stage",
                    ));
                }
                lr_scale = Some(v);
            }
            _ => {
                let v = eval::number_in(&o.value, &mut NoNames, Unit::Steps)?;
                step.rewarm_steps = eval::to_count(v, o.value.span, "the re-warm")? as u64;
            }
        }
    }
    Ok(lr_scale)
}

/// Every parameter whose shape changes or that is new, with per-layer
/// parameters folded into one `layers.*.…` line when all blocks change alike.
pub fn changes(before: &ModelConfig, after: &ModelConfig, step: &GrowthStep) -> Vec<ParamChange> {
    let old = before.params();
    let mut out: Vec<ParamChange> = Vec::new();
    for p in after.params() {
        let (name, prev) = match (step.axis, p.layer) {
            (Axis::Layers, Some(l)) => {
                if step.positions.contains(&l) {
                    (p.name.clone(), None)
                } else {
                    continue;
                }
            }
            (_, Some(l)) => {
                let folded = p.name.replacen(&format!("layers.{l}."), "layers.*.", 1);
                (
                    folded,
                    old.iter()
                        .find(|o| o.name == p.name)
                        .map(|o| o.shape.clone()),
                )
            }
            (_, None) => (
                p.name.clone(),
                old.iter()
                    .find(|o| o.name == p.name)
                    .map(|o| o.shape.clone()),
            ),
        };
        if prev.as_ref() == Some(&p.shape) || out.iter().any(|c| c.param == name) {
            continue;
        }
        out.push(ParamChange {
            param: name,
            from: prev,
            to: p.shape,
        });
    }
    out
}
