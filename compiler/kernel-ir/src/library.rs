//! Library kernels written as loop kernels, for code generators that have
//! no library for them: the embedding gradient on a GPU is a loop kernel
//! that any loop code generator compiles, parallel over vocabulary rows so
//! that every row has one writer and needs no atomics; attention becomes
//! matrix products and loop kernels ([`crate::attention`]).

use crate::ir::*;

/// `out[v, :] = Σ_{n: ids[n] = v} dy[n, :]` (the `EmbeddingBwd` kernel)
/// as a loop kernel: for each row `v` (the parallel loop) and column `d`,
/// the sum over all `tokens` of `dy[n, d]` where `ids[n]` is `v`. Ids
/// outside the vocabulary match no row, as in the library kernel.
pub fn embedding_bwd_loop(
    ids: BufId,
    dy: BufId,
    out: BufId,
    vocab: usize,
    dim: usize,
    tokens: usize,
) -> LoopKernel {
    let (v, d, n) = (Var(0), Var(1), Var(2));
    let affine = |offset: i64, terms: &[(Var, i64)]| Affine {
        offset,
        terms: terms.to_vec(),
    };
    let id = Index {
        affine: affine(0, &[]),
        gather: Some(Gather {
            buf: ids,
            at: affine(0, &[(n, 1)]),
            scale: 1,
        }),
    };
    let row = Index {
        affine: affine(0, &[(v, 1)]),
        gather: None,
    };
    let grad = Expr::Load {
        buf: dy,
        index: Index {
            affine: affine(0, &[(n, dim as i64), (d, 1)]),
            gather: None,
        },
    };
    let sum = Stmt::Reduce {
        local: Local(0),
        op: ReduceFn::Sum,
        var: n,
        extent: tokens,
        body: vec![],
        value: Expr::SelectEq {
            a: id,
            b: row,
            then: Box::new(grad),
            otherwise: Box::new(Expr::Const(0.0)),
        },
    };
    let store = Stmt::Store {
        buf: out,
        index: Index {
            affine: affine(0, &[(v, dim as i64), (d, 1)]),
            gather: None,
        },
        value: Expr::Local(Local(0)),
    };
    LoopKernel {
        name: "embedding_bwd".into(),
        body: vec![Stmt::For {
            var: v,
            extent: vocab,
            body: vec![Stmt::For {
                var: d,
                extent: dim,
                body: vec![sum, store],
            }],
        }],
        num_vars: 3,
        num_locals: 1,
    }
}

/// `program` with every `EmbeddingBwd` replaced by its loop kernel (same
/// buffers, same position), for a code generator without that library.
pub fn embedding_bwd_as_loops(program: &KernelProgram) -> KernelProgram {
    let mut p = program.clone();
    for k in &mut p.kernels {
        if let Kernel::EmbeddingBwd {
            ids,
            dy,
            out,
            vocab,
            dim,
        } = *k
        {
            let tokens = program.buffers.get(ids.0).map_or(0, |b| b.len);
            *k = Kernel::Loop(embedding_bwd_loop(ids, dy, out, vocab, dim, tokens));
        }
    }
    p
}

/// What a GPU runs: `program` with no library kernel but matrix products
/// (embedding gradients and attention rewritten). Deterministic, so the
/// runtime recomputes it from the program its PTX was made for.
pub fn for_gpu(program: &KernelProgram) -> KernelProgram {
    crate::attention::attention_as_products(&embedding_bwd_as_loops(program))
}
