//! A straightforward f64 evaluation of a kernel program: the oracle the CPU
//! backend is compared against (until the reference interpreter lands).
//! Loads read f32 and widen, every operation runs in f64, stores round to
//! f32 — so the only differences from the backend are its f32 arithmetic
//! and its summation order.
#![allow(dead_code)]

use gsc_compiler::kernel::*;
use gsc_runtime::buffers::ProgramBuffers;
use gsc_runtime::rng::SplitMix64;

struct Env {
    vars: Vec<i64>,
    locals: Vec<f64>,
}

fn affine(a: &Affine, env: &Env) -> i64 {
    a.offset
        + a.terms
            .iter()
            .map(|(v, c)| c * env.vars[v.0 as usize])
            .sum::<i64>()
}

fn index(ix: &Index, env: &Env, b: &ProgramBuffers) -> usize {
    let mut at = affine(&ix.affine, env);
    if let Some(g) = &ix.gather {
        let ints = b.i32(g.buf).expect("gather buffer is I32");
        at += g.scale * ints[affine(&g.at, env) as usize] as i64;
    }
    usize::try_from(at).expect("index is not negative")
}

fn expr(e: &Expr, env: &Env, b: &ProgramBuffers) -> f64 {
    match e {
        Expr::Const(c) => *c,
        Expr::Load { buf, index: ix } => b.f32(*buf).expect("F32 buffer")[index(ix, env, b)] as f64,
        Expr::Local(l) => env.locals[l.0 as usize],
        Expr::Var(v) => env.vars[v.0 as usize] as f64,
        Expr::Unary(f, a) => {
            let x = expr(a, env, b);
            match f {
                UnaryFn::Neg => -x,
                UnaryFn::Exp => x.exp(),
                UnaryFn::Log => x.ln(),
                UnaryFn::Sqrt => x.sqrt(),
                UnaryFn::Tanh => x.tanh(),
                UnaryFn::Sin => x.sin(),
                UnaryFn::Cos => x.cos(),
            }
        }
        Expr::Binary(f, x, y) => {
            let (x, y) = (expr(x, env, b), expr(y, env, b));
            match f {
                BinaryFn::Add => x + y,
                BinaryFn::Sub => x - y,
                BinaryFn::Mul => x * y,
                BinaryFn::Div => x / y,
                BinaryFn::Max => x.max(y),
                BinaryFn::Min => x.min(y),
            }
        }
        Expr::SelectEq {
            a,
            b: ib,
            then,
            otherwise,
        } => {
            if index(a, env, b) == index(ib, env, b) {
                expr(then, env, b)
            } else {
                expr(otherwise, env, b)
            }
        }
    }
}

fn stmts(body: &[Stmt], env: &mut Env, b: &mut ProgramBuffers) {
    for s in body {
        match s {
            Stmt::For { var, extent, body } => {
                for i in 0..*extent {
                    env.vars[var.0 as usize] = i as i64;
                    stmts(body, env, b);
                }
            }
            Stmt::Let { local, value } => env.locals[local.0 as usize] = expr(value, env, b),
            Stmt::Reduce {
                local,
                op,
                var,
                extent,
                body,
                value,
            } => {
                let mut acc = match op {
                    ReduceFn::Sum => 0.0,
                    ReduceFn::Max => f64::NEG_INFINITY,
                };
                for i in 0..*extent {
                    env.vars[var.0 as usize] = i as i64;
                    stmts(body, env, b);
                    let v = expr(value, env, b);
                    acc = match op {
                        ReduceFn::Sum => acc + v,
                        ReduceFn::Max => acc.max(v),
                    };
                }
                env.locals[local.0 as usize] = acc;
            }
            Stmt::Store {
                buf,
                index: ix,
                value,
            } => {
                let v = expr(value, env, b);
                let i = index(ix, env, b);
                b.f32_mut(*buf).expect("F32 buffer")[i] = v as f32;
            }
        }
    }
}

pub fn eval_loop(k: &LoopKernel, b: &mut ProgramBuffers) {
    let mut env = Env {
        vars: vec![0; k.num_vars as usize],
        locals: vec![0.0; k.num_locals as usize],
    };
    stmts(&k.body, &mut env, b);
}

fn get(b: &ProgramBuffers, id: BufId) -> Vec<f64> {
    b.f32(id)
        .expect("F32 buffer")
        .iter()
        .map(|&x| x as f64)
        .collect()
}

fn put(b: &mut ProgramBuffers, id: BufId, v: &[f64]) {
    for (d, s) in b.f32_mut(id).expect("F32 buffer").iter_mut().zip(v) {
        *d = *s as f32;
    }
}

pub fn matmul(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                let x = if ta { a[p * m + i] } else { a[i * k + p] };
                let y = if tb { b[j * k + p] } else { b[p * n + j] };
                s += x * y;
            }
            out[i * n + j] = s;
        }
    }
    out
}

