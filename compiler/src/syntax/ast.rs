//! The abstract syntax tree of a `.gs` file. Every node carries the byte span
//! it came from, so every later check can point at the user's text.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.start, s.len()).into()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Steps,
    Tokens,
    Flops,
    Sequences,
    Batches,
}

impl Unit {
    pub fn from_word(word: &str) -> Option<Unit> {
        Some(match word {
            "steps" | "step" => Unit::Steps,
            "tokens" | "token" => Unit::Tokens,
            "flops" | "flop" => Unit::Flops,
            "sequences" | "sequence" | "seqs" => Unit::Sequences,
            "batches" => Unit::Batches,
            _ => return None,
        })
    }

    pub fn word(self) -> &'static str {
        match self {
            Unit::Steps => "steps",
            Unit::Tokens => "tokens",
            Unit::Flops => "flops",
            Unit::Sequences => "sequences",
            Unit::Batches => "batches",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExprKind {
    /// `text` is the literal as written (`3e-3`, `10k`), kept for `gsc fmt`.
    Number {
        value: f64,
        percent: bool,
        text: String,
    },
    Str {
        value: String,
    },
    Ref {
        name: Ident,
    },
    Call {
        name: Ident,
        args: Vec<Arg>,
    },
    Tuple {
        items: Vec<Expr>,
    },
    List {
        items: Vec<Expr>,
    },
    /// A parenthesised expression, kept so `gsc fmt` reproduces it.
    Paren {
        inner: Box<Expr>,
    },
    Neg {
        operand: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Quantity {
        value: Box<Expr>,
        unit: Unit,
        unit_span: Span,
    },
    /// `same tokens`: the budget of the schedule being compared against.
    Same {
        unit: Unit,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `eval every 200 steps on 20 batches`
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Every {
    pub what: Ident,
    pub every: Expr,
    pub on: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataBlock {
    pub name: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelBlock {
    pub name: Ident,
    pub arch: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainStmt {
    Setting(Setting),
    Every(Every),
}

impl TrainStmt {
    pub fn span(&self) -> Span {
        match self {
            TrainStmt::Setting(s) => s.span,
            TrainStmt::Every(e) => e.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainBlock {
    pub stmts: Vec<TrainStmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Budget {
    /// `train 1500 steps` / `2M tokens` / `1e15 flops`
    Amount { amount: Expr },
    /// `train until val_loss <= 1.55 or 10k steps`
    Until {
        metric: Ident,
        strict: bool,
        target: Expr,
        cap: Option<Expr>,
        span: Span,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    pub name: Ident,
    pub budget: Budget,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrowKind {
    To,
    Mul,
    Add,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrowStep {
    pub axis: Ident,
    pub kind: GrowKind,
    pub amount: Expr,
    pub at: Option<Expr>,
    /// The method as written: a bare name or a call with arguments.
    pub method: Option<Expr>,
    pub options: Vec<Setting>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchedStmt {
    Stage(Stage),
    Grow(GrowStep),
    Set(Setting),
}

impl SchedStmt {
    pub fn span(&self) -> Span {
        match self {
            SchedStmt::Stage(s) => s.span,
            SchedStmt::Grow(g) => g.span,
            SchedStmt::Set(s) => s.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrowBlock {
    pub model: Ident,
    pub stmts: Vec<SchedStmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompareItem {
    pub name: Ident,
    /// `scratch(final, same tokens)` / `doubling(final, same flops)`
    pub run: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum Item {
    Data(DataBlock),
    Model(ModelBlock),
    Train(TrainBlock),
    Grow(GrowBlock),
    Compare(CompareItem),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Data(b) => b.span,
            Item::Model(b) => b.span,
            Item::Train(b) => b.span,
            Item::Grow(b) => b.span,
            Item::Compare(c) => c.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct File {
    pub items: Vec<Item>,
}
