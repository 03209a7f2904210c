//! Autodiff at compile time: a pass that appends the backward ops of a
//! forward graph, and a pass that appends the optimizer step.

pub mod adamw;
pub mod rules;

pub use adamw::{adamw_graph, append_adamw, learning_rate};

use crate::graph::*;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GradError {
    #[error("the graph has no loss output")]
    NoLoss,
    #[error("`{0}` has no backward rule")]
    NotDifferentiable(&'static str),
    #[error("the optimizer was given {specs} parameter specs for a graph of {params} parameters")]
    ParamMismatch { specs: usize, params: usize },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// `fwd` with the backward ops of its scalar `Loss` appended, and the
/// gradient of every parameter added as a `Grad` output (zeros where a
/// parameter does not reach the loss).
pub fn differentiate(fwd: &Graph) -> Result<Graph, GradError> {
    let mut g = fwd.clone();
    let loss = g.output(Output::Loss).ok_or(GradError::NoLoss)?;
    // Which tensors depend on a parameter: only those get gradients.
    let mut needs = vec![false; g.tensors.len()];
    for node in &g.nodes {
        let from_param = match node.op {
            Op::Input(Input::Param(_)) => true,
            _ => node.inputs.iter().any(|t| needs[t.0]),
        };
        for t in &node.outputs {
            needs[t.0] = from_param && g.tensor(*t).dtype == DType::F32;
        }
    }
    let mut grads: Vec<Option<TensorId>> = vec![None; g.tensors.len()];
    grads[loss.0] = Some(g.constant(1.0));
    for ni in (0..fwd.nodes.len()).rev() {
        let node = g.nodes[ni].clone();
        let dys: Vec<Option<TensorId>> = node.outputs.iter().map(|t| grads[t.0]).collect();
        let wanted: Vec<bool> = node.inputs.iter().map(|t| needs[t.0]).collect();
        if dys.iter().all(Option::is_none) || !wanted.contains(&true) {
            continue;
        }
        let dxs = rules::backward(&mut g, &node, &dys, &wanted)?;
        grads.resize(g.tensors.len(), None);
        for (x, dx) in node.inputs.iter().zip(dxs) {
            let Some(dx) = dx else { continue };
            grads[x.0] = Some(match grads[x.0] {
                Some(acc) => accumulate(&mut g, acc, dx)?,
                None => dx,
            });
        }
    }
    for i in 0..g.params.len() {
        let p = g.input(Input::Param(i)).ok_or(GradError::ParamMismatch {
            specs: g.params.len(),
            params: i,
        })?;
        let grad = match grads[p.0] {
            Some(d) => d,
            None => {
                let zero = g.constant(0.0);
                let shape = g.shape(p).to_vec();
                g.add1(Op::Expand { shape }, vec![zero])?
            }
        };
        // Every output needs storage of its own: two parameters can share a
        // gradient tensor (`a + b`), so the second gets a copy.
        let taken = g.outputs.iter().any(|(_, t)| *t == grad)
            || matches!(g.producer(grad).op, Op::Input(_));
        let grad = if taken {
            let shape = g.shape(grad).to_vec();
            g.add1(Op::Expand { shape }, vec![grad])?
        } else {
            grad
        };
        g.outputs.push((Output::Grad(i), grad));
    }
    g.prune();
    Ok(g)
}

/// `acc + dx`, as a subtraction where one side is a negation (the `Sub`
/// rule's `−dy`), which `prune` then drops.
fn accumulate(g: &mut Graph, acc: TensorId, dx: TensorId) -> Result<TensorId, GradError> {
    let negated = |g: &Graph, t: TensorId| match g.producer(t).op {
        Op::Unary(UnaryOp::Neg) => Some(g.producer(t).inputs[0]),
        _ => None,
    };
    let (op, a, b) = match (negated(g, acc), negated(g, dx)) {
        (_, Some(x)) => (BinaryOp::Sub, acc, x),
        (Some(x), None) => (BinaryOp::Sub, dx, x),
        (None, None) => (BinaryOp::Add, acc, dx),
    };
    Ok(g.add1(Op::Binary(op), vec![a, b])?)
}
