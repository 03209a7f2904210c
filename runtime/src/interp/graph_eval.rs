//! Evaluates the graph IR directly, op by op, each forward rule beside its
//! backward: the check that fusion did not change what the graph means
//! (kernels run by the interpreter must agree with this).

use super::float::Float;
use super::library;
use super::InterpError;
use gsc_compiler::graph::*;
use gsc_compiler::kernel::AttnShape;

/// A tensor's value, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<F> {
    F(Vec<F>),
    I(Vec<i32>),
}

impl<F: Float> Value<F> {
    pub fn floats(&self) -> Option<&[F]> {
        match self {
            Value::F(v) => Some(v),
            Value::I(_) => None,
        }
    }
}

/// Every tensor of `g`, given a value for each input.
pub fn eval_graph<F: Float>(
    g: &Graph,
    mut input: impl FnMut(Input) -> Option<Value<F>>,
) -> Result<Vec<Value<F>>, InterpError> {
    let mut vals: Vec<Value<F>> = Vec::with_capacity(g.tensors.len());
    for node in &g.nodes {
        let f = |i: usize| -> Result<&[F], InterpError> {
            vals[node.inputs[i].0].floats().ok_or_else(|| {
                InterpError::BadWrite(format!("{} wants floats", node.op.mnemonic()))
            })
        };
        let ints = |i: usize| -> Result<&[i32], InterpError> {
            match &vals[node.inputs[i].0] {
                Value::I(v) => Ok(v),
                Value::F(_) => Err(InterpError::BadWrite(format!(
                    "{} wants ints",
                    node.op.mnemonic()
                ))),
            }
        };
        let shape = |i: usize| g.shape(node.inputs[i]);
        let out_shape = g.shape(node.outputs[0]);
        let out: Vec<Value<F>> = match &node.op {
            Op::Input(i) => {
                let v = input(*i).ok_or(InterpError::NoBuffer(format!("{i:?}")))?;
                let len = match &v {
                    Value::F(x) => x.len(),
                    Value::I(x) => x.len(),
                };
                if len != g.tensor(node.outputs[0]).numel() {
                    return Err(InterpError::BadWrite(format!("{i:?} with {len} values")));
                }
                vec![v]
            }
            Op::Const(c) => vec![Value::F(vec![F::from_f64(*c)])],
            Op::Embedding => {
                let (t, ids) = (f(0)?, ints(1)?);
                let (v, d) = (shape(0)[0], shape(0)[1]);
                let mut o = Vec::with_capacity(ids.len() * d);
                for &id in ids {
                    let r = usize::try_from(id)
                        .ok()
                        .filter(|&r| r < v)
                        .ok_or(InterpError::BadToken)?;
                    o.extend_from_slice(&t[r * d..(r + 1) * d]);
                }
                vec![Value::F(o)]
            }
            Op::EmbeddingBwd { vocab } => {
                let d = shape(1)[1];
                let mut o = vec![F::default(); vocab * d];
                library::embedding_bwd(ints(0)?, f(1)?, &mut o, *vocab, d)
                    .ok_or(InterpError::BadToken)?;
                vec![Value::F(o)]
            }
            Op::MatMul { ta, tb } => {
                let (m, n) = (out_shape[0], out_shape[1]);
                let k = if *ta { shape(0)[0] } else { shape(0)[1] };
                let mut o = vec![F::default(); m * n];
                library::matmul(f(0)?, f(1)?, &mut o, m, n, k, *ta, *tb);
                vec![Value::F(o)]
            }
            Op::Attention(a) => {
                let a = attn(a);
                let mut o = vec![F::default(); f(0)?.len()];
                let mut lse = vec![F::default(); a.batch * a.heads * a.seq];
                library::attention(f(0)?, f(1)?, f(2)?, &mut o, &mut lse, &a);
                vec![Value::F(o), Value::F(lse)]
            }
            Op::AttentionBwd(a) => {
                let (q, k, v) = (f(0)?, f(1)?, f(2)?);
                let (mut dq, mut dk, mut dv) = (
                    vec![F::default(); q.len()],
                    vec![F::default(); k.len()],
                    vec![F::default(); v.len()],
                );
                let (o, lse, dy) = (f(3)?, f(4)?, f(5)?);
                library::attention_bwd(q, k, v, o, lse, dy, &mut dq, &mut dk, &mut dv, &attn(a));
                vec![Value::F(dq), Value::F(dk), Value::F(dv)]
            }
            Op::Rope(r) => vec![Value::F(rope(f(0)?, shape(0), r))],
            Op::Unary(u) => vec![Value::F(f(0)?.iter().map(|&x| unary(*u, x)).collect())],
            Op::Binary(b) => {
                let (ma, mb) = (
                    bcast_map(out_shape, shape(0)),
                    bcast_map(out_shape, shape(1)),
                );
                let (a, c) = (f(0)?, f(1)?);
                vec![Value::F(
                    (0..ma.len())
                        .map(|i| binary(*b, a[ma[i]], c[mb[i]]))
                        .collect(),
                )]
            }
            Op::Expand { shape: s } => {
                let map = bcast_map(s, shape(0));
                let x = f(0)?;
                vec![Value::F(map.iter().map(|&i| x[i]).collect())]
            }
            Op::Reduce { op, shape: s } => {
                let map = bcast_map(shape(0), s);
                let n: usize = s.iter().product();
                let init = match op {
                    ReduceOp::Sum => F::default(),
                    ReduceOp::Max => F::from_f64(f64::NEG_INFINITY),
                };
                let mut o = vec![init; n];
                for (i, &x) in f(0)?.iter().enumerate() {
                    o[map[i]] = match op {
                        ReduceOp::Sum => o[map[i]] + x,
                        ReduceOp::Max => o[map[i]].max(x),
                    };
                }
                vec![Value::F(o)]
            }
            Op::Reshape { .. } => vec![vals[node.inputs[0].0].clone()],
            Op::RmsNorm { eps } => vec![Value::F(rows(f(0)?, last(shape(0)), |x, o| {
                rmsnorm(x, o, *eps)
            }))],
            Op::RmsNormBwd { eps } => {
                vec![Value::F(rows2(f(0)?, f(1)?, last(shape(0)), |x, dy, o| {
                    rmsnorm_bwd(x, dy, o, *eps)
                }))]
            }
            Op::LayerNorm { eps } => vec![Value::F(rows(f(0)?, last(shape(0)), |x, o| {
                layernorm(x, o, *eps)
            }))],
            Op::LayerNormBwd { eps } => {
                vec![Value::F(rows2(f(0)?, f(1)?, last(shape(0)), |x, dy, o| {
                    layernorm_bwd(x, dy, o, *eps)
                }))]
            }
            Op::L2Norm { axis } => vec![Value::F(along(shape(0), *axis, f(0)?, None, l2norm))],
            Op::L2NormBwd { axis } => vec![Value::F(along(
                shape(0),
                *axis,
                f(0)?,
                Some(f(1)?),
                l2norm_bwd,
            ))],
            Op::Softmax => vec![Value::F(rows(f(0)?, last(shape(0)), softmax))],
            Op::SoftmaxBwd => vec![Value::F(rows2(f(0)?, f(1)?, last(shape(0)), softmax_bwd))],
            Op::CrossEntropy => {
                let (l, t) = (f(0)?, ints(1)?);
                let v = shape(0)[1];
                let mut total = F::default();
                for (n, &tg) in t.iter().enumerate() {
                    let row = &l[n * v..(n + 1) * v];
                    let tg = usize::try_from(tg)
                        .ok()
                        .filter(|&x| x < v)
                        .ok_or(InterpError::BadToken)?;
                    total += logsumexp(row) - row[tg];
                }
                vec![Value::F(vec![total / F::from_f64(t.len() as f64)])]
            }
            Op::CrossEntropyBwd => {
                let (l, t, d) = (f(0)?, ints(1)?, f(2)?[0]);
                let v = shape(0)[1];
                let scale = d / F::from_f64(t.len() as f64);
                let mut o = vec![F::default(); l.len()];
                for (n, &tg) in t.iter().enumerate() {
                    let row = &l[n * v..(n + 1) * v];
                    let lse = logsumexp(row);
                    for j in 0..v {
                        let onehot = if j as i32 == tg { 1.0 } else { 0.0 };
                        o[n * v + j] = ((row[j] - lse).exp() - F::from_f64(onehot)) * scale;
                    }
                }
                vec![Value::F(o)]
            }
        };
        vals.extend(out);
    }
    Ok(vals)
}

