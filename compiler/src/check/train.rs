//! The `train` block: optimizer, LR schedule, batch, seed, clipping, and the
//! eval / checkpoint / log cadence. The schedule's length is only known once
//! the stages are planned, so this yields settings, not a TrainConfig.

use super::eval::{self, Args, NoNames};
use super::settings::Settings;
use crate::diag::{suggestion, Diag};
use crate::plan::{AdamW, Arch, Decay, LrSchedule, NonFinite, Precision, TrainConfig};
use crate::syntax::{Every, Span, TrainBlock, TrainStmt, Unit};

/// The settings the train block accepts.
pub const KEYS: &[&str] = &[
    "optimizer",
    "schedule",
    "batch",
    "seed",
    "clip",
    "precision",
    "on_nonfinite",
];
/// The cadence statements (`eval every …`).
pub const EVERY: &[&str] = &["eval", "checkpoint", "log"];

#[derive(Clone, Debug)]
pub enum Length {
    Steps(u64),
    Fraction(f64),
}

#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub optimizer: AdamW,
    /// Where the optimizer was written: nGPT checks weight decay against it.
    pub optimizer_span: Span,
    pub weight_decay_set: bool,
    pub decay: Decay,
    pub warmup: Length,
    /// `wsd`'s final decay.
    pub decay_len: Length,
    pub min_ratio: f64,
    pub batch: usize,
    pub seed: u64,
    pub clip: Option<f64>,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub on_nonfinite: NonFinite,
    pub precision: Precision,
    /// Where `schedule = …` was written (the block when it was not).
    pub schedule_span: Span,
}

impl TrainSettings {
    /// The TrainConfig of one stage, once the whole schedule's length is known.
    pub fn config(&self, arch: Arch, batch: usize, lr: f64, total_steps: u64) -> TrainConfig {
        let steps = |w: &Length| match *w {
            Length::Steps(s) => s,
            Length::Fraction(f) => (f * total_steps as f64).round() as u64,
        };
        let mut optimizer = AdamW {
            lr,
            ..self.optimizer.clone()
        };
        if arch == Arch::Ngpt {
            optimizer.weight_decay = 0.0;
        }
        TrainConfig {
            optimizer,
            schedule: LrSchedule {
                decay: self.decay,
                warmup_steps: steps(&self.warmup),
                min_ratio: self.min_ratio,
                total_steps,
                decay_steps: match self.decay {
                    Decay::Wsd => steps(&self.decay_len),
                    _ => 0,
                },
            },
            batch,
            seed: self.seed,
            clip: self.clip,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            on_nonfinite: self.on_nonfinite,
            precision: self.precision,
        }
    }
}

pub fn defaults(span: Span) -> TrainSettings {
    TrainSettings {
        optimizer: AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        optimizer_span: span,
        weight_decay_set: false,
        decay: Decay::Constant,
        warmup: Length::Steps(0),
        decay_len: Length::Fraction(0.2),
        min_ratio: 0.1,
        batch: 16,
        seed: 1,
        clip: Some(1.0),
        eval_every: 200,
        eval_batches: 20,
        checkpoint_every: 1000,
        log_every: 10,
        on_nonfinite: NonFinite::Stop,
        precision: Precision::F32,
        schedule_span: span,
    }
}

