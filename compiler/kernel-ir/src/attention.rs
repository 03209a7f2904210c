//! Causal attention, forward and backward, as batched matrix products and
//! loop kernels: the form a code generator without an attention library
//! (MLIR → PTX, with cuBLAS for the products) runs it in. It materialises
//! the `[seq, seq]` scores of every head, which a fused kernel would not;
//! it is the simple, checkable baseline.
//!
//! The heads are first copied to a head-major layout, `[batch, heads, seq,
//! head_dim]`, so that every product is one batch of packed matrices: the
//! `group = heads / kv_heads` query heads sharing a key head are adjacent,
//! and fold into the rows of one product per `(batch, kv_head)`. Scores
//! are `[batch, heads, seq, seq]`, so the rows `r = (b·heads + h)·seq + t`
//! of the softmax line up with the `[batch, heads, seq]` log-sum-exps.
//!
//! Forward: `S = Q Kᵀ`; `P = softmax(scale·S)` under the causal mask, with
//! `lse`; `O = P V`. Backward, from `lse`: `P` again, `dP = dY Vᵀ`,
//! `dS = P ∘ (dP − δ)·scale` with `δ = Σ dY ∘ O` per row, `dQ = dS K`,
//! `dK = dSᵀ Q`, `dV = Pᵀ dY`.

use crate::ir::*;

/// What masked scores are pushed down by: finite, and far enough below
/// every real score that `exp` of it is zero in f64 and its clamped floor
/// (about 1e-38) in the generated f32 code.
const MASKED: f64 = -1.0e30;

fn aff(terms: &[(Var, usize)]) -> Affine {
    Affine {
        offset: 0,
        terms: terms.iter().map(|&(v, c)| (v, c as i64)).collect(),
    }
}

fn at(terms: &[(Var, usize)]) -> Index {
    Index {
        affine: aff(terms),
        gather: None,
    }
}

fn load(buf: BufId, terms: &[(Var, usize)]) -> Expr {
    Expr::Load {
        buf,
        index: at(terms),
    }
}

fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::Binary(f, Box::new(a), Box::new(b))
}

fn un(f: UnaryFn, a: Expr) -> Expr {
    Expr::Unary(f, Box::new(a))
}

fn exp(a: Expr) -> Expr {
    un(UnaryFn::Exp, a)
}

fn for_(var: Var, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::For { var, extent, body }
}

/// A copy between the token-major `[batch·seq, width, head_dim]` layout and
/// the head-major `[batch, width, seq, head_dim]` one (`to_heads`) or back,
/// parallel over positions.
fn transpose(
    name: &str,
    src: BufId,
    dst: BufId,
    s: &AttnShape,
    width: usize,
    to_heads: bool,
) -> Kernel {
    let (t, b, h, d) = (Var(0), Var(1), Var(2), Var(3));
    let dh = s.head_dim;
    let tokens = [(b, s.seq * width * dh), (t, width * dh), (h, dh), (d, 1)];
    let heads = [(b, width * s.seq * dh), (h, s.seq * dh), (t, dh), (d, 1)];
    let (from, to) = if to_heads {
        (tokens, heads)
    } else {
        (heads, tokens)
    };
    let store = Stmt::Store {
        buf: dst,
        index: at(&to),
        value: load(src, &from),
    };
    Kernel::Loop(LoopKernel {
        name: name.into(),
        body: vec![for_(
            t,
            s.seq,
            vec![for_(
                b,
                s.batch,
                vec![for_(h, width, vec![for_(d, dh, vec![store])])],
            )],
        )],
        num_vars: 4,
        num_locals: 0,
    })
}

/// Rows of the scores: every `(b, h, t)`.
fn rows(s: &AttnShape) -> usize {
    s.batch * s.heads * s.seq
}

