//! Semantic checks: AST → Plan, every mistake a diagnostic. Checking goes on
//! after an error wherever the rest can still be judged, so one run reports
//! all the independent mistakes of a file.

mod compare;
mod data;
mod eval;
mod growth;
mod model;
mod overrides;
mod schedule;
mod settings;
mod train;

/// The names the checks accept, for editors: completion and hover are built
/// from these lists, so they cannot drift from what `gsc check` accepts.
pub mod names {
    pub use super::compare::BASELINES;
    pub use super::data::KEYS as DATA_KEYS;
    pub use super::growth::{methods, METHODS, OPTIONS as GROWTH_OPTIONS};
    pub use super::model::{ARCHS, KEYS as MODEL_KEYS};
    pub use super::schedule::SET_KEYS;
    pub use super::train::{EVERY, KEYS as TRAIN_KEYS};
    pub use crate::plan::Axis;
}

use crate::diag::{suggestion, Diag, Report};
use crate::plan::{Arch, Plan, RunPlan};
use crate::syntax::{self, File, Item};
use std::path::Path;

/// The result of checking one file: its diagnostics (errors and warnings),
/// and the plan when there were no errors.
pub struct Checked {
    pub report: Report,
    pub ast: Option<File>,
    pub plan: Option<Plan>,
}

/// Parses and checks `source` (read from `name`, whose folder data paths are
/// relative to), after applying `--set key=value` overrides.
pub fn check_source(name: &str, source: &str, base_dir: &Path, overrides: &[String]) -> Checked {
    let mut text = source.to_string();
    let mut diags = Vec::new();
    let (ast, plan) = match overrides::append(&mut text, overrides) {
        Err(d) => {
            diags.push(d);
            (None, None)
        }
        Ok(ovs) => match syntax::parse(&text) {
            Err(d) => {
                diags.push(d);
                (None, None)
            }
            Ok(mut ast) => match overrides::apply(&mut ast, ovs) {
                Err(d) => {
                    diags.push(d);
                    (Some(ast), None)
                }
                Ok(()) => {
                    let plan = check_file(name, &ast, base_dir, &mut diags);
                    (Some(ast), plan)
                }
            },
        },
    };
    diags.sort_by_key(|d| (d.primary().start, d.primary().end));
    let plan = plan.filter(|_| !diags.iter().any(Diag::is_error));
    Checked {
        report: Report {
            name: name.to_string(),
            source: text,
            diags,
        },
        ast,
        plan,
    }
}

