//! `model NAME = gpt|ngpt { … }` → ModelConfig. Settings may refer to each
//! other (`ffn = 4 * d_model`), in any order.

use super::eval::{self, Env};
use super::settings::Settings;
use crate::diag::{suggestion, Diag};
use crate::plan::{Activation, Arch, ModelConfig, NormKind};
use crate::syntax::{ModelBlock, Setting, Span};

/// The settings a model block accepts.
pub const KEYS: &[&str] = &[
    "vocab",
    "context",
    "d_model",
    "heads",
    "head_dim",
    "kv_heads",
    "layers",
    "ffn",
    "activation",
    "norm",
    "tied",
    "rope_base",
    "init_std",
    "norm_eps",
];
/// The architectures a model may be.
pub const ARCHS: &[&str] = &["gpt", "ngpt"];
const NUMERIC: &[&str] = &[
    "vocab",
    "context",
    "d_model",
    "heads",
    "head_dim",
    "kv_heads",
    "layers",
    "ffn",
    "rope_base",
    "init_std",
    "norm_eps",
];

/// Where each dimension was written, so growth and data checks can point at it.
#[derive(Clone, Debug, Default)]
pub struct ModelSpans {
    pub context: Span,
    pub vocab: Span,
    pub header: Span,
}

pub struct Model {
    pub config: ModelConfig,
    pub spans: ModelSpans,
}

struct BlockEnv<'a> {
    settings: &'a Settings<'a>,
    tokenizer_vocab: usize,
    resolved: Vec<(&'static str, f64)>,
    visiting: Vec<&'static str>,
}

impl Env for BlockEnv<'_> {
    fn lookup(&mut self, name: &str, span: Span) -> Result<f64, Diag> {
        if name == "tokenizer" {
            return Ok(self.tokenizer_vocab as f64);
        }
        let Some(key) = NUMERIC.iter().find(|k| **k == name).copied() else {
            return Err(
                Diag::error("gs::unknown-name", format!("unknown name `{name}`"))
                    .label(span, "not a model setting")
                    .help(suggestion(name, NUMERIC)),
            );
        };
        if let Some((_, v)) = self.resolved.iter().find(|(k, _)| *k == key) {
            return Ok(*v);
        }
        let Some(setting) = self.settings.get(key) else {
            return Err(Diag::error(
                "gs::unknown-name",
                format!("`{name}` is not set in this model"),
            )
            .label(span, "refers to a setting that is missing")
            .help(format!("set `{name}` in the model, or write the number")));
        };
        if self.visiting.contains(&key) {
            return Err(Diag::error(
                "gs::cycle",
                format!("`{name}` is defined in terms of itself"),
            )
            .label(span, "refers back")
            .help("write one of the settings as a number"));
        }
        self.visiting.push(key);
        let v = eval::number(&setting.value, self);
        self.visiting.pop();
        let v = v?;
        self.resolved.push((key, v));
        Ok(v)
    }

    fn names(&self) -> Vec<&'static str> {
        NUMERIC.to_vec()
    }
}

