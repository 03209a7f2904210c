//! Tabulation of transcendental functions of loop indices only.
//!
//! RoPE's `cos(pos · e^{−k·c})` and `sin(…)` depend on two loop indices, but
//! sit in the innermost loop of a five-deep nest, so they would be
//! recomputed for every batch row, head and half: about 128 times each.
//! Any maximal subexpression that reads no buffer and no non-index local,
//! contains a transcendental function, and ranges over at most
//! [`MAX_TABLE`] index combinations is evaluated here once, in f64, at
//! compile time, and replaced by a load from a constant table indexed
//! affinely by those indices (which the JIT then vectorises like any load).

use crate::ir::{Affine, BinaryFn, BufId, Expr, Index, LoopKernel, Stmt, UnaryFn, Var};

/// Largest table, in elements (256 KiB).
const MAX_TABLE: usize = 1 << 16;

/// Constant tables made for one program; table `t` is buffer
/// `first + t` in the JIT's pointer table.
pub struct Tables {
    pub first: usize,
    pub data: Vec<Vec<f32>>,
}

struct Walk<'a> {
    tables: &'a mut Tables,
    /// Extent of each index in scope.
    extents: Vec<Option<usize>>,
    /// For locals defined by an index-only `let`, its expression (with
    /// earlier such locals substituted).
    pure: Vec<Option<Expr>>,
}

/// Rewrites `k` in place; returns whether anything was tabulated.
pub fn tabulate(k: &mut LoopKernel, tables: &mut Tables) -> bool {
    let before = tables.data.len();
    let mut w = Walk {
        tables,
        extents: vec![None; k.num_vars as usize],
        pure: vec![None; k.num_locals as usize],
    };
    w.stmts(&mut k.body);
    w.tables.data.len() > before
}

/// The expression with index-only locals substituted, if it reads only
/// constants, loop indices and such locals.
fn substituted(e: &Expr, pure: &[Option<Expr>]) -> Option<Expr> {
    Some(match e {
        Expr::Const(_) | Expr::Var(_) => e.clone(),
        Expr::Local(l) => pure.get(l.0 as usize)?.clone()?,
        Expr::Unary(f, a) => Expr::Unary(*f, Box::new(substituted(a, pure)?)),
        Expr::Binary(f, a, b) => Expr::Binary(
            *f,
            Box::new(substituted(a, pure)?),
            Box::new(substituted(b, pure)?),
        ),
        Expr::Load { .. } | Expr::SelectEq { .. } => return None,
    })
}

fn has_transcendental(e: &Expr) -> bool {
    match e {
        Expr::Unary(f, a) => !matches!(f, UnaryFn::Neg) || has_transcendental(a),
        Expr::Binary(_, a, b) => has_transcendental(a) || has_transcendental(b),
        _ => false,
    }
}

fn vars_of(e: &Expr, out: &mut Vec<Var>) {
    match e {
        Expr::Var(v) if !out.contains(v) => out.push(*v),
        Expr::Unary(_, a) => vars_of(a, out),
        Expr::Binary(_, a, b) => {
            vars_of(a, out);
            vars_of(b, out);
        }
        _ => {}
    }
}

fn eval(e: &Expr, vals: &[i64]) -> f64 {
    match e {
        Expr::Const(c) => *c,
        Expr::Var(v) => vals[v.0 as usize] as f64,
        Expr::Unary(f, a) => {
            let x = eval(a, vals);
            match f {
                UnaryFn::Neg => -x,
                UnaryFn::Exp => x.exp(),
                UnaryFn::Log => x.ln(),
                UnaryFn::Sqrt => x.sqrt(),
                UnaryFn::Tanh => x.tanh(),
                UnaryFn::Sin => x.sin(),
                UnaryFn::Cos => x.cos(),
                UnaryFn::Floor => x.floor(),
            }
        }
        Expr::Binary(f, a, b) => {
            let (x, y) = (eval(a, vals), eval(b, vals));
            match f {
                BinaryFn::Add => x + y,
                BinaryFn::Sub => x - y,
                BinaryFn::Mul => x * y,
                BinaryFn::Div => x / y,
                BinaryFn::Max => x.max(y),
                BinaryFn::Min => x.min(y),
            }
        }
        // substituted() admits nothing else.
        _ => f64::NAN,
    }
}

impl Walk<'_> {
    fn stmts(&mut self, body: &mut [Stmt]) {
        for s in body {
            match s {
                Stmt::For { var, extent, body } => {
                    self.bind(*var, Some(*extent));
                    self.stmts(body);
                    self.bind(*var, None);
                }
                Stmt::Reduce {
                    var,
                    extent,
                    body,
                    value,
                    ..
                } => {
                    self.bind(*var, Some(*extent));
                    self.stmts(body);
                    self.expr(value);
                    self.bind(*var, None);
                }
                Stmt::Let { local, value } => {
                    let pure = substituted(value, &self.pure);
                    self.expr(value);
                    if let Some(slot) = self.pure.get_mut(local.0 as usize) {
                        *slot = pure;
                    }
                }
                Stmt::Store { value, .. } => self.expr(value),
            }
        }
    }

    fn bind(&mut self, v: Var, extent: Option<usize>) {
        if let Some(slot) = self.extents.get_mut(v.0 as usize) {
            *slot = extent;
        }
    }

    /// Replaces maximal tabulable subexpressions of `e`.
    fn expr(&mut self, e: &mut Expr) {
        if let Some(t) = self.table_for(e) {
            *e = t;
            return;
        }
        match e {
            Expr::Unary(_, a) => self.expr(a),
            Expr::Binary(_, a, b) => {
                self.expr(a);
                self.expr(b);
            }
            Expr::SelectEq {
                then, otherwise, ..
            } => {
                self.expr(then);
                self.expr(otherwise);
            }
            _ => {}
        }
    }

    fn table_for(&mut self, e: &Expr) -> Option<Expr> {
        if !matches!(e, Expr::Unary(..) | Expr::Binary(..) | Expr::Local(_)) {
            return None;
        }
        let full = substituted(e, &self.pure)?;
        if !has_transcendental(&full) {
            return None;
        }
        let mut vars = vec![];
        vars_of(&full, &mut vars);
        vars.sort();
        let mut extents = vec![];
        for v in &vars {
            extents.push(self.extents.get(v.0 as usize).copied().flatten()?);
        }
        let size = extents.iter().try_fold(1usize, |a, &e| a.checked_mul(e))?;
        if size == 0 || size > MAX_TABLE {
            return None;
        }
        // Row-major over the indices in id order.
        let mut strides = vec![1i64; vars.len()];
        for i in (0..vars.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * extents[i + 1] as i64;
        }
        let width = vars.iter().map(|v| v.0 as usize + 1).max().unwrap_or(0);
        let mut vals = vec![0i64; width];
        let mut data = Vec::with_capacity(size);
        for flat in 0..size {
            let mut rest = flat;
            for (i, v) in vars.iter().enumerate() {
                vals[v.0 as usize] = (rest / strides[i] as usize) as i64;
                rest %= strides[i] as usize;
            }
            data.push(eval(&full, &vals) as f32);
        }
        let buf = BufId(self.tables.first + self.tables.data.len());
        self.tables.data.push(data);
        Some(Expr::Load {
            buf,
            index: Index {
                affine: Affine {
                    offset: 0,
                    terms: vars.into_iter().zip(strides).collect(),
                },
                gather: None,
            },
        })
    }
}