pub fn check(block: &TrainBlock, diags: &mut Vec<Diag>) -> TrainSettings {
    let mut t = defaults(block.span);
    let settings = block.stmts.iter().filter_map(|s| match s {
        TrainStmt::Setting(s) => Some(s),
        TrainStmt::Every(_) => None,
    });
    let s = Settings::new(settings, KEYS, "the train block", diags);
    let mut report = |r: Result<(), Diag>| {
        if let Err(d) = r {
            diags.push(d);
        }
    };

    if let Some(o) = s.get("optimizer") {
        t.optimizer_span = o.value.span;
        report(optimizer(&o.value, &mut t));
    }
    if let Some(sch) = s.get("schedule") {
        t.schedule_span = sch.value.span;
        report(schedule(&sch.value, &mut t));
    }
    if let Some(b) = s.get("batch") {
        report(batch(&b.value).map(|b| t.batch = b));
    }
    if let Some(seed) = s.get("seed") {
        report(eval::number(&seed.value, &mut NoNames).and_then(|v| {
            if v < 0.0 || v.fract() != 0.0 || v > u64::MAX as f64 {
                Err(
                    Diag::error("gs::value", "the seed must be a whole number ≥ 0")
                        .label(seed.value.span, "not a valid seed"),
                )
            } else {
                t.seed = v as u64;
                Ok(())
            }
        }));
    }
    if let Some(c) = s.get("clip") {
        report(clip(&c.value).map(|c| t.clip = c));
    }
    if let Some(n) = s.get("on_nonfinite") {
        report(on_nonfinite(&n.value).map(|n| t.on_nonfinite = n));
    }
    if let Some(p) = s.get("precision") {
        report(
            eval::choice(&p.value, &["f32", "bf16", "f16"], "precision").and_then(
                |name| match name {
                    "f32" => Ok(()),
                    "bf16" => {
                        t.precision = Precision::Bf16;
                        Ok(())
                    }
                    other => Err(Diag::error(
                        "gs::unsupported",
                        format!("precision `{other}` is not available on any backend yet"),
                    )
                    .label(p.value.span, "not supported")
                    .help("write `precision = bf16` (or `f32`)")),
                },
            ),
        );
    }

    let mut seen: Vec<&Every> = Vec::new();
    for stmt in &block.stmts {
        let TrainStmt::Every(e) = stmt else { continue };
        if !EVERY.contains(&e.what.name.as_str()) {
            report(Err(Diag::error(
                "gs::unknown-key",
                format!("unknown cadence `{} every …`", e.what.name),
            )
            .label(e.what.span, "unknown")
            .help(suggestion(&e.what.name, EVERY))));
            continue;
        }
        if let Some(first) = seen.iter().find(|f| f.what.name == e.what.name) {
            report(Err(Diag::error(
                "gs::duplicate-key",
                format!("`{} every` is given twice", e.what.name),
            )
            .label(e.what.span, "again here")
            .label(first.what.span, "first here")
            .help("keep one of them")));
            continue;
        }
        seen.push(e);
        report(every(e, &mut t));
    }
    t
}

fn optimizer(e: &crate::syntax::Expr, t: &mut TrainSettings) -> Result<(), Diag> {
    let mut diags = Vec::new();
    let args = Args::of(e, &["lr", "betas", "eps", "weight_decay"], &mut diags);
    let Some(args) = args else {
        return Err(diags.remove(0));
    };
    if args.callee != "adamw" {
        let mut d = Diag::error(
            "gs::unknown-name",
            format!("unknown optimizer `{}`", args.callee),
        )
        .label(args.callee_span, "not an optimizer gsc knows");
        d = d.help(match suggestion(args.callee, &["adamw"]) {
            s if s.starts_with("did") => s,
            _ => "gsc trains with `adamw(lr = …, betas = (0.9, 0.95), weight_decay = 0.1)`".into(),
        });
        return Err(d);
    }
    if let Some(d) = diags.into_iter().next() {
        return Err(d);
    }
    if let Some(p) = args.positional.first() {
        return Err(
            Diag::error("gs::argument", "adamw's arguments must be named")
                .label(p.span, "unnamed")
                .help("write e.g. `adamw(lr = 3e-3)`"),
        );
    }
    let Some(lr) = args.get("lr") else {
        return Err(
            Diag::error("gs::missing-key", "adamw needs a learning rate")
                .label(args.span, "no `lr`")
                .help("write e.g. `adamw(lr = 3e-3)`"),
        );
    };
    t.optimizer.lr = positive(lr, "the learning rate")?;
    if let Some(b) = args.get("betas") {
        let items = match &b.kind {
            crate::syntax::ExprKind::Tuple { items } if items.len() == 2 => items,
            _ => {
                return Err(eval::not_a(b, "a pair `(beta1, beta2)`")
                    .help("write e.g. `betas = (0.9, 0.95)`"))
            }
        };
        let beta = |e| -> Result<f64, Diag> {
            let v = eval::number(e, &mut NoNames)?;
            if !(0.0..1.0).contains(&v) {
                return Err(Diag::error("gs::value", "Adam's betas must lie in [0, 1)")
                    .label(e.span, "out of range"));
            }
            Ok(v)
        };
        t.optimizer.beta1 = beta(&items[0])?;
        t.optimizer.beta2 = beta(&items[1])?;
    }
    if let Some(eps) = args.get("eps") {
        t.optimizer.eps = positive(eps, "eps")?;
    }
    if let Some(wd) = args.get("weight_decay") {
        let v = eval::number(wd, &mut NoNames)?;
        if v < 0.0 {
            return Err(Diag::error("gs::value", "weight decay cannot be negative")
                .label(wd.span, "negative"));
        }
        t.optimizer.weight_decay = v;
        t.weight_decay_set = true;
    }
    Ok(())
}