/// Causal attention forward: (out, probabilities per (b, h, i, j)).
pub fn attention(q: &[f64], k: &[f64], v: &[f64], s: &AttnShape) -> (Vec<f64>, Vec<f64>) {
    let (t, h, kvh, d) = (s.seq, s.heads, s.kv_heads, s.head_dim);
    let group = h / kvh;
    let mut out = vec![0.0; q.len()];
    let mut probs = vec![0.0; s.batch * h * t * t];
    for b in 0..s.batch {
        for hh in 0..h {
            let g = hh / group;
            for i in 0..t {
                let qi = &q[((b * t + i) * h + hh) * d..][..d];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[((b * t + j) * kvh + g) * d..][..d];
                        s.scale * qi.iter().zip(kj).map(|(x, y)| x * y).sum::<f64>()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|x| (x - mx).exp()).sum();
                for (j, sc) in scores.iter().enumerate() {
                    let p = (sc - mx).exp() / z;
                    probs[((b * h + hh) * t + i) * t + j] = p;
                    let vj = &v[((b * t + j) * kvh + g) * d..][..d];
                    for e in 0..d {
                        out[((b * t + i) * h + hh) * d + e] += p * vj[e];
                    }
                }
            }
        }
    }
    (out, probs)
}

/// (dq, dk, dv) of causal attention.
#[allow(clippy::needless_range_loop)]
pub fn attention_bwd(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dy: &[f64],
    s: &AttnShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (t, h, kvh, d) = (s.seq, s.heads, s.kv_heads, s.head_dim);
    let group = h / kvh;
    let (_, probs) = attention(q, k, v, s);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for b in 0..s.batch {
        for hh in 0..h {
            let g = hh / group;
            for i in 0..t {
                let qo = ((b * t + i) * h + hh) * d;
                let dp: Vec<f64> = (0..=i)
                    .map(|j| {
                        let vo = ((b * t + j) * kvh + g) * d;
                        (0..d).map(|e| dy[qo + e] * v[vo + e]).sum()
                    })
                    .collect();
                let p = |j: usize| probs[((b * h + hh) * t + i) * t + j];
                let dot: f64 = (0..=i).map(|j| p(j) * dp[j]).sum();
                for j in 0..=i {
                    let ko = ((b * t + j) * kvh + g) * d;
                    let ds = p(j) * (dp[j] - dot) * s.scale;
                    for e in 0..d {
                        dq[qo + e] += ds * k[ko + e];
                        dk[ko + e] += ds * q[qo + e];
                        dv[ko + e] += p(j) * dy[qo + e];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// Runs every kernel of `p` on `b` with the oracle.
pub fn eval_program(p: &KernelProgram, b: &mut ProgramBuffers) {
    for k in &p.kernels {
        match k {
            Kernel::Loop(l) => eval_loop(l, b),
            Kernel::MatMul {
                a,
                b: bb,
                out,
                m,
                n,
                k,
                ta,
                tb,
            } => {
                let r = matmul(&get(b, *a), &get(b, *bb), *m, *n, *k, *ta, *tb);
                put(b, *out, &r);
            }
            Kernel::Attention {
                q,
                k,
                v,
                out,
                shape,
            } => {
                let (o, _) = attention(&get(b, *q), &get(b, *k), &get(b, *v), shape);
                put(b, *out, &o);
            }
            Kernel::AttentionBwd {
                q,
                k,
                v,
                dy,
                dq,
                dk,
                dv,
                shape,
            } => {
                let (gq, gk, gv) =
                    attention_bwd(&get(b, *q), &get(b, *k), &get(b, *v), &get(b, *dy), shape);
                put(b, *dq, &gq);
                put(b, *dk, &gk);
                put(b, *dv, &gv);
            }
            Kernel::EmbeddingBwd {
                ids,
                dy,
                out,
                vocab,
                dim,
            } => {
                let ids = b.i32(*ids).expect("I32").to_vec();
                let g = get(b, *dy);
                let mut o = vec![0.0; vocab * dim];
                for (n, &id) in ids.iter().enumerate() {
                    for e in 0..*dim {
                        o[id as usize * dim + e] += g[n * dim + e];
                    }
                }
                put(b, *out, &o);
            }
        }
    }
}

/// Fills every F32 buffer with values uniform in [-scale, scale) and every
/// I32 buffer with values below `int_below`.
pub fn randomize(p: &KernelProgram, b: &mut ProgramBuffers, seed: u64, scale: f32, int_below: u64) {
    let mut r = SplitMix64::new(seed);
    for (i, buf) in p.buffers.iter().enumerate() {
        let id = BufId(i);
        match buf.dtype {
            DType::F32 => {
                for x in b.f32_mut(id).expect("F32") {
                    *x = r.symmetric_f32() * scale;
                }
            }
            DType::I32 => {
                for x in b.i32_mut(id).expect("I32") {
                    *x = r.below(int_below) as i32;
                }
            }
        }
    }
}

/// Largest |got − want| over the buffer, relative to the larger of `floor`
/// and the buffer's largest |want|; with the position of the worst element.
pub fn max_rel_err(got: &[f32], want: &[f32], floor: f64) -> (f64, usize) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(floor, |m, &w| m.max((w as f64).abs()));
    let mut worst = (0.0, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w as f64).abs() / scale;
        let e = if e.is_nan() { f64::INFINITY } else { e };
        if e > worst.0 {
            worst = (e, i);
        }
    }
    worst
}
