//! `gsc fmt`: the canonical text of a file. One setting per line, four-space
//! indents, one blank line between items, comments kept where they were
//! (before a statement, or at the end of its line), single blank lines kept.

use super::ast::*;
use super::comments::{self, Comment};

pub fn format(source: &str, file: &File) -> String {
    let mut f = Formatter {
        source,
        comments: comments::scan(source),
        next: 0,
        out: String::new(),
        last_end: 0,
    };
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 {
            f.out.push('\n');
        }
        let limit = file
            .items
            .get(i + 1)
            .map_or(source.len(), |n| n.span().start);
        f.item(item, limit);
    }
    f.leading(source.len(), 0);
    while f.out.ends_with("\n\n") {
        f.out.pop();
    }
    f.out
}

struct Formatter<'a> {
    source: &'a str,
    comments: Vec<Comment>,
    next: usize,
    out: String,
    /// End of the last node written, to see blank lines in the source.
    last_end: usize,
}

const INDENT: &str = "    ";

impl Formatter<'_> {
    /// Writes every unwritten comment that starts before `pos`, each on its own line.
    fn leading(&mut self, pos: usize, depth: usize) {
        while let Some(c) = self
            .comments
            .get(self.next)
            .filter(|c| c.span.start < pos)
            .cloned()
        {
            self.blank_line_before(c.span.start);
            self.line(depth, &c.text);
            self.last_end = c.span.end;
            self.next += 1;
        }
    }

    /// Appends the comment that follows `end` on the same source line, if
    /// any, unless another node starts before it (`limit`): it is that node's.
    fn trailing(&mut self, end: usize, limit: usize) {
        if let Some(c) = self.comments.get(self.next) {
            if c.span.start >= end
                && c.span.start < limit
                && !self.source[end..c.span.start].contains('\n')
            {
                if self.out.ends_with('\n') {
                    self.out.pop();
                }
                self.out.push(' ');
                self.out.push_str(&c.text);
                self.out.push('\n');
                self.last_end = c.span.end;
                self.next += 1;
            }
        }
    }

    /// Keeps one blank line where the source had at least one.
    fn blank_line_before(&mut self, start: usize) {
        let gap = &self.source[self.last_end.min(start)..start];
        let blank = gap.matches('\n').count() >= 2;
        if blank
            && !self.out.is_empty()
            && !self.out.ends_with("\n\n")
            && !self.out.ends_with("{\n")
        {
            self.out.push('\n');
        }
    }

    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// A one-line node: its comments first (including any inside a
    /// multi-line expression, which have nowhere else to go), then the line.
    fn stmt(&mut self, span: Span, depth: usize, text: &str, limit: usize) {
        self.leading(span.end, depth);
        self.blank_line_before(span.start);
        self.line(depth, text);
        self.last_end = span.end;
        self.trailing(span.end, limit);
    }

    /// A block and its statements, each given as its span and canonical text.
    fn block(&mut self, span: Span, header: &str, stmts: Vec<(Span, String)>, limit: usize) {
        self.leading(span.start, 0);
        self.blank_line_before(span.start);
        self.line(0, &format!("{header} {{"));
        let brace = self.source[span.start..span.end]
            .find('{')
            .map_or(span.start, |i| span.start + i + 1);
        self.last_end = brace;
        let first = stmts.first().map_or(span.end, |(s, _)| s.start);
        self.trailing(brace, first);
        for (i, (s, text)) in stmts.iter().enumerate() {
            let next = stmts.get(i + 1).map_or(span.end, |(n, _)| n.start);
            self.stmt(*s, 1, text, next);
        }
        self.leading(span.end, 1);
        self.line(0, "}");
        self.last_end = span.end;
        self.trailing(span.end, limit);
    }

    /// One top-level item; `limit` is where the next one starts.
    fn item(&mut self, item: &Item, limit: usize) {
        let settings = |list: &[Setting]| list.iter().map(|s| (s.span, setting(s))).collect();
        match item {
            Item::Data(b) => self.block(
                b.span,
                &format!("data {}", b.name.name),
                settings(&b.settings),
                limit,
            ),
            Item::Model(b) => {
                let header = format!("model {} = {}", b.name.name, b.arch.name);
                self.block(b.span, &header, settings(&b.settings), limit)
            }
            Item::Train(b) => {
                let stmts = b
                    .stmts
                    .iter()
                    .map(|s| {
                        let text = match s {
                            TrainStmt::Setting(s) => setting(s),
                            TrainStmt::Every(e) => every(e),
                        };
                        (s.span(), text)
                    })
                    .collect();
                self.block(b.span, "train", stmts, limit)
            }
            Item::Grow(b) => {
                let stmts = b.stmts.iter().map(|s| (s.span(), sched_stmt(s))).collect();
                self.block(b.span, &format!("grow {}", b.model.name), stmts, limit)
            }
            Item::Compare(c) => self.stmt(
                c.span,
                0,
                &format!("compare {} = {}", c.name.name, expr(&c.run)),
                limit,
            ),
        }
    }
}

