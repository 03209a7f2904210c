//! `--set key=value`: replaces (or adds) one setting of the file before it is
//! checked. The override is appended to the source text as a comment line, so
//! a diagnostic about its value points at text the user can see.

use crate::diag::Diag;
use crate::syntax::{
    parse_override, Budget, Expr, ExprKind, File, Ident, Item, SchedStmt, Setting, Span, TrainStmt,
};

pub struct Override {
    pub path: Vec<String>,
    pub value: Expr,
    pub span: Span,
}

/// Appends `// --set KEY = VALUE` lines to `source` and parses their values.
pub fn append(source: &mut String, overrides: &[String]) -> Result<Vec<Override>, Diag> {
    let mut out = Vec::new();
    if overrides.is_empty() {
        return Ok(out);
    }
    source.push_str("\n// gsc --set\n");
    for o in overrides {
        // Each override becomes one comment line of the source.
        if o.contains(['\n', '\r']) {
            return Err(
                Diag::error("gs::override", format!("`--set {o:?}` spans several lines"))
                    .help("write each override on one line, e.g. `--set train.batch=32`"),
            );
        }
        let Some((key, value)) = o.split_once('=') else {
            return Err(
                Diag::error("gs::override", format!("`--set {o}` has no `=`"))
                    .help("write `--set key=value`, e.g. `--set train.batch=32`"),
            );
        };
        let line_start = source.len();
        source.push_str(&format!("// --set {} = ", key.trim()));
        let value_start = source.len();
        source.push_str(value.trim());
        source.push('\n');
        let value = parse_override(source, value_start, source.len() - 1)?;
        out.push(Override {
            path: key.trim().split('.').map(str::to_string).collect(),
            value,
            span: Span::new(line_start, source.len() - 1),
        });
    }
    Ok(out)
}

/// Applies the overrides to the parsed file.
pub fn apply(file: &mut File, overrides: Vec<Override>) -> Result<(), Diag> {
    for o in overrides {
        let path: Vec<&str> = o.path.iter().map(String::as_str).collect();
        let unknown = |what: &str| {
            Diag::error("gs::override", format!("`--set {}`: {what}", o.path.join(".")))
                .label(o.span, "this override")
                .help("keys are `data.KEY`, `model.NAME.KEY` (or `model.KEY` with one model), `train.KEY`, `train.lr` and `grow.MODEL.STAGE` (a stage's budget)")
        };
        let setting = |key: &str| Setting {
            key: Ident {
                name: key.to_string(),
                span: o.span,
            },
            value: o.value.clone(),
            span: o.span,
        };
        match path.as_slice() {
            ["train", "lr"] => {
                let has_optimizer = train_settings(file)
                    .is_some_and(|s| s.iter().any(|s| s.key.name == "optimizer"));
                if !has_optimizer {
                    // The default optimizer, with this learning rate.
                    let call = Expr {
                        kind: ExprKind::Call {
                            name: setting("adamw").key,
                            args: vec![crate::syntax::Arg {
                                name: Some(setting("lr").key),
                                value: o.value.clone(),
                            }],
                        },
                        span: o.span,
                    };
                    train_block(file, o.span)
                        .stmts
                        .push(TrainStmt::Setting(Setting {
                            value: call,
                            ..setting("optimizer")
                        }));
                    continue;
                }
                let Some(opt) = train_settings(file)
                    .and_then(|s| s.into_iter().find(|s| s.key.name == "optimizer"))
                else {
                    unreachable!("checked just above");
                };
                let ExprKind::Call { args, .. } = &mut opt.value.kind else {
                    return Err(unknown("the optimizer is not a call with arguments"));
                };
                match args
                    .iter_mut()
                    .find(|a| a.name.as_ref().is_some_and(|n| n.name == "lr"))
                {
                    Some(a) => a.value = o.value.clone(),
                    None => args.push(crate::syntax::Arg {
                        name: Some(setting("lr").key),
                        value: o.value.clone(),
                    }),
                }
            }
            ["train", key] => {
                let block = train_block(file, o.span);
                let existing = block.stmts.iter_mut().find_map(|s| match s {
                    TrainStmt::Setting(s) if s.key.name == *key => Some(s),
                    _ => None,
                });
                match existing {
                    Some(s) => s.value = o.value.clone(),
                    None => block.stmts.push(TrainStmt::Setting(setting(key))),
                }
            }
            ["data", rest @ ..] | ["model", rest @ ..] => {
                let is_data = path[0] == "data";
                let key = match rest {
                    [key] | [_, key] => *key,
                    _ => return Err(unknown("expected one key after the block")),
                };
                let blocks: Vec<&mut Vec<Setting>> = file
                    .items
                    .iter_mut()
                    .filter_map(|i| match i {
                        Item::Data(d) if is_data && (rest.len() == 1 || d.name.name == rest[0]) => {
                            Some(&mut d.settings)
                        }
                        Item::Model(m)
                            if !is_data && (rest.len() == 1 || m.name.name == rest[0]) =>
                        {
                            Some(&mut m.settings)
                        }
                        _ => None,
                    })
                    .collect();
                if blocks.len() != 1 {
                    return Err(unknown(if blocks.is_empty() {
                        "no such block"
                    } else {
                        "several blocks match: name one"
                    }));
                }
                for settings in blocks {
                    match settings.iter_mut().find(|s| s.key.name == key) {
                        Some(s) => s.value = o.value.clone(),
                        None => settings.push(setting(key)),
                    }
                }
            }
            // A stage's budget: what a sweep of growth points or budgets changes.
            ["grow", model, stage] => {
                let block = file
                    .items
                    .iter_mut()
                    .find_map(|i| match i {
                        Item::Grow(g) if g.model.name == *model => Some(g),
                        _ => None,
                    })
                    .ok_or_else(|| unknown("no `grow` block for that model"))?;
                let stage = block
                    .stmts
                    .iter_mut()
                    .find_map(|s| match s {
                        SchedStmt::Stage(s) if s.name.name == *stage => Some(s),
                        _ => None,
                    })
                    .ok_or_else(|| unknown("that schedule has no stage of this name"))?;
                stage.budget = Budget::Amount {
                    amount: o.value.clone(),
                };
            }
            [first, ..] if !["data", "model", "train", "grow"].contains(first) => {
                return Err(unknown(&format!(
                    "`{first}` is not a block; {}",
                    crate::diag::suggestion(first, &["data", "model", "train", "grow"])
                )))
            }
            _ => return Err(unknown("unknown key")),
        }
    }
    Ok(())
}

/// The file's train block, added (empty: every setting at its default) if it has none.
fn train_block(file: &mut File, span: Span) -> &mut crate::syntax::TrainBlock {
    if !file.items.iter().any(|i| matches!(i, Item::Train(_))) {
        file.items.push(Item::Train(crate::syntax::TrainBlock {
            stmts: Vec::new(),
            span,
        }));
    }
    file.items
        .iter_mut()
        .find_map(|i| match i {
            Item::Train(t) => Some(t),
            _ => None,
        })
        .expect("added above")
}

fn train_settings(file: &mut File) -> Option<Vec<&mut Setting>> {
    file.items.iter_mut().find_map(|i| match i {
        Item::Train(t) => Some(
            t.stmts
                .iter_mut()
                .filter_map(|s| match s {
                    TrainStmt::Setting(s) => Some(s),
                    TrainStmt::Every(_) => None,
                })
                .collect(),
        ),
        _ => None,
    })
}
