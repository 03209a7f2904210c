//! Checks that a kernel program is well formed before a backend runs it (it
//! may come from an artifact on disk): every buffer, loop index and local a
//! kernel names exists, library shapes match their buffers, arena buffers
//! fit the arena. In-bounds indexing is left to execution (it depends on
//! token ids).

use crate::ir::*;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid kernel program: kernel k{kernel}: {detail}")]
pub struct InvalidProgram {
    pub kernel: usize,
    pub detail: String,
}

pub fn validate(p: &KernelProgram) -> Result<(), InvalidProgram> {
    for (i, b) in p.buffers.iter().enumerate() {
        if let Storage::Arena { offset } = b.storage {
            if offset + b.len > p.arena_len {
                return Err(InvalidProgram {
                    kernel: 0,
                    detail: format!("buffer b{i} ends past the arena"),
                });
            }
        }
    }
    for (k, kernel) in p.kernels.iter().enumerate() {
        check_kernel(p, kernel).map_err(|detail| InvalidProgram { kernel: k, detail })?;
    }
    Ok(())
}

fn check_kernel(p: &KernelProgram, k: &Kernel) -> Result<(), String> {
    let len = |b: &BufId, dtype: DType| -> Result<usize, String> {
        match p.buffers.get(b.0) {
            Some(buf) if buf.dtype == dtype => Ok(buf.len),
            Some(_) => Err(format!("b{} has the wrong element type", b.0)),
            None => Err(format!("no buffer b{}", b.0)),
        }
    };
    let want = |b: &BufId, n: usize, dtype: DType| -> Result<(), String> {
        match len(b, dtype)? {
            l if l == n => Ok(()),
            l => Err(format!("b{} holds {l} elements, the call needs {n}", b.0)),
        }
    };
    let f = DType::F32;
    match k {
        Kernel::Loop(l) => {
            let mut err = None;
            let mut check_index = |ix: &Index| {
                let vars_ok = ix.affine.terms.iter().all(|(v, _)| v.0 < l.num_vars);
                let gather_ok = ix.gather.as_ref().is_none_or(|g| {
                    len(&g.buf, DType::I32).is_ok()
                        && g.at.terms.iter().all(|(v, _)| v.0 < l.num_vars)
                });
                if !(vars_ok && gather_ok) && err.is_none() {
                    err = Some("an index names a missing loop index or integer buffer".to_string());
                }
            };
            let mut exprs: Vec<&Expr> = vec![];
            let mut bad_stmt = None;
            visit_stmts(&l.body, &mut |s| match s {
                Stmt::For { var, .. } if var.0 >= l.num_vars => {
                    bad_stmt = Some("loop index out of range")
                }
                Stmt::Let { local, value } => {
                    if local.0 >= l.num_locals {
                        bad_stmt = Some("local out of range");
                    }
                    exprs.push(value);
                }
                Stmt::Reduce {
                    local, var, value, ..
                } => {
                    if local.0 >= l.num_locals || var.0 >= l.num_vars {
                        bad_stmt = Some("reduction local or index out of range");
                    }
                    exprs.push(value);
                }
                Stmt::Store { buf, index, value } => {
                    if len(buf, f).is_err() {
                        bad_stmt = Some("store to a missing or integer buffer");
                    }
                    check_index(index);
                    exprs.push(value);
                }
                Stmt::For { .. } => {}
            });
            if let Some(s) = bad_stmt {
                return Err(s.to_string());
            }
            for e in exprs {
                let mut bad = false;
                visit_expr(e, &mut |x| match x {
                    Expr::Load { buf, index } => {
                        bad |= p.buffers.get(buf.0).is_none();
                        check_index(index);
                    }
                    Expr::Local(l2) => bad |= l2.0 >= l.num_locals,
                    Expr::Var(v) => bad |= v.0 >= l.num_vars,
                    Expr::SelectEq { a, b, .. } => {
                        check_index(a);
                        check_index(b);
                    }
                    _ => {}
                });
                if bad {
                    return Err("an expression names a missing buffer, local or loop index".into());
                }
            }
            err.map_or(Ok(()), Err)
        }
        Kernel::MatMul {
            a,
            b,
            out,
            m,
            n,
            k,
            batch,
            ..
        } => {
            if *batch == 0 {
                return Err("a matmul of a batch of no products".into());
            }
            want(a, batch * m * k, f)?;
            want(b, batch * k * n, f)?;
            want(out, batch * m * n, f)
        }
        Kernel::Attention {
            q,
            k,
            v,
            out,
            lse,
            shape,
        } => {
            attn_ok(shape)?;
            let (nq, nkv, nlse) = attn_sizes(shape);
            for (b, n) in [(q, nq), (k, nkv), (v, nkv), (out, nq), (lse, nlse)] {
                want(b, n, f)?;
            }
            Ok(())
        }
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
        } => {
            attn_ok(shape)?;
            let (nq, nkv, nlse) = attn_sizes(shape);
            for (b, n) in [
                (q, nq),
                (k, nkv),
                (v, nkv),
                (o, nq),
                (lse, nlse),
                (dy, nq),
                (dq, nq),
                (dk, nkv),
                (dv, nkv),
            ] {
                want(b, n, f)?;
            }
            Ok(())
        }
        Kernel::EmbeddingBwd {
            ids,
            dy,
            out,
            vocab,
            dim,
        } => {
            let n = len(ids, DType::I32)?;
            want(dy, n * dim, f)?;
            want(out, vocab * dim, f)
        }
    }
}

fn attn_ok(s: &AttnShape) -> Result<(), String> {
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) || s.seq == 0 {
        return Err("attention heads must be a multiple of kv_heads".into());
    }
    Ok(())
}

/// Elements of q (and out), of k (and v), and of the row log-sum-exps.
fn attn_sizes(s: &AttnShape) -> (usize, usize, usize) {
    let n = s.batch * s.seq * s.head_dim;
    (n * s.heads, n * s.kv_heads, s.batch * s.heads * s.seq)
}
