//! The optimizer step as graph ops: global-norm clipping, AdamW with bias
//! correction and decoupled weight decay, and nGPT's renormalisation.

use super::GradError;
use crate::graph::*;
use crate::plan::{ParamSpec, TrainConfig, UnitNorm};

/// The `Lr` input for global step `step` (0-based): the peak rate times the
/// schedule's multiplier (re-warms after growth are the runtime's to apply on
/// top). The `Step` input of that step is `step + 1`.
pub fn learning_rate(train: &TrainConfig, step: u64) -> f64 {
    train.optimizer.lr * train.schedule.multiplier(step)
}

/// Added to the global gradient norm before dividing by it (as PyTorch's `clip_grad_norm_`).
const CLIP_EPS: f64 = 1e-6;

fn bin(g: &mut Graph, op: BinaryOp, a: TensorId, b: TensorId) -> Result<TensorId, GradError> {
    Ok(g.add1(Op::Binary(op), vec![a, b])?)
}

fn un(g: &mut Graph, op: UnaryOp, x: TensorId) -> Result<TensorId, GradError> {
    Ok(g.add1(Op::Unary(op), vec![x])?)
}

/// `√(Σᵢ ‖gradᵢ‖²)`, the per-tensor sums added pairwise: a balanced tree
/// keeps the fused expression shallow however many parameters there are.
fn global_norm(g: &mut Graph, grads: &[TensorId]) -> Result<TensorId, GradError> {
    let mut partial = vec![];
    for &d in grads {
        let sq = bin(g, BinaryOp::Mul, d, d)?;
        let s = g.add1(
            Op::Reduce {
                op: ReduceOp::Sum,
                shape: vec![],
            },
            vec![sq],
        )?;
        partial.push(s);
    }
    while partial.len() > 1 {
        let mut next = vec![];
        for pair in partial.chunks(2) {
            next.push(match pair {
                [a, b] => bin(g, BinaryOp::Add, *a, *b)?,
                _ => pair[0],
            });
        }
        partial = next;
    }
    let total = match partial.pop() {
        Some(t) => t,
        None => g.constant(0.0),
    };
    un(g, UnaryOp::Sqrt, total)
}

/// Appends one AdamW step to a graph that has `Grad` outputs. New inputs:
/// `Lr` (this step's learning rate, peak × schedule multiplier, computed by
/// the runtime so schedules and re-warms stay a runtime concern), `Step`
/// (1-based), and the moments `AdamM(i)`, `AdamV(i)`. New outputs: the updated
/// `Param(i)`, `AdamM(i)`, `AdamV(i)`, and the global gradient norm `GradNorm`
/// (computed with clipping off too, so that logging it reads one scalar
/// instead of every gradient).
pub fn append_adamw(
    g: &mut Graph,
    specs: &[ParamSpec],
    train: &TrainConfig,
) -> Result<(), GradError> {
    let mismatch = mismatch(specs, g);
    if specs.len() != g.params.len() || specs.iter().zip(&g.params).any(|(s, p)| s.shape != p.shape)
    {
        return Err(mismatch);
    }
    let grads = (0..specs.len())
        .map(|i| g.output(Output::Grad(i)))
        .collect::<Option<Vec<_>>>()
        .ok_or(mismatch)?;
    adamw(g, specs, train, &grads)
}

/// The optimizer step alone: a graph whose inputs are every parameter with
/// its moments and its gradient (`Grad(i)`), `Lr` and `Step`, and whose
/// outputs are [`append_adamw`]'s. The second half of a data-parallel
/// step, applied to the gradients summed over every rank.
pub fn adamw_graph(specs: &[ParamSpec], train: &TrainConfig) -> Result<Graph, GradError> {
    let mut g = Graph {
        params: specs
            .iter()
            .map(|s| ParamInfo {
                name: s.name.clone(),
                shape: s.shape.clone(),
            })
            .collect(),
        ..Graph::default()
    };
    let mut grads = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        g.add_input(Input::Param(i), s.shape.clone(), DType::F32);
        grads.push(g.add_input(Input::Grad(i), s.shape.clone(), DType::F32));
    }
    adamw(&mut g, specs, train, &grads)?;
    Ok(g)
}

fn mismatch(specs: &[ParamSpec], g: &Graph) -> GradError {
    GradError::ParamMismatch {
        specs: specs.len(),
        params: g.params.len(),
    }
}

