//! The plan as text (`gsc compile --emit=plan`): what a person checks before
//! spending compute. JSON comes from serde.

use super::*;
use std::fmt::Write;

pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let d = &plan.data;
    let bytes: u64 = d.files.iter().map(|f| f.bytes).sum();
    let _ = writeln!(out, "plan of {}", plan.file);
    // Only the byte tokenizer's token counts are known before the text
    // is tokenised; the others' splits are shown in bytes.
    let (train, val, unit, note) = match (d.train_tokens, d.val_tokens) {
        (Some(train), Some(val)) => (train, val, "tokens", ""),
        _ => {
            let (train, val) = d.split_bytes();
            (
                train,
                val,
                "bytes",
                "; tokens counted when the run tokenises them",
            )
        }
    };
    let _ = writeln!(
        out,
        "data {}: {} file{}, {} bytes, {} (vocab {}); train {} {unit}, validation {} {unit} (last {}{note})",
        d.name,
        d.files.len(),
        if d.files.len() == 1 { "" } else { "s" },
        thousands(bytes),
        d.tokenizer.describe(),
        d.vocab,
        thousands(train),
        thousands(val),
        percent(d.val_fraction),
    );
    for f in &d.files {
        let _ = writeln!(out, "  {} ({} bytes)", f.path, thousands(f.bytes));
    }
    for run in &plan.runs {
        out.push('\n');
        run_text(&mut out, run);
    }
    out
}

fn run_text(out: &mut String, run: &RunPlan) {
    let kind = match run.kind {
        RunKind::Schedule => "schedule",
        RunKind::Scratch => "comparison: from scratch",
        RunKind::Doubling => "comparison: doubling (HyperCloning ×2)",
    };
    let _ = writeln!(
        out,
        "run {} ({kind}), {} stage{}",
        run.name,
        run.stages.len(),
        if run.stages.len() == 1 { "" } else { "s" }
    );
    if let Some(first) = run.stages.first() {
        let t = &first.train;
        let o = &t.optimizer;
        let s = &t.schedule;
        let clip = t.clip.map_or("none".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "  train: adamw(lr {:?}, betas ({:?}, {:?}), eps {:?}, weight_decay {:?}), {} schedule (warmup {} steps{}, min {:?}), clip {clip}, seed {}{}",
            o.lr,
            o.beta1,
            o.beta2,
            o.eps,
            o.weight_decay,
            format!("{:?}", s.decay).to_lowercase(),
            s.warmup_steps,
            match s.decay {
                crate::plan::Decay::Wsd => format!(", decay over the last {} steps", s.decay_steps),
                _ => String::new(),
            },
            s.min_ratio,
            t.seed,
            match t.precision {
                crate::plan::Precision::F32 => "",
                crate::plan::Precision::Bf16 => ", products in bf16 (f32 sums)",
            }
        );
        let _ = writeln!(
            out,
            "  eval every {} steps on {} batches, checkpoint every {} steps, log every {} steps",
            t.eval_every, t.eval_batches, t.checkpoint_every, t.log_every
        );
    }
    for stage in &run.stages {
        for (k, g) in stage.growth.iter().enumerate() {
            growth_text(out, g, stage.lr_scale.get(k).copied());
        }
        stage_text(out, stage);
    }
    let t = &run.totals;
    let bound = if t.bounded {
        ""
    } else {
        " (+ an uncapped last stage)"
    };
    let _ = writeln!(
        out,
        "  total: {} steps, {} tokens, {} FLOPs{bound}",
        thousands(t.steps),
        thousands(t.tokens),
        sci(t.flops)
    );
}