fn setting(s: &Setting) -> String {
    format!("{} = {}", s.key.name, expr(&s.value))
}

fn every(e: &Every) -> String {
    let mut text = format!("{} every {}", e.what.name, expr(&e.every));
    if let Some(on) = &e.on {
        text.push_str(&format!(" on {}", expr(on)));
    }
    text
}

fn sched_stmt(s: &SchedStmt) -> String {
    match s {
        SchedStmt::Stage(st) => {
            let budget = match &st.budget {
                Budget::Amount { amount } => expr(amount),
                Budget::Until {
                    metric,
                    strict,
                    target,
                    cap,
                    ..
                } => {
                    let op = if *strict { "<" } else { "<=" };
                    let mut t = format!("until {} {op} {}", metric.name, expr(target));
                    if let Some(cap) = cap {
                        t.push_str(&format!(" or {}", expr(cap)));
                    }
                    t
                }
            };
            format!("stage {}: train {budget}", st.name.name)
        }
        SchedStmt::Grow(g) => {
            let op = match g.kind {
                GrowKind::To => "to",
                GrowKind::Mul => "*",
                GrowKind::Add => "+",
            };
            let mut t = format!("grow {} {op} {}", g.axis.name, expr(&g.amount));
            if let Some(at) = &g.at {
                t.push_str(&format!(" at {}", expr(at)));
            }
            if let Some(m) = &g.method {
                t.push_str(&format!(" by {}", expr(m)));
            }
            for o in &g.options {
                t.push_str(&format!(", {}", setting(o)));
            }
            t
        }
        SchedStmt::Set(s) => format!("set {}", setting(s)),
    }
}

/// An expression as canonical text: operators spaced, parentheses as written.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Str { value } => format!("\"{value}\""),
        ExprKind::Ref { name } => name.name.clone(),
        ExprKind::Call { name, args } => {
            let args: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{} = {}", n.name, expr(&a.value)),
                    None => expr(&a.value),
                })
                .collect();
            format!("{}({})", name.name, args.join(", "))
        }
        ExprKind::Tuple { items } => {
            let inner: Vec<String> = items.iter().map(expr).collect();
            if items.len() == 1 {
                format!("({},)", inner[0])
            } else {
                format!("({})", inner.join(", "))
            }
        }
        ExprKind::List { items } => format!(
            "[{}]",
            items.iter().map(expr).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Paren { inner } => format!("({})", expr(inner)),
        ExprKind::Neg { operand } => format!("-{}", expr(operand)),
        ExprKind::Binary { op, lhs, rhs } => format!("{} {} {}", expr(lhs), op.symbol(), expr(rhs)),
        ExprKind::Quantity { value, unit, .. } => {
            format!("{} {}", expr(value), unit_word(value, *unit))
        }
        ExprKind::Same { unit } => format!("same {}", unit.word()),
    }
}

fn unit_word(value: &Expr, unit: Unit) -> &'static str {
    let one = matches!(&value.kind, ExprKind::Number { text, .. } if text == "1");
    match (unit, one) {
        (Unit::Steps, true) => "step",
        (Unit::Tokens, true) => "token",
        (Unit::Sequences, true) => "sequence",
        (u, _) => u.word(),
    }
}