fn check_file(name: &str, file: &File, base_dir: &Path, diags: &mut Vec<Diag>) -> Option<Plan> {
    let data_blocks: Vec<_> = file
        .items
        .iter()
        .filter_map(|i| if let Item::Data(d) = i { Some(d) } else { None })
        .collect();
    let data = match data_blocks.as_slice() {
        [] => {
            diags.push(
                Diag::error("gs::missing-block", "the file has no data block")
                    .label(syntax::Span::new(0, 0), "what does the model train on?")
                    .help("add `data text { text = \"data/tinyshakespeare.txt\" }`"),
            );
            None
        }
        [d, rest @ ..] => {
            for r in rest {
                diags.push(
                    Diag::error("gs::duplicate-block", "only one data block is supported")
                        .label(r.name.span, "second data block")
                        .label(d.name.span, "first one")
                        .help("list several files in one block: `text = [\"a.txt\", \"b.txt\"]`"),
                );
            }
            data::check(d, base_dir, diags)
        }
    };
    let vocab = data.as_ref().map_or(256, |d| d.plan.vocab);

    let mut train_blocks = file.items.iter().filter_map(|i| {
        if let Item::Train(t) = i {
            Some(t)
        } else {
            None
        }
    });
    let train = match train_blocks.next() {
        Some(t) => train::check(t, diags),
        None => train::defaults(syntax::Span::new(0, 0)),
    };
    let first_train = file.items.iter().find_map(|i| match i {
        Item::Train(t) => Some(syntax::Span::new(
            t.span.start,
            t.span.start + "train".len(),
        )),
        _ => None,
    });
    for extra in train_blocks {
        let keyword = syntax::Span::new(extra.span.start, extra.span.start + "train".len());
        diags.push(
            Diag::error("gs::duplicate-block", "a file has one train block")
                .label(keyword, "second train block")
                .label(first_train.unwrap_or_default(), "first one")
                .help("merge their settings into one `train { … }` block"),
        );
    }

    let mut models: Vec<(&syntax::ModelBlock, Option<model::Model>)> = Vec::new();
    for item in &file.items {
        let Item::Model(m) = item else { continue };
        if let Some((first, _)) = models.iter().find(|(f, _)| f.name.name == m.name.name) {
            diags.push(
                Diag::error(
                    "gs::duplicate-name",
                    format!("two models are named `{}`", m.name.name),
                )
                .label(m.name.span, "second model")
                .label(first.name.span, "first one")
                .help("give each model its own name"),
            );
            continue;
        }
        models.push((m, model::check(m, vocab, diags)));
    }

    let mut runs: Vec<RunPlan> = Vec::new();
    let mut grown: Vec<&str> = Vec::new();
    for item in &file.items {
        let Item::Grow(g) = item else { continue };
        let Some((_, model)) = models.iter().find(|(m, _)| m.name.name == g.model.name) else {
            let names: Vec<&str> = models.iter().map(|(m, _)| m.name.name.as_str()).collect();
            diags.push(
                Diag::error(
                    "gs::unknown-name",
                    format!("no model is named `{}`", g.model.name),
                )
                .label(g.model.span, "unknown model")
                .help(suggestion(&g.model.name, &names)),
            );
            continue;
        };
        if grown.contains(&g.model.name.as_str()) {
            diags.push(
                Diag::error(
                    "gs::duplicate-block",
                    format!("`{}` has two schedules", g.model.name),
                )
                .label(g.model.span, "second schedule")
                .help("put all of its stages in one `grow` block; to compare, use `compare`"),
            );
            continue;
        }
        grown.push(&g.model.name);
        if let (Some(model), Some(data)) = (model, &data) {
            if model.config.arch == Arch::Ngpt
                && train.weight_decay_set
                && train.optimizer.weight_decay > 0.0
                && !diags
                    .iter()
                    .any(|d| d.code == "gs::ngpt" && d.primary() == train.optimizer_span)
            {
                diags.push(
                    Diag::error("gs::ngpt", "nGPT trains without weight decay")
                        .label(train.optimizer_span, format!("weight_decay = {}", train.optimizer.weight_decay))
                        .label(model.spans.header, "this model is an nGPT")
                        .help("write `weight_decay = 0`: nGPT keeps its weights on the unit sphere instead"),
                );
            }
            if let Some(run) = schedule::check(g, model, data, &train, diags) {
                runs.push(run);
            }
        }
    }
    let any_grow = file.items.iter().any(|i| matches!(i, Item::Grow(_)));
    if !any_grow && !models.is_empty() {
        let (m, _) = models[0];
        diags.push(
            Diag::error("gs::empty-schedule", "nothing is trained: no `grow` block")
                .label(m.name.span, "this model has no schedule")
                .help(format!(
                    "add `grow {} {{ stage main: train 1000 steps }}`",
                    m.name.name
                )),
        );
    }
    if models.is_empty() {
        diags.push(
            Diag::error("gs::missing-block", "the file has no model")
                .label(syntax::Span::new(0, 0), "what is trained?")
                .help("add `model base = gpt { context = 256  d_model = 256  heads = 4  layers = 4 }`"),
        );
    }

    let schedules = runs.len();
    for item in &file.items {
        let Item::Compare(c) = item else { continue };
        if runs.iter().any(|r| r.name == c.name.name) {
            diags.push(
                Diag::error(
                    "gs::duplicate-name",
                    format!("`{}` already names a run", c.name.name),
                )
                .label(c.name.span, "taken")
                .help("give the comparison its own name"),
            );
            continue;
        }
        if let crate::syntax::ExprKind::Call { args, .. } = &c.run.kind {
            // A comparison with a schedule that failed its own checks says nothing new.
            let of_failed = args.first().is_some_and(|a| {
                matches!(&a.value.kind, crate::syntax::ExprKind::Ref { name }
                    if grown.contains(&name.name.as_str()) && !runs.iter().any(|r| r.name == name.name))
            });
            if of_failed {
                continue;
            }
        }
        match compare::check(c, &runs[..schedules], &train) {
            Ok(run) => runs.push(run),
            Err(d) => diags.push(d),
        }
    }

    let data = data?;
    Some(Plan {
        file: name.to_string(),
        data: data.plan,
        runs,
    })
}