fn stage_text(out: &mut String, s: &StagePlan) {
    let m = &s.model;
    let budget = match (&s.until, s.steps) {
        (Some(u), cap) => {
            let op = if u.strict { "<" } else { "<=" };
            let cap = cap.map_or(", no cap".to_string(), |c| {
                format!(", at most {} steps", thousands(c))
            });
            format!("until {} {op} {}{cap}", u.metric, u.value)
        }
        (None, Some(steps)) => format!("{} steps", thousands(steps)),
        (None, None) => String::new(),
    };
    let span = s.steps.map_or(String::new(), |n| {
        format!(", steps {}..{}", s.first_step, s.first_step + n)
    });
    let _ = writeln!(out, "  stage {}: {budget}{span}", s.name);
    let _ = writeln!(
        out,
        "    batch {} × context {} = {} tokens/step, lr {:?}{}",
        s.train.batch,
        m.context,
        thousands(s.tokens_per_step()),
        s.train.optimizer.lr,
        match (s.tokens(), s.flops()) {
            (Some(t), Some(f)) => format!(", {} tokens, {} FLOPs", thousands(t), sci(f)),
            _ => String::new(),
        }
    );
    let arch = match m.arch {
        Arch::Gpt => format!(
            "gpt, {}, {}, {} head",
            match m.norm {
                NormKind::RmsNorm => "rmsnorm",
                NormKind::LayerNorm => "layernorm",
            },
            match m.activation {
                Activation::Gelu => "gelu",
                Activation::Swiglu => "swiglu",
            },
            if m.tied { "tied" } else { "untied" }
        ),
        Arch::Ngpt => "ngpt".to_string(),
    };
    let _ = writeln!(
        out,
        "    model {arch}: d_model {}, heads {} × {} (kv {}), layers {}, ffn {}, vocab {}",
        m.d_model, m.heads, m.head_dim, m.kv_heads, m.layers, m.ffn, m.vocab
    );
    for g in &s.gates {
        let what = if g.axis == Axis::Heads {
            "head outputs"
        } else {
            "ffn units"
        };
        let _ = writeln!(
            out,
            "    gate on {what}: new {} of {} ramped 0 → 1 over steps {}..{}",
            unit_ranges(&g.new_units),
            g.size,
            s.first_step,
            s.first_step + g.steps
        );
    }
    let _ = writeln!(
        out,
        "    {} parameters ({} non-embedding), {} FLOPs/token",
        thousands(s.param_count as u64),
        thousands(m.non_embedding_params() as u64),
        sci(s.flops_per_token)
    );
    for (name, shape, count) in folded_params(m) {
        let times = if count > 1 {
            format!(" ×{count}")
        } else {
            String::new()
        };
        let _ = writeln!(out, "      {name:<28} {}{times}", dims(&shape));
    }
}

/// Ascending indices as runs: `[2]`, `[64..96]`, `[1, 3..5]` (half-open).
fn unit_ranges(units: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &u in units {
        match runs.last_mut() {
            Some((_, end)) if *end == u => *end += 1,
            _ => runs.push((u, u + 1)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if b == a + 1 {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Per-layer parameters folded into `layers.*.…` lines.
fn folded_params(m: &ModelConfig) -> Vec<(String, Vec<usize>, usize)> {
    let mut out: Vec<(String, Vec<usize>, usize)> = Vec::new();
    for p in m.params() {
        let name = match p.layer {
            Some(l) => p.name.replacen(&format!("layers.{l}."), "layers.*.", 1),
            None => p.name.clone(),
        };
        match out.iter_mut().find(|(n, s, _)| *n == name && *s == p.shape) {
            Some(entry) => entry.2 += 1,
            None => out.push((name, p.shape, 1)),
        }
    }
    out
}

fn growth_text(out: &mut String, g: &GrowthStep, lr_scale: Option<f64>) {
    let mut extra = String::new();
    if !g.positions.is_empty() && g.axis == Axis::Layers {
        let _ = write!(extra, " at {:?}", g.positions);
    }
    if g.noise > 0.0 {
        let _ = write!(extra, ", noise {}", g.noise);
    }
    let policy = match g.optimizer {
        OptimizerPolicy::Map => "map",
        OptimizerPolicy::ZeroNew => "zero_new",
        OptimizerPolicy::Asymmetric => "asymmetric",
        OptimizerPolicy::Reset => "reset",
    };
    let _ = write!(extra, ", optimizer {policy}");
    if g.rewarm_steps > 0 {
        let _ = write!(extra, ", rewarm {} steps", g.rewarm_steps);
    }
    if let Some(s) = lr_scale.filter(|s| *s != 1.0) {
        let _ = write!(extra, ", lr_scale {s}");
    }
    let exact = if g.exact { "exact" } else { "NOT exact" };
    let method = match (g.axis, g.method) {
        (Axis::DModel, Method::Copy) => "copy (HyperCloning)".to_string(),
        (_, m) => m.describe(),
    };
    let _ = writeln!(
        out,
        "  grow {} {} → {} by {method}{extra} ({exact})",
        g.axis.name(),
        g.from,
        g.to,
    );
    for c in &g.changes {
        let from = c.from.as_ref().map_or("new".to_string(), |f| dims(f));
        let _ = writeln!(out, "      {:<28} {from} → {}", c.param, dims(&c.to));
    }
}

fn dims(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn sci(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    format!("{x:.3e}")
}

fn percent(f: f64) -> String {
    let p = f * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round())
    } else {
        format!("{p}%")
    }
}
