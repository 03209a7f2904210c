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
    too_deep(source)?;
    let mut pairs =
        GsParser::parse(Rule::file, source).map_err(|e| syntax_error(e, source, Rule::file))?;
    too_long(&pairs)?;
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
    too_deep(&padded)?;
    let mut pairs = GsParser::parse(Rule::override_value, &padded)
        .map_err(|e| syntax_error(e, &padded, Rule::override_value))?;
    too_long(&pairs)?;
    let value = pairs
        .next()
        .expect("the override rule always yields one pair");
    let e = value
        .into_inner()
        .find(|p| p.as_rule() == Rule::expr)
        .expect("an override holds an expression");
    Ok(expr(e))
}

/// Every pass after parsing (evaluation, formatting, even dropping the tree)
/// recurses on nested and chained expressions; past these limits the stack
/// would overflow. No real file comes near them.
const MAX_DEPTH: usize = 64;
const MAX_OPERATORS: usize = 256;

fn too_deep(source: &str) -> Result<(), Diag> {
    let mut depth = 0usize;
    for (i, t) in Lexer::new(source) {
        match t {
            Tok::Open(_) => depth += 1,
            Tok::Close(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return Err(Diag::error("gs::syntax", "brackets nested too deeply")
                .label(
                    Span::new(i, i + 1),
                    format!("more than {MAX_DEPTH} levels deep"),
                )
                .help("simplify the expression: compute the value and write the number"));
        }
    }
    Ok(())
}

fn too_long(pairs: &pest::iterators::Pairs<Rule>) -> Result<(), Diag> {
    for p in pairs
        .clone()
        .flatten()
        .filter(|p| p.as_rule() == Rule::expr)
    {
        let ops = p
            .clone()
            .into_inner()
            .filter(|q| {
                matches!(
                    q.as_rule(),
                    Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::neg
                )
            })
            .count();
        if ops > MAX_OPERATORS {
            return Err(Diag::error("gs::syntax", "expression too long")
                .label(span(&p), format!("{ops} operators"))
                .help(format!(
                    "an expression has at most {MAX_OPERATORS} operators: compute the value and write the number"
                )));
        }
    }
    Ok(())
}

fn span(p: &Pair<Rule>) -> Span {
    Span::new(p.as_span().start(), content_end(p))
}

/// Where a pair's text ends, without the whitespace and comments that pest's
/// implicit `~` consumes before an optional part that then matches nothing
/// (`grow layers + 1` followed by no `at`, `by` or option).
fn content_end(p: &Pair<Rule>) -> usize {
    let text = p.as_str();
    if text.trim_end().len() == text.len() {
        return p.as_span().end();
    }
    match p.clone().into_inner().last() {
        Some(last) => content_end(&last),
        None => p.as_span().start() + text.trim_end().len(),
    }
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

fn syntax_error(e: pest::error::Error<Rule>, source: &str, rule: Rule) -> Diag {
    use pest::error::InputLocation;
    let pest_at = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    // An unclosed `{`, `(`, `"` makes pest fail far from the cause: say what is unclosed.
    if let Some(d) = delimiter_error(source, pest_at) {
        return d;
    }
    // Re-parse with pest's detailed attempts, which also know the literal
    // tokens (`=`, `}`, `:`) that the rule names alone cannot say.
    pest::set_error_detail(true);
    let attempts = GsParser::parse(rule, source)
        .err()
        .and_then(|e| e.parse_attempts());
    let (at, mut expected) = match &attempts {
        Some(a) if a.max_position >= pest_at => {
            let mut words: Vec<String> = a
                .call_stacks()
                .iter()
                .filter_map(|c| c.deepest.get_rule().and_then(|r| rule_word(*r)))
                .map(str::to_string)
                .collect();
            for t in a.expected_tokens() {
                let token = t.to_string();
                match token.as_str() {
                    "+" | "-" | "*" | "×" | "/" => words.push("an operator".into()),
                    "=" | "{" | "}" | "(" | ")" | "[" | "]" | "," | ":" | "<=" | "<" => {
                        words.push(format!("`{token}`"))
                    }
                    _ => {}
                }
            }
            (a.max_position, words)
        }
        _ => (pest_at, Vec::new()),
    };
    if expected.is_empty() {
        if let pest::error::ErrorVariant::ParsingError { positives, .. } = &e.variant {
            expected = positives
                .iter()
                .filter_map(|r| rule_word(*r))
                .map(str::to_string)
                .collect();
        }
    }
    // A keyword where a name belongs: pest's attempts point past it.
    let (word, word_span) = token_at(source, pest_at);
    let word = word.trim_matches('`');
    if expected.iter().any(|w| w == "a name")
        && [
            "data", "model", "grow", "compare", "stage", "until", "same", "set",
        ]
        .contains(&word)
    {
        return Diag::error(
            "gs::syntax",
            format!("`{word}` is a keyword and cannot be a name"),
        )
        .label(word_span, "a keyword")
        .help(format!(
            "choose another name, e.g. `{word}_1`; the keywords are `data`, `model`, `grow`, \
                 `compare`, `stage`, `until`, `same` and `set`"
        ));
    }
    let at = if source[at.min(source.len())..].starts_with([' ', '\t']) {
        pest_at
    } else {
        at
    };
    let (found, found_span) = token_at(source, at);
    // A value where one cannot go: "a value" then only means "a unit" after a number.
    let found_value =
        found.starts_with('`') && found[1..].starts_with(|c: char| c.is_ascii_digit() || c == '"');
    let mut expected: Vec<String> = expected
        .into_iter()
        .map(|w| {
            if found_value && w == "a value" {
                rule_word(Rule::unit).unwrap_or_default().to_string()
            } else {
                w
            }
        })
        .map(|w| match w.as_str() {
            "`*`" | "`+`" | "`-`" | "`/`" => "an operator".to_string(),
            _ => w,
        })
        .collect();
    expected.sort_unstable();
    expected.dedup();
    // A value may begin with `(`, `[` or `-`: "a value" says all of it.
    if expected.iter().any(|w| w == "a value") {
        expected.retain(|w| !matches!(w.as_str(), "`(`" | "`[`" | "an operator"));
    }
    // `name value` lacks its `=`, `stage NAME train` its `:`, `scratch base`
    // its `(`, whatever else could also follow.
    for punct in ["`=`", "`:`", "`(`"] {
        if expected.iter().any(|w| w == punct) {
            expected.retain(|w| w == punct);
        }
    }
    let message = match expected.len() {
        0 => format!("unexpected {found}"),
        1 => format!("expected {}, found {found}", expected[0]),
        _ => {
            let (last, rest) = expected.split_last().unwrap();
            format!("expected {} or {last}, found {found}", rest.join(", "))
        }
    };
    let label = match expected.len() {
        0 => "unexpected here".to_string(),
        _ => format!("unexpected {found}"),
    };
    let depth = depth_at(source, at);
    let help = if let Some(h) = statement_help(source, at, depth) {
        h.to_string()
    } else if expected.iter().any(|w| w == "`=`") {
        "a setting is written `name = value`, e.g. `d_model = 256`".to_string()
    } else if rule == Rule::override_value {
        "write a single value, e.g. `--set train.batch=32`".to_string()
    } else if depth > 0 {
        "inside a block, write one setting or statement per line; see grammar/README.md".to_string()
    } else {
        "top-level items are `data NAME { … }`, `model NAME = gpt|ngpt { … }`, `train { … }`, \
         `grow NAME { … }` and `compare NAME = scratch(…)`; see grammar/README.md"
            .to_string()
    };
    Diag::error("gs::syntax", message)
        .label(found_span, label)
        .help(help)
}

/// How the statement the parser stopped in is written, from the last keyword
/// before `at` on its line (after the last `{`, so a setting inside a one-line
/// block is not taken for the block).
fn statement_help(source: &str, at: usize, depth: usize) -> Option<&'static str> {
    // At the start of a line, the statement is the one the line before left unfinished.
    let before = source[..at.min(source.len())].trim_end();
    let line = &before[before.rfind('\n').map_or(0, |k| k + 1)..];
    let line = line.rsplit('{').next().unwrap_or(line);
    let keyword = line
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| {
            matches!(
                *w,
                "data"
                    | "model"
                    | "grow"
                    | "stage"
                    | "compare"
                    | "set"
                    | "eval"
                    | "checkpoint"
                    | "log"
            )
        })?;
    Some(match keyword {
        "data" => "a data block is written `data NAME { text = \"file.txt\" }`",
        "model" => "a model is written `model NAME = gpt { … }` (or `= ngpt`)",
        "grow" if depth == 0 => {
            "a schedule is written `grow MODEL { stage main: train 1000 steps }`"
        }
        "grow" => {
            "a growth step is written `grow AXIS to N`, `grow AXIS * F` or `grow AXIS + N`, \
                   then optionally `at [...]`, `by METHOD` and `, OPTION = VALUE`"
        }
        "stage" => {
            "a stage is written `stage NAME: train 1000 steps` (or `2M tokens`, `1e15 flops`, \
                    `until val_loss <= 1.5 or 10k steps`)"
        }
        "compare" => {
            "a comparison is written `compare NAME = scratch(MODEL, same tokens)` \
                      (or `doubling(…)`)"
        }
        "set" => "`set` is written `set batch = 8 sequences` or `set lr = 1e-3`",
        _ => {
            "a cadence is written `eval every 200 steps on 20 batches`, \
              `checkpoint every 1000 steps` or `log every 10 steps`"
        }
    })
}

