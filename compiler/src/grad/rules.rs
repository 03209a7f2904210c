//! The backward rule of every op, beside the op's forward meaning (llm.c's
//! `*_forward` / `*_backward` pairs, as graph rewrites instead of loops).

use super::GradError;
use crate::graph::*;

/// `dy` reduced to `shape`: the adjoint of broadcasting.
fn unbroadcast(g: &mut Graph, dy: TensorId, shape: &[usize]) -> Result<TensorId, GradError> {
    if g.shape(dy) == shape {
        return Ok(dy);
    }
    let op = Op::Reduce {
        op: ReduceOp::Sum,
        shape: shape.to_vec(),
    };
    Ok(g.add1(op, vec![dy])?)
}

fn bin(g: &mut Graph, op: BinaryOp, a: TensorId, b: TensorId) -> Result<TensorId, GradError> {
    Ok(g.add1(Op::Binary(op), vec![a, b])?)
}

fn un(g: &mut Graph, op: UnaryOp, x: TensorId) -> Result<TensorId, GradError> {
    Ok(g.add1(Op::Unary(op), vec![x])?)
}

/// Gradients of `node`'s inputs given its outputs' gradients `dys`; only the
/// inputs marked in `wanted` are computed.
pub fn backward(
    g: &mut Graph,
    node: &Node,
    dys: &[Option<TensorId>],
    wanted: &[bool],
) -> Result<Vec<Option<TensorId>>, GradError> {
    let x = &node.inputs;
    let y = node.outputs[0];
    let Some(dy) = dys[0] else {
        return Ok(vec![None; x.len()]);
    };
    let w = |i: usize| wanted.get(i).copied().unwrap_or(false);
    let mut out: Vec<Option<TensorId>> = vec![None; x.len()];
    let shape = |g: &Graph, i: usize| g.shape(x[i]).to_vec();
    match &node.op {
        Op::Input(_) | Op::Const(_) => {}
        // y[n] = table[ids[n]]  ⇒  dtable[v] = Σ_{n: ids[n] = v} dy[n]
        Op::Embedding => {
            let vocab = g.shape(x[0])[0];
            out[0] = Some(g.add1(Op::EmbeddingBwd { vocab }, vec![x[1], dy])?);
        }
        // C = op(A)·op(B): d op(A) = dC·op(B)ᵀ, d op(B) = op(A)ᵀ·dC
        Op::MatMul { ta, tb } => {
            let (ta, tb) = (*ta, *tb);
            if w(0) {
                out[0] = Some(if ta {
                    g.add1(Op::MatMul { ta: tb, tb: true }, vec![x[1], dy])?
                } else {
                    g.add1(Op::MatMul { ta: false, tb: !tb }, vec![dy, x[1]])?
                });
            }
            if w(1) {
                out[1] = Some(if tb {
                    g.add1(Op::MatMul { ta: true, tb: ta }, vec![dy, x[0]])?
                } else {
                    g.add1(Op::MatMul { ta: !ta, tb: false }, vec![x[0], dy])?
                });
            }
        }
        // The backward reads the forward's output and row log-sum-exps
        // instead of recomputing them.
        Op::Attention(a) => {
            let lse = node.outputs[1];
            let d = g.add(Op::AttentionBwd(*a), vec![x[0], x[1], x[2], y, lse, dy])?;
            out = d.into_iter().map(Some).collect();
        }
        // A rotation's transpose is the rotation by the negative angle.
        Op::Rope(r) => {
            let inv = Rope {
                inverse: !r.inverse,
                ..*r
            };
            out[0] = Some(g.add1(Op::Rope(inv), vec![dy])?);
        }
        Op::Unary(u) => {
            out[0] = Some(match u {
                UnaryOp::Neg => un(g, UnaryOp::Neg, dy)?,
                UnaryOp::Exp => bin(g, BinaryOp::Mul, dy, y)?,
                UnaryOp::Log => bin(g, BinaryOp::Div, dy, x[0])?,
                // d√x = 1 / (2√x)
                UnaryOp::Sqrt => {
                    let half = g.constant(0.5);
                    let h = bin(g, BinaryOp::Div, half, y)?;
                    bin(g, BinaryOp::Mul, dy, h)?
                }
                // d tanh = 1 − tanh²
                UnaryOp::Tanh => {
                    let one = g.constant(1.0);
                    let y2 = bin(g, BinaryOp::Mul, y, y)?;
                    let d = bin(g, BinaryOp::Sub, one, y2)?;
                    bin(g, BinaryOp::Mul, dy, d)?
                }
                UnaryOp::Gelu => bin(g, BinaryOp::GeluBwd, x[0], dy)?,
                UnaryOp::Silu => bin(g, BinaryOp::SiluBwd, x[0], dy)?,
            });
        }
        Op::Binary(b) => {
            let (sa, sb) = (shape(g, 0), shape(g, 1));
            let (da, db) = match b {
                BinaryOp::Add => (Some(dy), Some(dy)),
                BinaryOp::Sub => (
                    Some(dy),
                    if w(1) {
                        Some(un(g, UnaryOp::Neg, dy)?)
                    } else {
                        None
                    },
                ),
                BinaryOp::Mul => (
                    if w(0) {
                        Some(bin(g, BinaryOp::Mul, dy, x[1])?)
                    } else {
                        None
                    },
                    if w(1) {
                        Some(bin(g, BinaryOp::Mul, dy, x[0])?)
                    } else {
                        None
                    },
                ),
                // d(a/b)/db = −a/b² = −y/b
                BinaryOp::Div => (
                    if w(0) {
                        Some(bin(g, BinaryOp::Div, dy, x[1])?)
                    } else {
                        None
                    },
                    if w(1) {
                        let t = bin(g, BinaryOp::Mul, dy, y)?;
                        let t = bin(g, BinaryOp::Div, t, x[1])?;
                        Some(un(g, UnaryOp::Neg, t)?)
                    } else {
                        None
                    },
                ),
                BinaryOp::Max | BinaryOp::Min | BinaryOp::GeluBwd | BinaryOp::SiluBwd => {
                    return Err(GradError::NotDifferentiable(node.op.mnemonic()))
                }
            };
            if w(0) {
                out[0] = da.map(|d| unbroadcast(g, d, &sa)).transpose()?;
            }
            if w(1) {
                out[1] = db.map(|d| unbroadcast(g, d, &sb)).transpose()?;
            }
        }
        Op::Expand { .. } => out[0] = Some(unbroadcast(g, dy, &shape(g, 0))?),
        Op::Reduce {
            op: ReduceOp::Sum, ..
        } => {
            out[0] = Some(g.add1(Op::Expand { shape: shape(g, 0) }, vec![dy])?);
        }
        Op::Reshape { .. } => out[0] = Some(g.add1(Op::Reshape { shape: shape(g, 0) }, vec![dy])?),
        Op::RmsNorm { eps } => out[0] = Some(g.add1(Op::RmsNormBwd { eps: *eps }, vec![x[0], dy])?),
        Op::LayerNorm { eps } => {
            out[0] = Some(g.add1(Op::LayerNormBwd { eps: *eps }, vec![x[0], dy])?)
        }
        Op::L2Norm { axis } => {
            out[0] = Some(g.add1(Op::L2NormBwd { axis: *axis }, vec![x[0], dy])?)
        }
        Op::Softmax => out[0] = Some(g.add1(Op::SoftmaxBwd, vec![y, dy])?),
        Op::CrossEntropy => out[0] = Some(g.add1(Op::CrossEntropyBwd, vec![x[0], x[1], dy])?),
        Op::Reduce {
            op: ReduceOp::Max, ..
        }
        | Op::EmbeddingBwd { .. }
        | Op::AttentionBwd(_)
        | Op::RmsNormBwd { .. }
        | Op::LayerNormBwd { .. }
        | Op::L2NormBwd { .. }
        | Op::SoftmaxBwd
        | Op::CrossEntropyBwd => return Err(GradError::NotDifferentiable(node.op.mnemonic())),
    }
    for (i, o) in out.iter_mut().enumerate() {
        if !w(i) {
            *o = None;
        }
    }
    Ok(out)
}