fn attn(a: &Attn) -> AttnShape {
    AttnShape {
        batch: a.batch,
        seq: a.seq,
        heads: a.heads,
        kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        scale: a.scale,
    }
}

fn last(s: &[usize]) -> usize {
    s.last().copied().unwrap_or(1)
}

/// For each flat index of `big`, the flat index of `small` it reads when
/// `small` is broadcast to `big`.
fn bcast_map(big: &[usize], small: &[usize]) -> Vec<usize> {
    let n: usize = big.iter().product();
    let lead = big.len() - small.len();
    (0..n)
        .map(|mut i| {
            let mut coords = vec![0; big.len()];
            for d in (0..big.len()).rev() {
                coords[d] = i % big[d];
                i /= big[d];
            }
            let mut j = 0;
            for d in 0..small.len() {
                let c = if small[d] == 1 { 0 } else { coords[d + lead] };
                j = j * small[d] + c;
            }
            j
        })
        .collect()
}

const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_K: f64 = 0.044715;

fn sigmoid<F: Float>(x: F) -> F {
    F::from_f64(1.0) / (F::from_f64(1.0) + (-x).exp())
}

fn unary<F: Float>(u: UnaryOp, x: F) -> F {
    let c = F::from_f64;
    match u {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Gelu => c(0.5) * x * (c(1.0) + (c(GELU_C) * (x + c(GELU_K) * x * x * x)).tanh()),
        UnaryOp::Silu => x * sigmoid(x),
    }
}