/// What the parser found at `at`, for "expected …, found …".
fn token_at(source: &str, at: usize) -> (String, Span) {
    let rest = &source[at.min(source.len())..];
    let Some(c) = rest.chars().next() else {
        return ("the end of the file".to_string(), Span::new(at, at));
    };
    let len = if c.is_ascii_alphanumeric() || c == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%')))
            .unwrap_or(rest.len())
    } else if c == '"' {
        rest[1..].find(['"', '\n']).map_or(rest.len(), |k| k + 2)
    } else {
        c.len_utf8()
    };
    let text = &rest[..len];
    let shown = if c == '\n' || c == '\r' {
        "the end of the line".to_string()
    } else {
        format!("`{}`", text.trim_end())
    };
    (shown, Span::new(at, at + len))
}

/// How many blocks `{ … }` are open at `at` (strings and comments skipped).
fn depth_at(source: &str, at: usize) -> usize {
    let mut depth = 0usize;
    for (i, c) in Lexer::new(source) {
        if i >= at {
            break;
        }
        match c {
            Tok::Open(b'{') => depth += 1,
            Tok::Close(b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Tok {
    Open(u8),
    Close(u8),
    /// The first word of a line that starts a top-level item.
    Item,
    /// A string with no closing quote on its line (its end).
    BadString(usize),
    BadComment,
}

/// Just enough of a lexer to match delimiters: skips strings and comments.
struct Lexer<'a> {
    src: &'a str,
    i: usize,
    line_start: bool,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            i: 0,
            line_start: true,
        }
    }

    /// A top-level item keyword starts at `i` (`grow` only with a `{` on its line,
    /// since `grow` is also a statement inside a grow block).
    fn item_at(&self, i: usize) -> bool {
        let rest = &self.src[i..];
        let word_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
        let line = line.split("//").next().unwrap_or(line);
        match &rest[..word_end] {
            "data" | "model" | "compare" => true,
            "train" | "grow" => line.trim_end().ends_with('{'),
            _ => false,
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = (usize, Tok);

    fn next(&mut self) -> Option<(usize, Tok)> {
        let b = self.src.as_bytes();
        while self.i < b.len() {
            let i = self.i;
            let c = b[i];
            let at_line_start = self.line_start;
            if c == b'\n' {
                self.line_start = true;
            } else if !c.is_ascii_whitespace() {
                self.line_start = false;
            }
            self.i += 1;
            match c {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    self.i = self.src[i..].find('\n').map_or(b.len(), |k| i + k);
                }
                b'/' if b.get(i + 1) == Some(&b'*') => match self.src[i + 2..].find("*/") {
                    Some(k) => self.i = i + 2 + k + 2,
                    None => {
                        self.i = b.len();
                        return Some((i, Tok::BadComment));
                    }
                },
                b'"' => match self.src[i + 1..].find(['"', '\n']).map(|k| i + 1 + k) {
                    Some(end) if b[end] == b'"' => self.i = end + 1,
                    end => {
                        let end = end.unwrap_or(b.len());
                        self.i = end;
                        return Some((i, Tok::BadString(end)));
                    }
                },
                b'{' | b'(' | b'[' => return Some((i, Tok::Open(c))),
                b'}' | b')' | b']' => return Some((i, Tok::Close(c))),
                _ if at_line_start && c.is_ascii_alphabetic() && self.item_at(i) => {
                    return Some((i, Tok::Item))
                }
                _ => {}
            }
        }
        None
    }
}

/// An unterminated string or comment, or a bracket that is never closed, when
/// it explains why the parser stopped at `pest_at`.
fn delimiter_error(source: &str, pest_at: usize) -> Option<Diag> {
    let mut open: Vec<(u8, usize)> = Vec::new();
    let closer = |o: u8| match o {
        b'{' => '}',
        b'(' => ')',
        _ => ']',
    };
    let unclosed = |o: u8, at: usize, here: Span, here_label: &str| {
        let what = match o {
            b'{' => {
                let line_start = source[..at].rfind('\n').map_or(0, |k| k + 1);
                let word = source[line_start..at]
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                match word {
                    "data" | "model" | "train" | "grow" => format!("the `{word}` block"),
                    _ => "a block".to_string(),
                }
            }
            b'(' => {
                let name_start = source[..at]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |k| k + 1);
                match &source[name_start..at] {
                    "" => "a parenthesis".to_string(),
                    name => format!("the call `{name}(…)`"),
                }
            }
            _ => "a list".to_string(),
        };
        Diag::error(
            "gs::syntax",
            format!("missing `{}`: {what} is never closed", closer(o)),
        )
        .label(here, here_label)
        .label(
            Span::new(at, at + 1),
            format!("this `{}` is never closed", o as char),
        )
        .help(format!("add `{}` where {what} ends", closer(o)))
    };
    for (i, t) in Lexer::new(source) {
        match t {
            Tok::BadString(end) if pest_at <= i => {
                return Some(
                    Diag::error("gs::syntax", "unterminated string")
                        .label(Span::new(i, end), "this string has no closing `\"`")
                        .help("close it with `\"` on the same line: a string cannot span lines"),
                )
            }
            Tok::BadComment if pest_at >= i => {
                return Some(
                    Diag::error("gs::syntax", "unterminated comment")
                        .label(Span::new(i, i + 2), "this `/*` is never closed")
                        .help("close it with `*/`"),
                )
            }
            Tok::BadString(_) | Tok::BadComment => return None,
            Tok::Open(c) => open.push((c, i)),
            Tok::Close(c) => match open.pop() {
                Some((o, _)) if closer(o) == c as char => {}
                Some((o, at)) if pest_at >= at => {
                    return Some(unclosed(
                        o,
                        at,
                        Span::new(i, i + 1),
                        &format!("`{}` found first", c as char),
                    ))
                }
                None if pest_at == i => {
                    return Some(
                        Diag::error("gs::syntax", format!("unexpected `{}`", c as char))
                            .label(Span::new(i, i + 1), "nothing is open here")
                            .help("remove it, or look for a missing opening bracket above"),
                    )
                }
                _ => return None,
            },
            Tok::Item => {
                if let Some(&(o, at)) = open.first() {
                    if pest_at >= at && pest_at <= i {
                        let word_end = source[i..]
                            .find(|c: char| !c.is_ascii_alphanumeric())
                            .map_or(source.len(), |k| i + k);
                        return Some(unclosed(
                            o,
                            at,
                            Span::new(i, word_end),
                            "expected `}` before the next item",
                        ));
                    }
                    return None;
                }
            }
        }
    }
    let &(o, at) = open.last()?;
    if pest_at < at {
        return None;
    }
    let end = source.trim_end().len();
    Some(unclosed(o, at, Span::new(end, end), "the file ends here"))
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
