//! Evaluating expressions to numbers, names and calls, with a diagnostic for
//! every way a value can be of the wrong kind.

use crate::diag::{suggestion, Diag};
use crate::syntax::{format::expr as show, Arg, BinOp, Expr, ExprKind, Span, Unit};

/// A number with the unit it was written with (`1500 steps`), if any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantity {
    pub value: f64,
    pub unit: Option<Unit>,
    pub percent: bool,
}

/// Names a numeric expression may refer to (the model's dimensions).
pub trait Env {
    fn lookup(&mut self, name: &str, span: Span) -> Result<f64, Diag>;
    fn names(&self) -> Vec<&'static str>;
}

/// An environment with no names: literal arithmetic only.
pub struct NoNames;

impl Env for NoNames {
    fn lookup(&mut self, name: &str, span: Span) -> Result<f64, Diag> {
        Err(Diag::error("gs::unknown-name", format!("`{name}` is not a value here"))
            .label(span, "not a number")
            .help("only model settings such as `4 * d_model` can be referred to by name, and only inside a model or a grow step"))
    }

    fn names(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

pub fn quantity(e: &Expr, env: &mut dyn Env) -> Result<Quantity, Diag> {
    let q = match &e.kind {
        ExprKind::Number { value, percent, .. } => Quantity {
            value: *value,
            unit: None,
            percent: *percent,
        },
        ExprKind::Ref { name } => Quantity {
            value: env.lookup(&name.name, name.span)?,
            unit: None,
            percent: false,
        },
        ExprKind::Paren { inner } => quantity(inner, env)?,
        ExprKind::Neg { operand } => {
            let q = quantity(operand, env)?;
            Quantity {
                value: -q.value,
                ..q
            }
        }
        ExprKind::Quantity {
            value,
            unit,
            unit_span,
        } => {
            let q = quantity(value, env)?;
            if let Some(inner) = q.unit {
                return Err(Diag::error("gs::unit", "a value has two units")
                    .label(*unit_span, format!("second unit `{}`", unit.word()))
                    .help(format!(
                        "remove one of `{}` and `{}`",
                        inner.word(),
                        unit.word()
                    )));
            }
            if q.percent {
                return Err(Diag::error("gs::unit", "a percentage cannot have a unit")
                    .label(e.span, "percent and a unit")
                    .help(format!("write a count, e.g. `100 {}`", unit.word())));
            }
            Quantity {
                unit: Some(*unit),
                ..q
            }
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let a = quantity(lhs, env)?;
            let b = quantity(rhs, env)?;
            let unit = match (a.unit, b.unit, op) {
                (Some(x), Some(y), BinOp::Add | BinOp::Sub) if x == y => Some(x),
                (Some(_), Some(_), _) => {
                    return Err(Diag::error("gs::unit", "units do not combine this way")
                        .label(e.span, "both sides have units")
                        .help("only quantities of the same unit can be added or subtracted; scale a quantity by a plain number"))
                }
                (Some(x), None, BinOp::Add | BinOp::Sub) | (None, Some(x), BinOp::Add | BinOp::Sub) => {
                    return Err(Diag::error("gs::unit", format!("cannot add a plain number to a quantity in {}", x.word()))
                        .label(e.span, "mixed units")
                        .help(format!("give both sides the unit `{}`", x.word())))
                }
                (x, y, _) => x.or(y),
            };
            let value = match op {
                BinOp::Add => a.value + b.value,
                BinOp::Sub => a.value - b.value,
                BinOp::Mul => a.value * b.value,
                BinOp::Div => {
                    if b.value == 0.0 {
                        return Err(Diag::error("gs::value", "division by zero")
                            .label(rhs.span, "this is zero")
                            .help("divide by a number other than zero"));
                    }
                    a.value / b.value
                }
            };
            Quantity {
                value,
                unit,
                percent: a.percent || b.percent,
            }
        }
        ExprKind::Str { value } if value.trim().parse::<f64>().is_ok() => {
            return Err(not_a(e, "a number").help(format!("remove the quotes: `{}`", value.trim())))
        }
        _ => return Err(not_a(e, "a number").help("write a number, e.g. `256`, `3e-3` or `10k`")),
    };
    if !q.value.is_finite() {
        return Err(Diag::error("gs::value", "number out of range").label(e.span, "too large"));
    }
    Ok(q)
}

/// A plain number: no unit allowed.
pub fn number(e: &Expr, env: &mut dyn Env) -> Result<f64, Diag> {
    let q = quantity(e, env)?;
    if let Some(u) = q.unit {
        return Err(Diag::error(
            "gs::unit",
            format!("this value takes no unit, found `{}`", u.word()),
        )
        .label(e.span, "unexpected unit")
        .help(format!("write just the number: `{}`", show_number(q.value))));
    }
    Ok(q.value)
}

/// A number that may be written with `unit` or bare.
pub fn number_in(e: &Expr, env: &mut dyn Env, unit: Unit) -> Result<f64, Diag> {
    let q = quantity(e, env)?;
    match q.unit {
        Some(u) if u != unit => Err(Diag::error(
            "gs::unit",
            format!("expected {}, found {}", unit.word(), u.word()),
        )
        .label(e.span, format!("in {}", u.word()))
        .help(format!(
            "write it in {}, e.g. `{} {}`",
            unit.word(),
            show_number(q.value),
            unit.word()
        ))),
        _ => Ok(q.value),
    }
}

pub fn to_count(v: f64, span: Span, what: &str) -> Result<usize, Diag> {
    if v.fract() != 0.0 {
        let (lo, hi) = (v.floor(), v.ceil());
        return Err(Diag::error(
            "gs::not-integer",
            format!(
                "{what} must be a whole number, but this is {}",
                show_number(v)
            ),
        )
        .label(span, format!("= {}", show_number(v)))
        .help(format!(
            "the nearest whole numbers are {} and {}",
            show_number(lo),
            show_number(hi)
        )));
    }
    if v < 1.0 {
        return Err(Diag::error(
            "gs::value",
            format!("{what} must be at least 1, but this is {}", show_number(v)),
        )
        .label(span, format!("= {}", show_number(v)))
        .help("write a whole number of at least 1"));
    }
    if v > 1e15 {
        return Err(Diag::error("gs::value", format!("{what} is too large"))
            .label(span, format!("= {}", show_number(v))));
    }
    Ok(v as usize)
}

/// A bare name from a fixed set (`gelu`, `swiglu`), with a typo suggestion.
pub fn choice<'a>(e: &Expr, allowed: &[&'a str], what: &str) -> Result<&'a str, Diag> {
    let (name, span) = match &e.kind {
        ExprKind::Ref { name } => (name.name.as_str(), name.span),
        ExprKind::Call { name, .. } => (name.name.as_str(), name.span),
        _ => {
            return Err(
                not_a(e, &format!("{what} ({})", list(allowed))).help(format!(
                    "write one of {}{}",
                    list(allowed),
                    if matches!(e.kind, ExprKind::Str { .. }) {
                        ", without quotes"
                    } else {
                        ""
                    }
                )),
            )
        }
    };
    allowed
        .iter()
        .find(|a| **a == name)
        .copied()
        .ok_or_else(|| {
            Diag::error("gs::unknown-name", format!("unknown {what} `{name}`"))
                .label(span, format!("not a known {what}"))
                .help(suggestion(name, allowed))
        })
}

