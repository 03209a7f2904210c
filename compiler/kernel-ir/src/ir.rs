//! The kernel IR: the only contract between the compiler and every backend
//! (reference interpreter, Cranelift, MLIR → PTX). Plain serialisable data,
//! no dependency but serde.
//!
//! A program is a list of kernels over a list of flat, row-major buffers.
//! A kernel is either a library call (matmul, attention, embedding scatter)
//! with its shapes, or a loop kernel: a tree of `for` loops, scalar `let`s,
//! reductions into scalars and stores, whose expressions load from buffers at
//! affine indices (plus at most one gather through an integer buffer). That
//! maps one-to-one onto `scf.for` with `iter_args`, `arith`, `math` and
//! `memref.load/store`, or onto Cranelift blocks.
//!
//! Guarantees a backend may rely on:
//! - the outermost `for` of a loop kernel carries no dependency between its
//!   iterations: it may run in parallel;
//! - a kernel that stores into a buffer it also loads from (the optimizer
//!   updating parameters and moments in place) reads, in each iteration of
//!   the outermost loop, only elements that iteration alone writes, and reads
//!   each before writing it: statement order within an iteration matters;
//! - kernels run in list order; a library call's output never aliases its inputs;
//! - every index is in bounds for token ids inside the vocabulary.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BufId(pub usize);

/// A loop or reduction index, numbered within its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Var(pub u32);

/// A scalar defined by `Let` or `Reduce`, numbered within its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Local(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// The training float (f32 on every backend; the interpreter may widen to f64).
    F32,
    I32,
}

impl DType {
    pub fn bytes(self) -> usize {
        4
    }
}

/// Where a buffer lives. Everything but `Arena` is owned by the runtime and
/// persists across steps (or is fed / read by it); `Arena` buffers are
/// temporaries at an element offset into one scratch allocation, reused once
/// their lifetime has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Storage {
    Param(usize),
    Grad(usize),
    AdamM(usize),
    AdamV(usize),
    Tokens,
    Targets,
    Lr,
    Step,
    /// The gate of every attention head, `[heads]`, in a stage whose heads
    /// grew by a ramp: 1 for the old heads, the ramp's value for the new ones.
    HeadGate,
    /// The gate of every FFN unit, `[ffn]`, in a stage whose FFN grew by a ramp.
    FfnGate,
    Loss,
    Logits,
    /// The global gradient norm of the step, before clipping (a scalar).
    GradNorm,
    Arena {
        offset: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    pub name: String,
    pub dtype: DType,
    /// Elements.
    pub len: usize,
    pub storage: Storage,
}

/// `offset + Σ coeff · var`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Affine {
    pub offset: i64,
    pub terms: Vec<(Var, i64)>,
}

/// `scale · buf[at]`, `buf` an `I32` buffer: embedding rows, target logits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gather {
    pub buf: BufId,
    pub at: Affine,
    pub scale: i64,
}