fn positive(e: &crate::syntax::Expr, what: &str) -> Result<f64, Diag> {
    let v = eval::number(e, &mut NoNames)?;
    if v <= 0.0 {
        return Err(Diag::error("gs::value", format!("{what} must be positive"))
            .label(e.span, "not positive"));
    }
    Ok(v)
}

fn schedule(e: &crate::syntax::Expr, t: &mut TrainSettings) -> Result<(), Diag> {
    let mut diags = Vec::new();
    let Some(args) = Args::of(e, &["warmup", "min", "decay"], &mut diags) else {
        return Err(diags.remove(0));
    };
    let kinds = ["constant", "cosine", "linear", "wsd"];
    t.decay = match args.callee {
        "constant" => Decay::Constant,
        "cosine" => Decay::Cosine,
        "linear" => Decay::Linear,
        "wsd" => Decay::Wsd,
        other => {
            return Err(
                Diag::error("gs::unknown-name", format!("unknown LR schedule `{other}`"))
                    .label(args.callee_span, "not a schedule")
                    .help(suggestion(other, &kinds)),
            )
        }
    };
    if let Some(d) = diags.into_iter().next() {
        return Err(d);
    }
    if let Some(w) = args.get("warmup") {
        t.warmup = length(w, "warmup", "2%")?;
    }
    if let Some(d) = args.get("decay") {
        if t.decay != Decay::Wsd {
            return Err(Diag::error(
                "gs::argument",
                format!("`{}` takes no `decay`", args.callee),
            )
            .label(d.span, "only `wsd` has a separate decay phase")
            .help("remove `decay = …`, or write `schedule = wsd(…)`"));
        }
        t.decay_len = length(d, "decay", "20%")?;
    }
    if let Some(m) = args.get("min") {
        let v = eval::number(m, &mut NoNames)?;
        if !(0.0..=1.0).contains(&v) {
            return Err(Diag::error(
                "gs::value",
                "`min` is a fraction of the peak LR, between 0 and 1",
            )
            .label(m.span, "out of range")
            .help("write e.g. `min = 0.1` (or `10%`)"));
        }
        t.min_ratio = v;
    }
    Ok(())
}

/// A part of the run (a warmup or a decay): `N steps`, a bare `N`, or `P%` of the run.
fn length(e: &crate::syntax::Expr, what: &str, share: &str) -> Result<Length, Diag> {
    let q = eval::quantity(e, &mut NoNames)?;
    match (q.unit, q.percent) {
        (None, true) if (0.0..=1.0).contains(&q.value) => Ok(Length::Fraction(q.value)),
        (Some(Unit::Steps) | None, false) if q.value >= 0.0 && q.value.fract() == 0.0 => {
            Ok(Length::Steps(q.value as u64))
        }
        _ => Err(Diag::error(
            "gs::unit",
            format!("{what} is a number of steps or a percentage of the run"),
        )
        .label(e.span, "not steps or %")
        .help(format!(
            "write e.g. `{what} = 100 steps` or `{what} = {share}`"
        ))),
    }
}