/// Clipping and AdamW of every parameter of `g` from its gradient `grads[i]`.
fn adamw(
    g: &mut Graph,
    specs: &[ParamSpec],
    train: &TrainConfig,
    grads: &[TensorId],
) -> Result<(), GradError> {
    let err = mismatch(specs, g);
    let opt = &train.optimizer;
    let lr = g.add_input(Input::Lr, vec![], DType::F32);
    let step = g.add_input(Input::Step, vec![], DType::F32);
    let one = g.constant(1.0);

    let norm = global_norm(g, grads)?;
    g.set_label(norm, "grad_norm");
    g.outputs.push((Output::GradNorm, norm));

    let clip_factor = match train.clip {
        Some(clip) => {
            let eps = g.constant(CLIP_EPS);
            let den = bin(g, BinaryOp::Add, norm, eps)?;
            let c = g.constant(clip);
            let f = bin(g, BinaryOp::Div, c, den)?;
            let f = bin(g, BinaryOp::Min, one, f)?;
            g.set_label(f, "clip_factor");
            Some(f)
        }
        None => None,
    };

    // 1 − βᵗ = 1 − exp(t · ln β), with t the runtime step.
    let bias_correction = |g: &mut Graph, beta: f64| -> Result<TensorId, GradError> {
        let ln = g.constant(beta.ln());
        let t = bin(g, BinaryOp::Mul, step, ln)?;
        let pow = un(g, UnaryOp::Exp, t)?;
        bin(g, BinaryOp::Sub, one, pow)
    };
    let bc1 = bias_correction(g, opt.beta1)?;
    let bc2 = bias_correction(g, opt.beta2)?;
    let step_size = bin(g, BinaryOp::Div, lr, bc1)?;
    g.set_label(step_size, "adam_step_size");
    let sqrt_bc2 = un(g, UnaryOp::Sqrt, bc2)?;
    let v_scale = bin(g, BinaryOp::Div, one, sqrt_bc2)?;
    g.set_label(v_scale, "adam_v_scale");
    let decays = specs.iter().any(|s| s.weight_decay) && opt.weight_decay != 0.0;
    let decay = if decays {
        let wd = g.constant(opt.weight_decay);
        let t = bin(g, BinaryOp::Mul, lr, wd)?;
        let d = bin(g, BinaryOp::Sub, one, t)?;
        g.set_label(d, "weight_decay_factor");
        Some(d)
    } else {
        None
    };
    let b1 = g.constant(opt.beta1);
    let nb1 = g.constant(1.0 - opt.beta1);
    let b2 = g.constant(opt.beta2);
    let nb2 = g.constant(1.0 - opt.beta2);
    let eps = g.constant(opt.eps);

    for (i, spec) in specs.iter().enumerate() {
        let p = g.input(Input::Param(i)).ok_or_else(|| err.clone())?;
        let m = g.add_input(Input::AdamM(i), spec.shape.clone(), DType::F32);
        let v = g.add_input(Input::AdamV(i), spec.shape.clone(), DType::F32);
        let d = match clip_factor {
            Some(f) => bin(g, BinaryOp::Mul, grads[i], f)?,
            None => grads[i],
        };
        let m_old = bin(g, BinaryOp::Mul, m, b1)?;
        let m_new = bin(g, BinaryOp::Mul, d, nb1)?;
        let m2 = bin(g, BinaryOp::Add, m_old, m_new)?;
        let v_old = bin(g, BinaryOp::Mul, v, b2)?;
        let d2 = bin(g, BinaryOp::Mul, d, d)?;
        let v_new = bin(g, BinaryOp::Mul, d2, nb2)?;
        let v2 = bin(g, BinaryOp::Add, v_old, v_new)?;
        // p ← p·(1 − lr·wd) − lr/bc1 · m / (√v / √bc2 + eps)
        let rv = un(g, UnaryOp::Sqrt, v2)?;
        let rv = bin(g, BinaryOp::Mul, rv, v_scale)?;
        let den = bin(g, BinaryOp::Add, rv, eps)?;
        let upd = bin(g, BinaryOp::Div, m2, den)?;
        let upd = bin(g, BinaryOp::Mul, upd, step_size)?;
        let p0 = match decay {
            Some(f) if spec.weight_decay => bin(g, BinaryOp::Mul, p, f)?,
            _ => p,
        };
        let mut p2 = bin(g, BinaryOp::Sub, p0, upd)?;
        if let Some(unit) = spec.unit_norm {
            let axis = match unit {
                UnitNorm::Rows => spec.shape.len().saturating_sub(1),
                UnitNorm::Cols => 0,
            };
            p2 = g.add1(Op::L2Norm { axis }, vec![p2])?;
        }
        g.outputs.push((Output::Param(i), p2));
        g.outputs.push((Output::AdamM(i), m2));
        g.outputs.push((Output::AdamV(i), v2));
    }
    g.prune();
    Ok(())
}
