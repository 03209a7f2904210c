//! pest parse tree → AST. The grammar is `grammar/gs.pest`.

use super::ast::*;
use crate::diag::Diag;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/gs.pest"]
struct GsParser;

/// Parses a whole file. A syntax error is reported as one diagnostic at the
/// first position the grammar could not continue from.
pub fn parse(source: &str) -> Result<File, Diag> {
    let mut pairs = GsParser::parse(Rule::file, source).map_err(syntax_error)?;
    let file = pairs.next().expect("the file rule always yields one pair");
    let items = file
        .into_inner()
        .filter(|p| p.as_rule() != Rule::EOI)
        .map(item)
        .collect();
    Ok(File { items })
}

/// Parses the value of a `--set` override written at `start..end` of `source`
/// (spans stay absolute, so diagnostics point into `source`).
pub fn parse_override(source: &str, start: usize, end: usize) -> Result<Expr, Diag> {
    let padded = format!("{}{}", " ".repeat(start), &source[start..end]);
    let mut pairs = GsParser::parse(Rule::override_value, &padded).map_err(syntax_error)?;
    let value = pairs
        .next()
        .expect("the override rule always yields one pair");
    let e = value
        .into_inner()
        .find(|p| p.as_rule() == Rule::expr)
        .expect("an override holds an expression");
    Ok(expr(e))
}

/// The pair's span without the whitespace and comments pest's implicit
/// skipping leaves at its end (after an optional repetition that matched nothing).
fn span(p: &Pair<Rule>) -> Span {
    let start = p.as_span().start();
    Span::new(start, start + without_trailing_trivia(p.as_str()).len())
}

fn without_trailing_trivia(mut text: &str) -> &str {
    loop {
        let trimmed = text.trim_end();
        if let Some(body) = trimmed.strip_suffix("*/") {
            match body.rfind("/*") {
                Some(open) => text = &trimmed[..open],
                None => return trimmed,
            }
            continue;
        }
        let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
        match line_comment_start(&trimmed[line_start..]) {
            Some(at) => text = &trimmed[..line_start + at],
            None => return trimmed,
        }
    }
}

/// Where a `//` comment starts on this line, outside string literals.
fn line_comment_start(line: &str) -> Option<usize> {
    let mut in_string = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return Some(i),
            _ => {}
        }
    }
    None
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(&p),
    }
}

fn item(p: Pair<Rule>) -> Item {
    let sp = span(&p);
    let rule = p.as_rule();
    let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
    match rule {
        Rule::data_block => {
            let name = ident(inner.next().unwrap());
            Item::Data(DataBlock {
                name,
                settings: inner.map(setting).collect(),
                span: sp,
            })
        }
        Rule::model_block => {
            let name = ident(inner.next().unwrap());
            let arch = ident(inner.next().unwrap());
            Item::Model(ModelBlock {
                name,
                arch,
                settings: inner.map(setting).collect(),
                span: sp,
            })
        }
        Rule::train_block => Item::Train(TrainBlock {
            stmts: inner.map(train_stmt).collect(),
            span: sp,
        }),
        Rule::grow_block => {
            let model = ident(inner.next().unwrap());
            Item::Grow(GrowBlock {
                model,
                stmts: inner.map(sched_stmt).collect(),
                span: sp,
            })
        }
        Rule::compare_item => {
            let name = ident(inner.next().unwrap());
            let call = inner.next().unwrap();
            let run = Expr {
                span: span(&call),
                kind: call_kind(call),
            };
            Item::Compare(CompareItem {
                name,
                run,
                span: sp,
            })
        }
        r => unreachable!("not an item: {r:?}"),
    }
}

fn is_keyword(r: Rule) -> bool {
    matches!(
        r,
        Rule::kw_data
            | Rule::kw_model
            | Rule::kw_train
            | Rule::kw_grow
            | Rule::kw_compare
            | Rule::kw_stage
            | Rule::kw_until
            | Rule::kw_or
            | Rule::kw_to
            | Rule::kw_at
            | Rule::kw_by
            | Rule::kw_on
            | Rule::kw_every
            | Rule::kw_same
            | Rule::kw_set
    )
}

fn setting(p: Pair<Rule>) -> Setting {
    let sp = span(&p);
    let mut inner = p.into_inner();
    let key = ident(inner.next().unwrap());
    let value = expr(inner.next().unwrap());
    Setting {
        key,
        value,
        span: sp,
    }
}

fn train_stmt(p: Pair<Rule>) -> TrainStmt {
    match p.as_rule() {
        Rule::setting => TrainStmt::Setting(setting(p)),
        Rule::every_stmt => {
            let sp = span(&p);
            let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
            let what = ident(inner.next().unwrap());
            let every = expr(inner.next().unwrap());
            let on = inner.next().map(expr);
            TrainStmt::Every(Every {
                what,
                every,
                on,
                span: sp,
            })
        }
        r => unreachable!("not a train statement: {r:?}"),
    }
}