pub fn check(block: &ModelBlock, tokenizer_vocab: usize, diags: &mut Vec<Diag>) -> Option<Model> {
    let what = format!("model `{}`", block.name.name);
    let s = Settings::new(&block.settings, KEYS, &what, diags);
    let header = block.name.span;
    let errors_before = diags.iter().filter(|d| d.is_error()).count();

    let arch = match eval::choice(
        &crate::syntax::Expr {
            kind: crate::syntax::ExprKind::Ref {
                name: block.arch.clone(),
            },
            span: block.arch.span,
        },
        ARCHS,
        "architecture",
    ) {
        Ok("gpt") => Arch::Gpt,
        Ok(_) => Arch::Ngpt,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let ngpt = arch == Arch::Ngpt;

    let mut env = BlockEnv {
        settings: &s,
        tokenizer_vocab,
        resolved: Vec::new(),
        visiting: Vec::new(),
    };
    let mut dim = |key: &str, example: &str, diags: &mut Vec<Diag>| -> Option<usize> {
        let setting = s.require(key, &what, header, example, diags)?;
        let v = eval::number(&setting.value, &mut env)
            .and_then(|v| eval::to_count(v, setting.value.span, key))
            .and_then(|v| within_limit(key, v, setting.value.span));
        v.map_err(|d| report(diags, d, block.span)).ok()
    };
    let d_model = dim("d_model", "d_model = 256", diags);
    let layers = dim("layers", "layers = 4", diags);
    let context = dim("context", "context = 256", diags);

    let mut opt_dim = |key: &str, diags: &mut Vec<Diag>| -> Option<Option<(usize, &Setting)>> {
        let Some(setting) = s.get(key) else {
            return Some(None);
        };
        let v = eval::number(&setting.value, &mut env)
            .and_then(|v| eval::to_count(v, setting.value.span, key))
            .and_then(|v| within_limit(key, v, setting.value.span));
        match v {
            Ok(v) => Some(Some((v, setting))),
            Err(d) => {
                report(diags, d, block.span);
                None
            }
        }
    };
    let heads = opt_dim("heads", diags);
    let head_dim = opt_dim("head_dim", diags);
    let kv_heads = opt_dim("kv_heads", diags);
    let ffn = opt_dim("ffn", diags);
    let vocab = opt_dim("vocab", diags);
    let mut float = |key: &str, default: f64, diags: &mut Vec<Diag>| -> f64 {
        match s.get(key) {
            None => default,
            Some(setting) => match eval::number(&setting.value, &mut env) {
                Ok(v) if v > 0.0 => v,
                Ok(_) => {
                    diags.push(
                        Diag::error("gs::value", format!("`{key}` must be positive"))
                            .label(setting.value.span, "not positive"),
                    );
                    default
                }
                Err(d) => {
                    diags.push(d);
                    default
                }
            },
        }
    };
    let rope_base = float("rope_base", 10000.0, diags);
    let init_std = float("init_std", 0.02, diags);
    let norm_eps = float("norm_eps", 1e-5, diags);

    let activation = match s.get("activation") {
        None if ngpt => Activation::Swiglu,
        None => Activation::Gelu,
        Some(a) => match eval::choice(&a.value, &["gelu", "swiglu"], "activation") {
            Ok("gelu") if ngpt => {
                diags.push(
                    Diag::error(
                        "gs::ngpt",
                        "nGPT's MLP is always SwiGLU-style (u ⊙ SiLU(v))",
                    )
                    .label(a.value.span, "not available for ngpt")
                    .help("remove `activation`, or write `activation = swiglu`"),
                );
                Activation::Swiglu
            }
            Ok("gelu") => Activation::Gelu,
            Ok(_) => Activation::Swiglu,
            Err(d) => {
                diags.push(d);
                Activation::Gelu
            }
        },
    };
    let norm = match s.get("norm") {
        None => NormKind::RmsNorm,
        Some(n) if ngpt => {
            diags.push(
                Diag::error(
                    "gs::ngpt",
                    "nGPT has no norm layers: every hidden state is normalised to unit length",
                )
                .label(n.key.span, "not available for ngpt")
                .help("remove the `norm` setting"),
            );
            NormKind::RmsNorm
        }
        Some(n) => match eval::choice(&n.value, &["rmsnorm", "layernorm"], "norm") {
            Ok("layernorm") => NormKind::LayerNorm,
            Ok(_) => NormKind::RmsNorm,
            Err(d) => {
                diags.push(d);
                NormKind::RmsNorm
            }
        },
    };
    let tied = match s.get("tied") {
        None => !ngpt,
        Some(t) => match eval::boolean(&t.value) {
            Ok(true) if ngpt => {
                diags.push(
                    Diag::error(
                        "gs::ngpt",
                        "nGPT's output head is untied from the embedding",
                    )
                    .label(t.value.span, "cannot be tied in ngpt")
                    .help("remove `tied`, or write `tied = false`"),
                );
                false
            }
            Ok(v) => v,
            Err(d) => {
                diags.push(d);
                !ngpt
            }
        },
    };

    let (d_model, layers, context, heads, head_dim, kv_heads, ffn, vocab) = (
        d_model?, layers?, context?, heads?, head_dim?, kv_heads?, ffn?, vocab?,
    );

    let (heads, head_dim) = match (heads, head_dim) {
        (Some((h, _)), Some((hd, _))) => (h, hd),
        (Some((h, hs)), None) => {
            if d_model % h != 0 {
                diags.push(
                    Diag::error(
                        "gs::divisibility",
                        format!("d_model = {d_model} is not divisible by heads = {h}"),
                    )
                    .label(
                        hs.value.span,
                        format!("{d_model} / {h} = {:.2}", d_model as f64 / h as f64),
                    )
                    .help(format!(
                        "{}, or set `head_dim` explicitly",
                        nearest_divisors(d_model, h, "heads")
                    )),
                );
                return None;
            }
            (h, d_model / h)
        }
        (None, Some((hd, hs))) => {
            if d_model % hd != 0 {
                diags.push(
                    Diag::error(
                        "gs::divisibility",
                        format!("d_model = {d_model} is not divisible by head_dim = {hd}"),
                    )
                    .label(hs.value.span, "does not divide d_model")
                    .help(format!(
                        "{}, or set `heads` explicitly",
                        nearest_divisors(d_model, hd, "head_dim")
                    )),
                );
                return None;
            }
            (d_model / hd, hd)
        }
        (None, None) => {
            diags.push(
                Diag::error(
                    "gs::missing-key",
                    format!("{what} has neither `heads` nor `head_dim`"),
                )
                .label(header, "attention needs a head count")
                .help("add a line such as `heads = 4` (head_dim = d_model / heads)"),
            );
            return None;
        }
    };
    if !head_dim.is_multiple_of(2) {
        diags.push(odd_head_dim(&s, header, d_model, heads, head_dim));
        return None;
    }
    let kv_heads = match kv_heads {
        None => heads,
        Some((kv, ks)) => {
            if heads % kv != 0 {
                diags.push(
                    Diag::error(
                        "gs::divisibility",
                        format!("heads = {heads} is not a multiple of kv_heads = {kv}"),
                    )
                    .label(ks.value.span, "must divide the number of heads")
                    .help(nearest_divisors(heads, kv, "kv_heads")),
                );
                return None;
            }
            kv
        }
    };
    let mut spans = ModelSpans {
        header,
        context: s.get("context").map(|c| c.value.span).unwrap_or(header),
        vocab: header,
    };
    let vocab = match vocab {
        None => tokenizer_vocab,
        Some((v, vs)) => {
            spans.vocab = vs.value.span;
            if v < tokenizer_vocab {
                diags.push(
                    Diag::error("gs::vocab", format!("the tokenizer has {tokenizer_vocab} tokens but the model's vocabulary is {v}"))
                        .label(vs.value.span, format!("smaller than the tokenizer's {tokenizer_vocab}"))
                        .help("write `vocab = tokenizer` to take the tokenizer's size"),
                );
                return None;
            }
            v
        }
    };
    let ffn = ffn.map_or(4 * d_model, |(f, _)| f);

    if diags.iter().filter(|d| d.is_error()).count() > errors_before {
        return None;
    }
    Some(Model {
        config: ModelConfig {
            arch,
            vocab,
            context,
            d_model,
            heads,
            kv_heads,
            head_dim,
            layers,
            ffn,
            activation,
            norm,
            tied,
            rope_base,
            init_std,
            norm_eps,
        },
        spans,
    })
}

/// The largest size each dimension may have (initially or grown): far beyond
/// any model gsc can train, and small enough that parameter and FLOP counts
/// cannot overflow.
pub fn limit(key: &str) -> usize {
    match key {
        "layers" => 1 << 10,
        "heads" | "kv_heads" => 1 << 16,
        "context" | "vocab" => 1 << 24,
        _ => 1 << 20,
    }
}

fn within_limit(key: &str, v: usize, span: Span) -> Result<usize, Diag> {
    if v > limit(key) {
        return Err(
            Diag::error("gs::value", format!("{key} = {v} is too large"))
                .label(span, format!("more than {}", limit(key)))
                .help(format!("gsc supports {key} up to {}", limit(key))),
        );
    }
    Ok(v)
}

/// Pushes `d`, unless it is a cycle already reported from the other end
/// (`d_model = ffn / 4` with `ffn = 4 * d_model` is one mistake, not two).
fn report(diags: &mut Vec<Diag>, d: Diag, block: Span) {
    let in_block = |o: &Diag| o.primary().start >= block.start && o.primary().end <= block.end;
    if d.code == "gs::cycle" && diags.iter().any(|o| o.code == "gs::cycle" && in_block(o)) {
        return;
    }
    diags.push(d);
}

/// "try heads = 4 or 8": the divisors of `n` closest to `wanted`.
/// RoPE rotates pairs of coordinates, so a head's width must be even.
fn odd_head_dim(s: &Settings, header: Span, d_model: usize, heads: usize, hd: usize) -> Diag {
    let rope = "RoPE rotates pairs of coordinates";
    let nearest_even = (2..=d_model)
        .step_by(2)
        .filter(|d| d_model.is_multiple_of(*d))
        .min_by_key(|d| d.abs_diff(hd));
    let (at, label, help) = match (s.get("head_dim"), s.get("heads"), nearest_even) {
        // With both written, head_dim need not divide d_model.
        (Some(h), Some(_), _) => (
            h.value.span,
            "odd".to_string(),
            format!("{rope}: make head_dim even, such as head_dim = {}", hd + 1),
        ),
        (Some(h), None, Some(e)) => (
            h.value.span,
            "odd".to_string(),
            format!("{rope}: choose an even head_dim that divides d_model = {d_model}, such as head_dim = {e}"),
        ),
        (None, Some(h), Some(e)) => (
            h.value.span,
            format!("head_dim = {d_model} / {heads} = {hd}"),
            format!("{rope}: choose heads so that d_model / heads is even, such as heads = {} (head_dim = {e})", d_model / e),
        ),
        (h, heads_set, _) => (
            h.or(heads_set).map_or(header, |h| h.value.span),
            "odd".to_string(),
            format!("{rope}, and no even head_dim divides d_model = {d_model}: make d_model even"),
        ),
    };
    Diag::error("gs::divisibility", format!("head_dim = {hd} is odd"))
        .label(at, label)
        .help(help)
}

pub fn nearest_divisors(n: usize, wanted: usize, key: &str) -> String {
    let divisors: Vec<usize> = (1..=n).filter(|d| n.is_multiple_of(*d)).collect();
    let below = divisors.iter().rev().find(|d| **d < wanted);
    let above = divisors.iter().find(|d| **d > wanted);
    match (below, above) {
        (Some(b), Some(a)) => {
            format!("the nearest values that divide {n} are {key} = {b} and {key} = {a}")
        }
        (Some(b), None) => format!("the nearest value that divides {n} is {key} = {b}"),
        (None, Some(a)) => format!("the nearest value that divides {n} is {key} = {a}"),
        (None, None) => format!("{key} must divide {n}"),
    }
}