/// `scale · S[r, u]`, or [`MASKED`] where key `u` is after query `t`
/// (`pos`, a local holding `t` of row `r`).
fn masked_score(scores: BufId, s: &AttnShape, r: Var, u: Var, pos: Local) -> Expr {
    // keep = clamp(t − u + 1, 0, 1): 1 where u ≤ t, else 0.
    let keep = bin(
        BinaryFn::Min,
        bin(
            BinaryFn::Max,
            bin(
                BinaryFn::Add,
                bin(BinaryFn::Sub, Expr::Local(pos), Expr::Var(u)),
                Expr::Const(1.0),
            ),
            Expr::Const(0.0),
        ),
        Expr::Const(1.0),
    );
    bin(
        BinaryFn::Add,
        bin(
            BinaryFn::Mul,
            Expr::Const(s.scale),
            load(scores, &[(r, s.seq), (u, 1)]),
        ),
        bin(
            BinaryFn::Mul,
            bin(BinaryFn::Sub, keep, Expr::Const(1.0)),
            Expr::Const(-MASKED),
        ),
    )
}

/// `t` of row `r`: `r − seq·⌊(r + ½)/seq⌋`, exact while `r` is below 2²⁴.
fn position(r: Var, pos: Local, s: &AttnShape) -> Stmt {
    let seq = s.seq as f64;
    let quotient = un(
        UnaryFn::Floor,
        bin(
            BinaryFn::Div,
            bin(BinaryFn::Add, Expr::Var(r), Expr::Const(0.5)),
            Expr::Const(seq),
        ),
    );
    Stmt::Let {
        local: pos,
        value: bin(
            BinaryFn::Sub,
            Expr::Var(r),
            bin(BinaryFn::Mul, Expr::Const(seq), quotient),
        ),
    }
}

/// The causal softmax of every row of `scores`, in place, and its
/// log-sum-exps.
fn softmax(scores: BufId, lse: BufId, s: &AttnShape) -> Kernel {
    let (r, u1, u2, u3) = (Var(0), Var(1), Var(2), Var(3));
    let (pos, max, sum, l) = (Local(0), Local(1), Local(2), Local(3));
    let body = vec![
        position(r, pos, s),
        Stmt::Reduce {
            local: max,
            op: ReduceFn::Max,
            var: u1,
            extent: s.seq,
            body: vec![],
            value: masked_score(scores, s, r, u1, pos),
        },
        Stmt::Reduce {
            local: sum,
            op: ReduceFn::Sum,
            var: u2,
            extent: s.seq,
            body: vec![],
            value: exp(bin(
                BinaryFn::Sub,
                masked_score(scores, s, r, u2, pos),
                Expr::Local(max),
            )),
        },
        Stmt::Let {
            local: l,
            value: bin(
                BinaryFn::Add,
                Expr::Local(max),
                un(UnaryFn::Log, Expr::Local(sum)),
            ),
        },
        Stmt::Store {
            buf: lse,
            index: at(&[(r, 1)]),
            value: Expr::Local(l),
        },
        probabilities(scores, s, r, u3, pos, l),
    ];
    Kernel::Loop(LoopKernel {
        name: "attention_softmax".into(),
        body: vec![for_(r, rows(s), body)],
        num_vars: 4,
        num_locals: 4,
    })
}

/// `P[r, u] = exp(masked scale·S[r, u] − lse)`, in place over `S`.
fn probabilities(scores: BufId, s: &AttnShape, r: Var, u: Var, pos: Local, lse: Local) -> Stmt {
    for_(
        u,
        s.seq,
        vec![Stmt::Store {
            buf: scores,
            index: at(&[(r, s.seq), (u, 1)]),
            value: exp(bin(
                BinaryFn::Sub,
                masked_score(scores, s, r, u, pos),
                Expr::Local(lse),
            )),
        }],
    )
}

/// The backward's `P` from the forward's log-sum-exps, in place over `S`.
fn recompute_probabilities(scores: BufId, lse: BufId, s: &AttnShape) -> Kernel {
    let (r, u) = (Var(0), Var(1));
    let (pos, l) = (Local(0), Local(1));
    let body = vec![
        position(r, pos, s),
        Stmt::Let {
            local: l,
            value: load(lse, &[(r, 1)]),
        },
        probabilities(scores, s, r, u, pos, l),
    ];
    Kernel::Loop(LoopKernel {
        name: "attention_probabilities".into(),
        body: vec![for_(r, rows(s), body)],
        num_vars: 2,
        num_locals: 2,
    })
}