fn sched_stmt(p: Pair<Rule>) -> SchedStmt {
    let sp = span(&p);
    match p.as_rule() {
        Rule::stage_stmt => {
            let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
            let name = ident(inner.next().unwrap());
            let b = inner.next().unwrap();
            let budget = match b.as_rule() {
                Rule::until_budget => {
                    let bsp = span(&b);
                    let mut parts = b.into_inner().filter(|p| !is_keyword(p.as_rule()));
                    let metric = ident(parts.next().unwrap());
                    let strict = parts.next().unwrap().as_str() == "<";
                    let target = expr(parts.next().unwrap());
                    let cap = parts.next().map(expr);
                    Budget::Until {
                        metric,
                        strict,
                        target,
                        cap,
                        span: bsp,
                    }
                }
                _ => Budget::Amount { amount: expr(b) },
            };
            SchedStmt::Stage(Stage {
                name,
                budget,
                span: sp,
            })
        }
        Rule::grow_stmt => {
            let mut inner = p.into_inner().filter(|p| !is_keyword(p.as_rule()));
            let axis = ident(inner.next().unwrap());
            let op = inner.next().unwrap();
            let kind = match op.as_rule() {
                Rule::grow_to => GrowKind::To,
                Rule::grow_mul => GrowKind::Mul,
                _ => GrowKind::Add,
            };
            let amount = expr(op.into_inner().find(|p| p.as_rule() == Rule::expr).unwrap());
            let mut step = GrowStep {
                axis,
                kind,
                amount,
                at: None,
                method: None,
                options: Vec::new(),
                span: sp,
            };
            for part in inner {
                match part.as_rule() {
                    Rule::at_clause => step.at = Some(expr(last_inner(part))),
                    Rule::by_clause => {
                        let m = last_inner(part);
                        let msp = span(&m);
                        let kind = match m.as_rule() {
                            Rule::call => call_kind(m),
                            _ => ExprKind::Ref { name: ident(m) },
                        };
                        step.method = Some(Expr { kind, span: msp });
                    }
                    Rule::option => step.options.push(setting(part)),
                    r => unreachable!("not part of a grow step: {r:?}"),
                }
            }
            SchedStmt::Grow(step)
        }
        Rule::set_stmt => SchedStmt::Set(setting(last_inner(p))),
        r => unreachable!("not a schedule statement: {r:?}"),
    }
}

fn last_inner(p: Pair<Rule>) -> Pair<Rule> {
    p.into_inner()
        .filter(|p| !is_keyword(p.as_rule()))
        .last()
        .unwrap()
}

fn pratt() -> PrattParser<Rule> {
    PrattParser::new()
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
        .op(Op::prefix(Rule::neg))
}

fn expr(p: Pair<Rule>) -> Expr {
    pratt()
        .map_primary(quantity)
        .map_prefix(|op, rhs| Expr {
            span: span(&op).to(rhs.span),
            kind: ExprKind::Neg {
                operand: Box::new(rhs),
            },
        })
        .map_infix(|lhs, op, rhs| {
            let op = match op.as_rule() {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                _ => BinOp::Div,
            };
            Expr {
                span: lhs.span.to(rhs.span),
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
            }
        })
        .parse(p.into_inner())
}

fn quantity(p: Pair<Rule>) -> Expr {
    let sp = span(&p);
    let mut inner = p.into_inner();
    let value = atom(inner.next().unwrap());
    match inner.next() {
        Some(u) => {
            let unit = Unit::from_word(u.as_str()).expect("the grammar only admits known units");
            Expr {
                kind: ExprKind::Quantity {
                    value: Box::new(value),
                    unit,
                    unit_span: span(&u),
                },
                span: sp,
            }
        }
        None => value,
    }
}

fn atom(p: Pair<Rule>) -> Expr {
    let sp = span(&p);
    let kind = match p.as_rule() {
        Rule::number => number(p.as_str()),
        Rule::string => {
            let s = p.as_str();
            ExprKind::Str {
                value: s[1..s.len() - 1].to_string(),
            }
        }
        Rule::ident => ExprKind::Ref { name: ident(p) },
        Rule::call => call_kind(p),
        Rule::same => {
            let u = last_inner(p);
            ExprKind::Same {
                unit: Unit::from_word(u.as_str()).expect("the grammar only admits known units"),
            }
        }
        Rule::paren_or_tuple => {
            let text = p.as_str().trim_end_matches(')').trim_end();
            let trailing_comma = text.ends_with(',');
            let mut items: Vec<Expr> = p.into_inner().map(expr).collect();
            if items.len() == 1 && !trailing_comma {
                ExprKind::Paren {
                    inner: Box::new(items.remove(0)),
                }
            } else {
                ExprKind::Tuple { items }
            }
        }
        Rule::list => ExprKind::List {
            items: p.into_inner().map(expr).collect(),
        },
        r => unreachable!("not an atom: {r:?}"),
    };
    Expr { kind, span: sp }
}