/// A flat element index: affine in the loop indices, plus an optional gather.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Index {
    pub affine: Affine,
    pub gather: Option<Gather>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnaryFn {
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sin,
    Cos,
    /// The largest integer not above its operand (a row's position from a
    /// flattened row index, for masks).
    Floor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceFn {
    Sum,
    Max,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Const(f64),
    Load {
        buf: BufId,
        index: Index,
    },
    Local(Local),
    /// A loop index, as a float.
    Var(Var),
    Unary(UnaryFn, Box<Expr>),
    Binary(BinaryFn, Box<Expr>, Box<Expr>),
    /// `then` where the two integer indices are equal, else `otherwise`
    /// (the one-hot of the target in the cross-entropy's gradient).
    SelectEq {
        a: Index,
        b: Index,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stmt {
    For {
        var: Var,
        extent: usize,
        body: Vec<Stmt>,
    },
    Let {
        local: Local,
        value: Expr,
    },
    /// `local = op over var in 0..extent of value`, `body` run before each
    /// `value` (the scalars it needs per iteration).
    Reduce {
        local: Local,
        op: ReduceFn,
        var: Var,
        extent: usize,
        body: Vec<Stmt>,
        value: Expr,
    },
    Store {
        buf: BufId,
        index: Index,
        value: Expr,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoopKernel {
    /// The graph ops fused into it, for people and profiles.
    pub name: String,
    pub body: Vec<Stmt>,
    pub num_vars: u32,
    pub num_locals: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kernel {
    Loop(LoopKernel),
    /// `out[m, n] = Σ_k op(a)[m, k] · op(b)[k, n]`; `a` is `[m, k]` (`[k, m]`
    /// when `ta`), `b` is `[k, n]` (`[n, k]` when `tb`). With `batch` > 1,
    /// `batch` such products, each operand that many matrices one after
    /// the other (`a` is `[batch, m, k]`, …). With `bf16`, every operand
    /// value is first rounded to bfloat16 (to nearest, ties to even; see
    /// [`crate::bf16`]) and the products are summed in f32: what a bf16
    /// multiply with f32 accumulation computes, on any backend.
    MatMul {
        a: BufId,
        b: BufId,
        out: BufId,
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        batch: usize,
        #[serde(default, skip_serializing_if = "is_false")]
        bf16: bool,
    },
    /// Causal attention; q, out `[batch·seq, heads, head_dim]`, k, v
    /// `[batch·seq, kv_heads, head_dim]`. Also writes `lse`
    /// `[batch, heads, seq]`, each query row's log-sum-exp of its scaled
    /// scores: the state the backward needs, so that no backend has to keep
    /// any of its own between kernels.
    Attention {
        q: BufId,
        k: BufId,
        v: BufId,
        out: BufId,
        lse: BufId,
        shape: AttnShape,
    },
    /// From the forward's inputs, its output `o` and `lse`, and `dy` (the
    /// gradient of `o`): `dq`, `dk`, `dv`, in the layouts of q, k, v.
    AttentionBwd {
        q: BufId,
        k: BufId,
        v: BufId,
        o: BufId,
        lse: BufId,
        dy: BufId,
        dq: BufId,
        dk: BufId,
        dv: BufId,
        shape: AttnShape,
    },
    /// `out[v, :] = Σ_{n: ids[n] = v} dy[n, :]`; `out` is `[vocab, dim]`.
    EmbeddingBwd {
        ids: BufId,
        dy: BufId,
        out: BufId,
        vocab: usize,
        dim: usize,
    },
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelProgram {
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    /// Elements of the scratch allocation that holds every `Arena` buffer.
    pub arena_len: usize,
}

impl KernelProgram {
    pub fn buffer(&self, storage: Storage) -> Option<BufId> {
        self.buffers
            .iter()
            .position(|b| b.storage == storage)
            .map(BufId)
    }

    /// Bytes of every buffer the runtime keeps (params, grads, moments, inputs, outputs).
    pub fn persistent_bytes(&self) -> usize {
        self.buffers
            .iter()
            .filter(|b| !matches!(b.storage, Storage::Arena { .. }))
            .map(|b| b.len * b.dtype.bytes())
            .sum()
    }

    /// Planned peak memory of one execution: persistent buffers plus the arena.
    pub fn peak_bytes(&self) -> usize {
        self.persistent_bytes() + self.arena_len * DType::F32.bytes()
    }
}

impl Kernel {
    /// Buffers the kernel writes.
    pub fn writes(&self) -> Vec<BufId> {
        match self {
            Kernel::Loop(k) => {
                let mut out = vec![];
                visit_stmts(&k.body, &mut |s| {
                    if let Stmt::Store { buf, .. } = s {
                        out.push(*buf);
                    }
                });
                out.sort();
                out.dedup();
                out
            }
            Kernel::MatMul { out, .. } | Kernel::EmbeddingBwd { out, .. } => vec![*out],
            Kernel::Attention { out, lse, .. } => vec![*out, *lse],
            Kernel::AttentionBwd { dq, dk, dv, .. } => vec![*dq, *dk, *dv],
        }
    }

    /// Buffers the kernel reads.
    pub fn reads(&self) -> Vec<BufId> {
        let mut out = match self {
            Kernel::Loop(k) => {
                let mut out = vec![];
                let mut index = |ix: &Index, out: &mut Vec<BufId>| {
                    if let Some(g) = &ix.gather {
                        out.push(g.buf);
                    }
                };
                visit_stmts(&k.body, &mut |s| match s {
                    Stmt::Let { value, .. } => {
                        visit_expr(value, &mut |e| expr_reads(e, &mut out, &mut index))
                    }
                    Stmt::Reduce { value, .. } => {
                        visit_expr(value, &mut |e| expr_reads(e, &mut out, &mut index))
                    }
                    Stmt::Store {
                        value, index: ix, ..
                    } => {
                        index(ix, &mut out);
                        visit_expr(value, &mut |e| expr_reads(e, &mut out, &mut index));
                    }
                    Stmt::For { .. } => {}
                });
                out
            }
            Kernel::MatMul { a, b, .. } => vec![*a, *b],
            Kernel::Attention { q, k, v, .. } => vec![*q, *k, *v],
            Kernel::AttentionBwd {
                q,
                k,
                v,
                o,
                lse,
                dy,
                ..
            } => vec![*q, *k, *v, *o, *lse, *dy],
            Kernel::EmbeddingBwd { ids, dy, .. } => vec![*ids, *dy],
        };
        out.sort();
        out.dedup();
        out
    }

    pub fn name(&self) -> &str {
        match self {
            Kernel::Loop(k) => &k.name,
            Kernel::MatMul { .. } => "matmul",
            Kernel::Attention { .. } => "attention",
            Kernel::AttentionBwd { .. } => "attention_bwd",
            Kernel::EmbeddingBwd { .. } => "embedding_bwd",
        }
    }
}

fn expr_reads(e: &Expr, out: &mut Vec<BufId>, index: &mut impl FnMut(&Index, &mut Vec<BufId>)) {
    match e {
        Expr::Load { buf, index: ix } => {
            out.push(*buf);
            index(ix, out);
        }
        Expr::SelectEq { a, b, .. } => {
            index(a, out);
            index(b, out);
        }
        _ => {}
    }
}

/// Calls `f` on every statement, outer before inner.
pub fn visit_stmts<'a>(stmts: &'a [Stmt], f: &mut impl FnMut(&'a Stmt)) {
    for s in stmts {
        f(s);
        match s {
            Stmt::For { body, .. } | Stmt::Reduce { body, .. } => visit_stmts(body, f),
            Stmt::Let { .. } | Stmt::Store { .. } => {}
        }
    }
}

/// Calls `f` on every node of an expression tree.
pub fn visit_expr<'a>(e: &'a Expr, f: &mut impl FnMut(&'a Expr)) {
    f(e);
    match e {
        Expr::Unary(_, a) => visit_expr(a, f),
        Expr::Binary(_, a, b) => {
            visit_expr(a, f);
            visit_expr(b, f);
        }
        Expr::SelectEq {
            then, otherwise, ..
        } => {
            visit_expr(then, f);
            visit_expr(otherwise, f);
        }
        Expr::Const(_) | Expr::Load { .. } | Expr::Local(_) | Expr::Var(_) => {}
    }
}