/// `δ[(b·heads + h)·seq + t] = Σ_d dy · o` over the token-major gradients
/// and outputs, parallel over positions.
fn row_dot(dy: BufId, o: BufId, delta: BufId, s: &AttnShape) -> Kernel {
    let (t, b, h, d) = (Var(0), Var(1), Var(2), Var(3));
    let dh = s.head_dim;
    let tok = [
        (b, s.seq * s.heads * dh),
        (t, s.heads * dh),
        (h, dh),
        (d, 1),
    ];
    let sum = Stmt::Reduce {
        local: Local(0),
        op: ReduceFn::Sum,
        var: d,
        extent: dh,
        body: vec![],
        value: bin(BinaryFn::Mul, load(dy, &tok), load(o, &tok)),
    };
    let store = Stmt::Store {
        buf: delta,
        index: at(&[(b, s.heads * s.seq), (h, s.seq), (t, 1)]),
        value: Expr::Local(Local(0)),
    };
    Kernel::Loop(LoopKernel {
        name: "attention_row_dot".into(),
        body: vec![for_(
            t,
            s.seq,
            vec![for_(b, s.batch, vec![for_(h, s.heads, vec![sum, store])])],
        )],
        num_vars: 4,
        num_locals: 1,
    })
}

/// `dP ← P ∘ (dP − δ)·scale`, in place over `dP`.
fn score_grad(p: BufId, dp: BufId, delta: BufId, s: &AttnShape) -> Kernel {
    let (r, u) = (Var(0), Var(1));
    let el = [(r, s.seq), (u, 1)];
    let value = bin(
        BinaryFn::Mul,
        bin(
            BinaryFn::Mul,
            load(p, &el),
            bin(BinaryFn::Sub, load(dp, &el), Expr::Local(Local(0))),
        ),
        Expr::Const(s.scale),
    );
    let body = vec![
        Stmt::Let {
            local: Local(0),
            value: load(delta, &[(r, 1)]),
        },
        for_(
            u,
            s.seq,
            vec![Stmt::Store {
                buf: dp,
                index: at(&el),
                value,
            }],
        ),
    ];
    Kernel::Loop(LoopKernel {
        name: "attention_score_grad".into(),
        body: vec![for_(r, rows(s), body)],
        num_vars: 2,
        num_locals: 1,
    })
}

/// One product per `(batch, kv_head)`: `[group·seq, ·]` rows of the query
/// heads sharing that key head.
#[allow(clippy::too_many_arguments)]
fn product(
    a: BufId,
    b: BufId,
    out: BufId,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    s: &AttnShape,
) -> Kernel {
    Kernel::MatMul {
        a,
        b,
        out,
        m,
        n,
        k,
        ta,
        tb,
        batch: s.batch * s.kv_heads,
        bf16: false,
    }
}

/// Allocates temporaries one after another from an arena offset.
struct Scratch<'a> {
    buffers: &'a mut Vec<Buffer>,
    base: usize,
    used: usize,
}

impl Scratch<'_> {
    fn take(&mut self, name: &str, len: usize) -> BufId {
        self.buffers.push(Buffer {
            name: format!("attention.{name}"),
            dtype: DType::F32,
            len,
            storage: Storage::Arena {
                offset: self.base + self.used,
            },
        });
        self.used += len;
        BufId(self.buffers.len() - 1)
    }
}

fn sizes(s: &AttnShape) -> (usize, usize, usize) {
    let q = s.batch * s.heads * s.seq * s.head_dim;
    let kv = s.batch * s.kv_heads * s.seq * s.head_dim;
    (q, kv, s.batch * s.heads * s.seq * s.seq)
}