fn binary<F: Float>(b: BinaryOp, x: F, y: F) -> F {
    let c = F::from_f64;
    match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::GeluBwd => {
            let t = (c(GELU_C) * (x + c(GELU_K) * x * x * x)).tanh();
            let d = c(0.5) * (c(1.0) + t)
                + c(0.5) * x * (c(1.0) - t * t) * c(GELU_C) * (c(1.0) + c(3.0 * GELU_K) * x * x);
            y * d
        }
        BinaryOp::SiluBwd => {
            let s = sigmoid(x);
            y * s * (c(1.0) + x * (c(1.0) - s))
        }
    }
}

fn rows<F: Float>(x: &[F], d: usize, f: impl Fn(&[F], &mut [F])) -> Vec<F> {
    let mut o = vec![F::default(); x.len()];
    for (xr, or) in x.chunks(d).zip(o.chunks_mut(d)) {
        f(xr, or);
    }
    o
}

fn rows2<F: Float>(x: &[F], y: &[F], d: usize, f: impl Fn(&[F], &[F], &mut [F])) -> Vec<F> {
    let mut o = vec![F::default(); x.len()];
    for ((xr, yr), or) in x.chunks(d).zip(y.chunks(d)).zip(o.chunks_mut(d)) {
        f(xr, yr, or);
    }
    o
}

fn sum<F: Float>(it: impl Iterator<Item = F>) -> F {
    let mut s = F::default();
    for x in it {
        s += x;
    }
    s
}

fn rmsnorm<F: Float>(x: &[F], o: &mut [F], eps: f64) {
    let n = F::from_f64(x.len() as f64);
    let r = F::from_f64(1.0) / (sum(x.iter().map(|&v| v * v)) / n + F::from_f64(eps)).sqrt();
    for (o, &v) in o.iter_mut().zip(x) {
        *o = v * r;
    }
}

fn rmsnorm_bwd<F: Float>(x: &[F], dy: &[F], o: &mut [F], eps: f64) {
    let n = F::from_f64(x.len() as f64);
    let r = F::from_f64(1.0) / (sum(x.iter().map(|&v| v * v)) / n + F::from_f64(eps)).sqrt();
    let dot = sum(x.iter().zip(dy).map(|(&a, &b)| a * b));
    for i in 0..x.len() {
        o[i] = r * dy[i] - r * r * r * x[i] * dot / n;
    }
}

fn ln_stats<F: Float>(x: &[F], eps: f64) -> (F, F) {
    let n = F::from_f64(x.len() as f64);
    let mean = sum(x.iter().copied()) / n;
    let var = sum(x.iter().map(|&v| (v - mean) * (v - mean))) / n;
    (mean, F::from_f64(1.0) / (var + F::from_f64(eps)).sqrt())
}

