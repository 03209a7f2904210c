//! The library calls in plain loops: matmul, causal attention (forward and
//! backward, GQA), embedding scatter. Shared by the kernel interpreter and the
//! graph evaluator, so both read the same definition.

use super::float::Float;
use gsc_compiler::kernel::AttnShape;

/// `out[m, n] = Σ_k op(a)[m, k] · op(b)[k, n]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul<F: Float>(
    a: &[F],
    b: &[F],
    out: &mut [F],
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = F::default();
            for p in 0..k {
                let x = if ta { a[p * m + i] } else { a[i * k + p] };
                let y = if tb { b[j * k + p] } else { b[p * n + j] };
                acc += x * y;
            }
            out[i * n + j] = acc;
        }
    }
}

/// Row `(token, head)` of a `[tokens, heads, head_dim]` tensor.
fn at(token: usize, head: usize, heads: usize, dk: usize) -> usize {
    (token * heads + head) * dk
}

/// Scaled scores `scale · q_t · k_u` of query `t` of sequence `b` in head `h`,
/// over keys `0..=t`.
fn scores<F: Float>(q: &[F], k: &[F], s: &AttnShape, b: usize, t: usize, h: usize) -> Vec<F> {
    let dk = s.head_dim;
    let kvh = h / (s.heads / s.kv_heads);
    let qi = at(b * s.seq + t, h, s.heads, dk);
    let scale = F::from_f64(s.scale);
    (0..=t)
        .map(|u| {
            let ki = at(b * s.seq + u, kvh, s.kv_heads, dk);
            let mut dot = F::default();
            for j in 0..dk {
                dot += q[qi + j] * k[ki + j];
            }
            dot * scale
        })
        .collect()
}

/// Row `(b, h, t)` of the `[batch, heads, seq]` log-sum-exps.
fn lse_at(s: &AttnShape, b: usize, h: usize, t: usize) -> usize {
    (b * s.heads + h) * s.seq + t
}

/// Causal attention: `out` as `q`, and `lse`, each query row's
/// `log Σ_u exp(score_u)`, which the backward reads.
pub fn attention<F: Float>(q: &[F], k: &[F], v: &[F], out: &mut [F], lse: &mut [F], s: &AttnShape) {
    let dk = s.head_dim;
    for b in 0..s.batch {
        for h in 0..s.heads {
            let kvh = h / (s.heads / s.kv_heads);
            for t in 0..s.seq {
                let scores = scores(q, k, s, b, t, h);
                let m = scores.iter().copied().fold(scores[0], F::max);
                let e: Vec<F> = scores.iter().map(|&x| (x - m).exp()).collect();
                let mut z = F::default();
                for &x in &e {
                    z += x;
                }
                lse[lse_at(s, b, h, t)] = m + z.ln();
                let oi = at(b * s.seq + t, h, s.heads, dk);
                for j in 0..dk {
                    let mut acc = F::default();
                    for (u, &eu) in e.iter().enumerate() {
                        acc += eu / z * v[at(b * s.seq + u, kvh, s.kv_heads, dk) + j];
                    }
                    out[oi + j] = acc;
                }
            }
        }
    }
}

/// From the forward's `o` and `lse`: `p_u = exp(score_u − lse)`,
/// `dp_u = dy·v_u`, and `Σ_u p_u dp_u = dy·o` (as `o = Σ_u p_u v_u`), so
/// `ds_u = p_u (dp_u − dy·o)`; `dq = scale Σ ds_u k_u`, `dk_u += scale ds_u q`,
/// `dv_u += p_u dy`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    o: &[F],
    lse: &[F],
    dy: &[F],
    dq: &mut [F],
    dkk: &mut [F],
    dv: &mut [F],
    s: &AttnShape,
) {
    let dk = s.head_dim;
    let scale = F::from_f64(s.scale);
    dq.iter_mut().for_each(|x| *x = F::default());
    dkk.iter_mut().for_each(|x| *x = F::default());
    dv.iter_mut().for_each(|x| *x = F::default());
    for b in 0..s.batch {
        for h in 0..s.heads {
            let kvh = h / (s.heads / s.kv_heads);
            for t in 0..s.seq {
                let row_lse = lse[lse_at(s, b, h, t)];
                let p: Vec<F> = scores(q, k, s, b, t, h)
                    .into_iter()
                    .map(|x| (x - row_lse).exp())
                    .collect();
                let qi = at(b * s.seq + t, h, s.heads, dk);
                let kv = |u: usize| at(b * s.seq + u, kvh, s.kv_heads, dk);
                let mut dy_o = F::default();
                for j in 0..dk {
                    dy_o += dy[qi + j] * o[qi + j];
                }
                for u in 0..=t {
                    let mut dp = F::default();
                    for j in 0..dk {
                        dp += dy[qi + j] * v[kv(u) + j];
                    }
                    let ds = p[u] * (dp - dy_o) * scale;
                    for j in 0..dk {
                        dq[qi + j] += ds * k[kv(u) + j];
                        dkk[kv(u) + j] += ds * q[qi + j];
                        dv[kv(u) + j] += p[u] * dy[qi + j];
                    }
                }
            }
        }
    }
}

/// `out[v, :] = Σ_{n: ids[n] = v} dy[n, :]`; `None` if an id is out of range.
pub fn embedding_bwd<F: Float>(
    ids: &[i32],
    dy: &[F],
    out: &mut [F],
    vocab: usize,
    dim: usize,
) -> Option<()> {
    out.iter_mut().for_each(|x| *x = F::default());
    for (n, &id) in ids.iter().enumerate() {
        let v = usize::try_from(id).ok().filter(|&v| v < vocab)?;
        for j in 0..dim {
            out[v * dim + j] += dy[n * dim + j];
        }
    }
    Some(())
}