/// `32 sequences`, or a bare count.
pub fn batch(e: &crate::syntax::Expr) -> Result<usize, Diag> {
    let v = eval::number_in(e, &mut NoNames, Unit::Sequences)?;
    let b = eval::to_count(v, e.span, "the batch size")?;
    if b > 1 << 20 {
        return Err(Diag::error("gs::value", "the batch size is too large")
            .label(e.span, format!("more than {} sequences", 1 << 20))
            .help("gsc supports batches of up to 1048576 sequences"));
    }
    Ok(b)
}

fn clip(e: &crate::syntax::Expr) -> Result<Option<f64>, Diag> {
    if let crate::syntax::ExprKind::Ref { name } = &e.kind {
        return match name.name.as_str() {
            "none" | "off" => Ok(None),
            other => Err(
                Diag::error("gs::unknown-name", format!("unknown clipping `{other}`"))
                    .label(name.span, "not a threshold")
                    .help("write a max gradient norm such as `clip = 1.0`, or `clip = none`"),
            ),
        };
    }
    positive(e, "the clipping threshold").map(Some)
}

/// `stop`, `skip`, `rollback` or `rollback(lr = F)`, F in (0, 1).
fn on_nonfinite(e: &crate::syntax::Expr) -> Result<NonFinite, Diag> {
    const HELP: &str = "write `on_nonfinite = stop` (the default), `skip`, or `rollback(lr = 0.5)`";
    let unknown = |name: &str, span| {
        Diag::error(
            "gs::unknown-name",
            format!("unknown policy `{name}` for a non-finite loss"),
        )
        .label(span, "not a policy")
        .help(HELP)
    };
    if let crate::syntax::ExprKind::Ref { name } = &e.kind {
        return match name.name.as_str() {
            "stop" => Ok(NonFinite::Stop),
            "skip" => Ok(NonFinite::Skip),
            "rollback" => Ok(NonFinite::Rollback { lr_factor: 0.5 }),
            other => Err(unknown(other, name.span)),
        };
    }
    let mut diags = Vec::new();
    let Some(args) = Args::of(e, &["lr"], &mut diags) else {
        return Err(diags.remove(0));
    };
    if args.callee != "rollback" {
        return Err(unknown(args.callee, args.callee_span));
    }
    if let Some(d) = diags.into_iter().next() {
        return Err(d);
    }
    if let Some(p) = args.positional.first() {
        return Err(
            Diag::error("gs::argument", "rollback's argument must be named")
                .label(p.span, "unnamed")
                .help("write e.g. `rollback(lr = 0.5)`"),
        );
    }
    let lr_factor = match args.get("lr") {
        Some(lr) => {
            let v = eval::number(lr, &mut NoNames)?;
            if !(v > 0.0 && v < 1.0) {
                return Err(Diag::error(
                    "gs::value",
                    "the learning rate after a rollback is a fraction of the one before, in (0, 1)",
                )
                .label(lr.span, "not in (0, 1)")
                .help("write e.g. `rollback(lr = 0.5)` or `rollback(lr = 50%)`"));
            }
            v
        }
        None => 0.5,
    };
    Ok(NonFinite::Rollback { lr_factor })
}

fn every(e: &Every, t: &mut TrainSettings) -> Result<(), Diag> {
    let steps = eval::number_in(&e.every, &mut NoNames, Unit::Steps)?;
    let steps = eval::to_count(steps, e.every.span, "the interval")? as u64;
    match e.what.name.as_str() {
        "eval" => {
            t.eval_every = steps;
            if let Some(on) = &e.on {
                let n = eval::number_in(on, &mut NoNames, Unit::Batches)?;
                t.eval_batches = eval::to_count(n, on.span, "the number of eval batches")?;
            }
        }
        "checkpoint" => t.checkpoint_every = steps,
        _ => t.log_every = steps,
    }
    if e.what.name != "eval" {
        if let Some(on) = &e.on {
            return Err(Diag::error(
                "gs::argument",
                format!("`{} every` takes no `on` clause", e.what.name),
            )
            .label(on.span, "only `eval every` evaluates on batches")
            .help("remove the `on …` part"));
        }
    }
    Ok(())
}