fn layernorm<F: Float>(x: &[F], o: &mut [F], eps: f64) {
    let (mean, r) = ln_stats(x, eps);
    for (o, &v) in o.iter_mut().zip(x) {
        *o = (v - mean) * r;
    }
}

fn layernorm_bwd<F: Float>(x: &[F], dy: &[F], o: &mut [F], eps: f64) {
    let n = F::from_f64(x.len() as f64);
    let (mean, r) = ln_stats(x, eps);
    let xh: Vec<F> = x.iter().map(|&v| (v - mean) * r).collect();
    let mdy = sum(dy.iter().copied()) / n;
    let mdyx = sum(dy.iter().zip(&xh).map(|(&a, &b)| a * b)) / n;
    for i in 0..x.len() {
        o[i] = r * (dy[i] - mdy - xh[i] * mdyx);
    }
}

/// Applies `f` to every vector along `axis` (gathered into a contiguous row).
fn along<F: Float>(
    shape: &[usize],
    axis: usize,
    x: &[F],
    dy: Option<&[F]>,
    f: fn(&[F], &[F], &mut [F]),
) -> Vec<F> {
    let n = shape[axis];
    let post: usize = shape[axis + 1..].iter().product();
    let pre: usize = shape[..axis].iter().product();
    let mut o = vec![F::default(); x.len()];
    for p in 0..pre {
        for q in 0..post {
            let at = |k: usize| (p * n + k) * post + q;
            let xr: Vec<F> = (0..n).map(|k| x[at(k)]).collect();
            let dr: Vec<F> = dy
                .map(|d| (0..n).map(|k| d[at(k)]).collect())
                .unwrap_or_default();
            let mut or = vec![F::default(); n];
            f(&xr, &dr, &mut or);
            for k in 0..n {
                o[at(k)] = or[k];
            }
        }
    }
    o
}

fn l2norm<F: Float>(x: &[F], _: &[F], o: &mut [F]) {
    let inv = F::from_f64(1.0) / sum(x.iter().map(|&v| v * v)).sqrt();
    for (o, &v) in o.iter_mut().zip(x) {
        *o = v * inv;
    }
}

fn l2norm_bwd<F: Float>(x: &[F], dy: &[F], o: &mut [F]) {
    let inv = F::from_f64(1.0) / sum(x.iter().map(|&v| v * v)).sqrt();
    let dot = sum(x.iter().zip(dy).map(|(&a, &b)| a * b));
    for i in 0..x.len() {
        o[i] = dy[i] * inv - x[i] * inv * inv * inv * dot;
    }
}

fn logsumexp<F: Float>(x: &[F]) -> F {
    let m = x.iter().copied().fold(x[0], F::max);
    m + sum(x.iter().map(|&v| (v - m).exp())).ln()
}

fn softmax<F: Float>(x: &[F], o: &mut [F]) {
    let lse = logsumexp(x);
    for (o, &v) in o.iter_mut().zip(x) {
        *o = (v - lse).exp();
    }
}

fn softmax_bwd<F: Float>(y: &[F], dy: &[F], o: &mut [F]) {
    let dot = sum(y.iter().zip(dy).map(|(&a, &b)| a * b));
    for i in 0..y.len() {
        o[i] = y[i] * (dy[i] - dot);
    }
}

/// Rotate-half RoPE on `[tokens, heads, head_dim]`, position = token mod seq.
fn rope<F: Float>(x: &[F], shape: &[usize], r: &Rope) -> Vec<F> {
    let (n, h, dk) = (shape[0], shape[1], shape[2]);
    let half = dk / 2;
    let dir = if r.inverse { -1.0 } else { 1.0 };
    let mut o = vec![F::default(); x.len()];
    for t in 0..n {
        let pos = (t % r.seq) as f64;
        for hh in 0..h {
            let base = (t * h + hh) * dk;
            for j in 0..half {
                let theta = pos * r.base.powf(-2.0 * j as f64 / dk as f64);
                let (c, s) = (F::from_f64(theta.cos()), F::from_f64(dir * theta.sin()));
                let (a, b) = (x[base + j], x[base + j + half]);
                o[base + j] = a * c - b * s;
                o[base + j + half] = b * c + a * s;
            }
        }
    }
    o
}