/// The forward's kernels, its temporaries taken from `scratch`.
#[allow(clippy::too_many_arguments)]
fn forward(
    q: BufId,
    k: BufId,
    v: BufId,
    out: BufId,
    lse: BufId,
    s: &AttnShape,
    scratch: &mut Scratch,
) -> Vec<Kernel> {
    let (nq, nkv, ns) = sizes(s);
    let (qh, kh, vh) = (
        scratch.take("qh", nq),
        scratch.take("kh", nkv),
        scratch.take("vh", nkv),
    );
    let (scores, oh) = (scratch.take("p", ns), scratch.take("oh", nq));
    let rows_per = s.heads / s.kv_heads * s.seq;
    let (t, dh) = (s.seq, s.head_dim);
    vec![
        transpose("attention_q_to_heads", q, qh, s, s.heads, true),
        transpose("attention_k_to_heads", k, kh, s, s.kv_heads, true),
        transpose("attention_v_to_heads", v, vh, s, s.kv_heads, true),
        product(qh, kh, scores, rows_per, t, dh, false, true, s),
        softmax(scores, lse, s),
        product(scores, vh, oh, rows_per, dh, t, false, false, s),
        transpose("attention_o_from_heads", oh, out, s, s.heads, false),
    ]
}

/// The backward's kernels, its temporaries taken from `scratch`.
#[allow(clippy::too_many_arguments)]
fn backward(
    [q, k, v, o, lse, dy]: [BufId; 6],
    [dq, dk, dv]: [BufId; 3],
    s: &AttnShape,
    scratch: &mut Scratch,
) -> Vec<Kernel> {
    let (nq, nkv, ns) = sizes(s);
    let (qh, kh, vh, dyh) = (
        scratch.take("qh", nq),
        scratch.take("kh", nkv),
        scratch.take("vh", nkv),
        scratch.take("dyh", nq),
    );
    let (p, dp) = (scratch.take("p", ns), scratch.take("dp", ns));
    let delta = scratch.take("delta", rows(s));
    let (dqh, dkh, dvh) = (
        scratch.take("dqh", nq),
        scratch.take("dkh", nkv),
        scratch.take("dvh", nkv),
    );
    let rows_per = s.heads / s.kv_heads * s.seq;
    let (t, dh) = (s.seq, s.head_dim);
    vec![
        transpose("attention_q_to_heads", q, qh, s, s.heads, true),
        transpose("attention_k_to_heads", k, kh, s, s.kv_heads, true),
        transpose("attention_v_to_heads", v, vh, s, s.kv_heads, true),
        transpose("attention_dy_to_heads", dy, dyh, s, s.heads, true),
        row_dot(dy, o, delta, s),
        product(qh, kh, p, rows_per, t, dh, false, true, s),
        recompute_probabilities(p, lse, s),
        product(dyh, vh, dp, rows_per, t, dh, false, true, s),
        score_grad(p, dp, delta, s),
        product(dp, kh, dqh, rows_per, dh, t, false, false, s),
        product(dp, qh, dkh, t, dh, rows_per, true, false, s),
        product(p, dyh, dvh, t, dh, rows_per, true, false, s),
        transpose("attention_dq_from_heads", dqh, dq, s, s.heads, false),
        transpose("attention_dk_from_heads", dkh, dk, s, s.kv_heads, false),
        transpose("attention_dv_from_heads", dvh, dv, s, s.kv_heads, false),
    ]
}

/// `program` with every `Attention` and `AttentionBwd` replaced by its
/// products and loop kernels (same buffers, same place in the order). The
/// temporaries of every attention share one region appended to the arena:
/// each attention's are dead once its last kernel has run.
pub fn attention_as_products(program: &KernelProgram) -> KernelProgram {
    let mut p = program.clone();
    let base = p.arena_len;
    let mut region = 0;
    let mut kernels = Vec::with_capacity(p.kernels.len());
    for kernel in std::mem::take(&mut p.kernels) {
        let mut scratch = Scratch {
            buffers: &mut p.buffers,
            base,
            used: 0,
        };
        match kernel {
            Kernel::Attention {
                q,
                k,
                v,
                out,
                lse,
                shape,
            } => kernels.extend(forward(q, k, v, out, lse, &shape, &mut scratch)),
            Kernel::AttentionBwd {
                q,
                k,
                v,
                o,
                lse,
                dy,
                dq,
                dk,
                dv,
                shape,
            } => kernels.extend(backward(
                [q, k, v, o, lse, dy],
                [dq, dk, dv],
                &shape,
                &mut scratch,
            )),
            other => kernels.push(other),
        }
        region = region.max(scratch.used);
    }
    p.kernels = kernels;
    p.arena_len = base + region;
    p
}