pub fn boolean(e: &Expr) -> Result<bool, Diag> {
    Ok(choice(e, &["true", "false"], "boolean")? == "true")
}

pub fn string(e: &Expr) -> Result<&str, Diag> {
    match &e.kind {
        ExprKind::Str { value } => Ok(value),
        _ => Err(not_a(e, "a string in double quotes")),
    }
}

/// The arguments of a call, checked against the names it takes.
pub struct Args<'a> {
    pub callee: &'a str,
    /// The name of the call alone, for "unknown …" labels.
    pub callee_span: Span,
    pub span: Span,
    named: Vec<(&'a str, Span, &'a Expr)>,
    pub positional: Vec<&'a Expr>,
}

impl<'a> Args<'a> {
    /// A bare name is a call with no arguments.
    pub fn of(e: &'a Expr, allowed: &[&str], diags: &mut Vec<Diag>) -> Option<Args<'a>> {
        let (callee, callee_span, args): (&str, Span, &[Arg]) = match &e.kind {
            ExprKind::Ref { name } => (&name.name, name.span, &[]),
            ExprKind::Call { name, args } => (&name.name, name.span, args),
            _ => {
                diags.push(not_a(e, "a name or a call"));
                return None;
            }
        };
        let mut out = Args {
            callee,
            callee_span,
            span: e.span,
            named: Vec::new(),
            positional: Vec::new(),
        };
        for a in args {
            match &a.name {
                Some(n) if !allowed.contains(&n.name.as_str()) => diags.push(
                    Diag::error(
                        "gs::unknown-key",
                        format!("`{callee}` has no argument `{}`", n.name),
                    )
                    .label(n.span, "unknown argument")
                    .help(suggestion(&n.name, allowed)),
                ),
                Some(n) if out.named.iter().any(|(k, ..)| *k == n.name) => diags.push(
                    Diag::error(
                        "gs::duplicate-key",
                        format!("argument `{}` is given twice", n.name),
                    )
                    .label(n.span, "second time")
                    .help("remove one of them"),
                ),
                Some(n) => out.named.push((&n.name, n.span, &a.value)),
                None => out.positional.push(&a.value),
            }
        }
        Some(out)
    }

    pub fn get(&self, name: &str) -> Option<&'a Expr> {
        self.named
            .iter()
            .find(|(k, ..)| *k == name)
            .map(|(_, _, e)| *e)
    }

    /// Reports positional arguments beyond the first `n`.
    pub fn at_most_positional(&self, n: usize, diags: &mut Vec<Diag>) {
        for extra in self.positional.iter().skip(n) {
            diags.push(
                Diag::error(
                    "gs::argument",
                    format!(
                        "`{}` takes {n} positional argument{}",
                        self.callee,
                        if n == 1 { "" } else { "s" }
                    ),
                )
                .label(extra.span, "extra argument")
                .help("name the argument, e.g. `lr = 1e-3`"),
            );
        }
    }
}

pub fn not_a(e: &Expr, expected: &str) -> Diag {
    let found = match &e.kind {
        ExprKind::Number { .. }
        | ExprKind::Binary { .. }
        | ExprKind::Neg { .. }
        | ExprKind::Paren { .. } => "a number",
        ExprKind::Quantity { .. } => "a quantity",
        ExprKind::Str { .. } => "a string",
        ExprKind::Ref { .. } => "a name",
        ExprKind::Call { .. } => "a call",
        ExprKind::Tuple { .. } => "a tuple",
        ExprKind::List { .. } => "a list",
        ExprKind::Same { .. } => "`same …`",
    };
    Diag::error("gs::type", format!("expected {expected}, found {found}"))
        .label(e.span, format!("this is {found}: `{}`", show(e)))
}

pub fn list(allowed: &[&str]) -> String {
    allowed
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Numbers as a person writes them: no `.0` on whole numbers.
pub fn show_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}