fn call_kind(p: Pair<Rule>) -> ExprKind {
    let mut inner = p.into_inner();
    let name = ident(inner.next().unwrap());
    let args = inner
        .map(|a| {
            let parts: Vec<_> = a.into_inner().collect();
            match parts.len() {
                2 => {
                    let mut it = parts.into_iter();
                    Arg {
                        name: Some(ident(it.next().unwrap())),
                        value: expr(it.next().unwrap()),
                    }
                }
                _ => Arg {
                    name: None,
                    value: expr(parts.into_iter().next().unwrap()),
                },
            }
        })
        .collect();
    ExprKind::Call { name, args }
}

/// `10k` → 10 000, `2M` → 2 000 000, `10%` → 0.1 with `percent` set.
fn number(text: &str) -> ExprKind {
    let mut body = text;
    let percent = body.ends_with('%');
    if percent {
        body = &body[..body.len() - 1];
    }
    let scale = match body.chars().last() {
        Some('k' | 'K') => 1e3,
        Some('M') => 1e6,
        Some('G' | 'B') => 1e9,
        Some('T') => 1e12,
        _ => 1.0,
    };
    if scale != 1.0 {
        body = &body[..body.len() - 1];
    }
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    // The grammar admits only valid float syntax here; overflow gives inf,
    // which the checks reject as out of range.
    let mut value = digits.parse::<f64>().unwrap_or(f64::INFINITY) * scale;
    if percent {
        value /= 100.0;
    }
    ExprKind::Number {
        value,
        percent,
        text: text.to_string(),
    }
}

fn syntax_error(e: pest::error::Error<Rule>) -> Diag {
    use pest::error::{ErrorVariant, InputLocation};
    let at = match e.location {
        InputLocation::Pos(p) => Span::new(p, p),
        InputLocation::Span((s, end)) => Span::new(s, end),
    };
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut words: Vec<&str> = positives.iter().filter_map(|r| rule_word(*r)).collect();
            words.sort_unstable();
            words.dedup();
            words
        }
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let message = match expected.len() {
        0 => "syntax error".to_string(),
        1 => format!("expected {}", expected[0]),
        _ => {
            let (last, rest) = expected.split_last().unwrap();
            format!("expected {} or {}", rest.join(", "), last)
        }
    };
    Diag::error("gs::syntax", message)
        .label(at, "the parser stopped here")
        .help(
            "top-level items are `data NAME { … }`, `model NAME = gpt|ngpt { … }`, `train { … }`, \
         `grow NAME { … }` and `compare NAME = scratch(…)`; see grammar/README.md",
        )
}

fn rule_word(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::EOI => "end of file",
        Rule::data_block | Rule::kw_data => "`data`",
        Rule::model_block | Rule::kw_model => "`model`",
        Rule::train_block | Rule::kw_train => "`train`",
        Rule::grow_block | Rule::grow_stmt | Rule::kw_grow => "`grow`",
        Rule::compare_item | Rule::kw_compare => "`compare`",
        Rule::stage_stmt | Rule::kw_stage => "`stage`",
        Rule::set_stmt | Rule::kw_set => "`set`",
        Rule::setting | Rule::option | Rule::every_stmt | Rule::ident => "a name",
        Rule::expr | Rule::quantity | Rule::number | Rule::paren_or_tuple => "a value",
        Rule::string => "a string",
        Rule::call => "a call",
        Rule::list => "a list",
        Rule::unit => "a unit (steps, tokens, flops, sequences, batches)",
        Rule::grow_to | Rule::kw_to => "`to`",
        Rule::grow_mul | Rule::mul => "`*`",
        Rule::grow_add | Rule::add => "`+`",
        Rule::sub | Rule::neg => "`-`",
        Rule::div => "`/`",
        Rule::at_clause | Rule::kw_at => "`at`",
        Rule::by_clause | Rule::kw_by => "`by`",
        Rule::kw_every => "`every`",
        Rule::kw_on => "`on`",
        Rule::kw_until | Rule::until_budget => "`until`",
        Rule::kw_or => "`or`",
        Rule::cmp_op => "`<=`",
        Rule::kw_same | Rule::same => "`same`",
        Rule::arg => "an argument",
        _ => return None,
    })
}
