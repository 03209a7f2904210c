//! One stage end to end: model → forward graph → with gradients and the
//! optimizer step → kernels. What `gsc compile --emit=ir|ir-grad|kernels` shows.

use crate::grad::{adamw_graph, append_adamw, differentiate, GradError};
use crate::graph::{build_forward_gated, render_graph, Gates, Graph, GraphError};
use crate::kernel::{self, lower, Kernel, KernelProgram, LowerError};
use crate::plan::{ModelConfig, Precision, TrainConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompiledStage {
    /// Forward only: loss and logits.
    pub forward: Graph,
    /// Forward, backward and one AdamW step.
    pub with_grad: Graph,
    /// The training step as kernels (`with_grad` lowered).
    pub kernels: KernelProgram,
    /// The forward as kernels: evaluation and growth-preservation checks.
    pub forward_kernels: KernelProgram,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Grad(#[from] GradError),
    #[error(transparent)]
    Lower(#[from] LowerError),
}

/// Compiles one stage of `model` trained with `train` on `batch` sequences.
pub fn compile_stage(
    model: &ModelConfig,
    train: &TrainConfig,
    batch: usize,
) -> Result<CompiledStage, CompileError> {
    compile_stage_gated(model, train, batch, Gates::default())
}

/// [`compile_stage`] for a stage with `gates` (units growing in by a ramp):
/// both programs read the gates from `HeadGate` / `FfnGate` buffers.
pub fn compile_stage_gated(
    model: &ModelConfig,
    train: &TrainConfig,
    batch: usize,
    gates: Gates,
) -> Result<CompiledStage, CompileError> {
    let forward = build_forward_gated(model, batch, gates)?;
    let mut with_grad = differentiate(&forward)?;
    append_adamw(&mut with_grad, &model.params(), train)?;
    let kernels = lower_in(&with_grad, train.precision)?;
    let forward_kernels = lower_in(&forward, train.precision)?;
    Ok(CompiledStage {
        forward,
        with_grad,
        kernels,
        forward_kernels,
    })
}

/// A training step cut in two for data parallelism: each rank runs
/// `grads` on its share of the batch, the ranks sum the gradients, and
/// each runs `update` on the sums. Together they compute what the fused
/// step does; apart, the gradients pass through memory between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitStep {
    /// Forward and backward on `batch` sequences: `Loss` and every `Grad(i)`.
    pub grads: KernelProgram,
    /// Clipping and AdamW from the `Grad(i)` buffers: `GradNorm`, and the
    /// parameters and moments updated in place.
    pub update: KernelProgram,
}

/// The step of `model` on `batch` sequences (one rank's share), split (see
/// [`SplitStep`]).
pub fn compile_split_step(
    model: &ModelConfig,
    train: &TrainConfig,
    batch: usize,
    gates: Gates,
) -> Result<SplitStep, CompileError> {
    let grads = differentiate(&build_forward_gated(model, batch, gates)?)?;
    let update = adamw_graph(&model.params(), train)?;
    Ok(SplitStep {
        grads: lower_in(&grads, train.precision)?,
        update: lower(&update)?,
    })
}

/// Lowers `g`, its matrix products multiplying in `precision`.
fn lower_in(g: &Graph, precision: Precision) -> Result<KernelProgram, LowerError> {
    let mut program = lower(g)?;
    if precision == Precision::Bf16 {
        for k in &mut program.kernels {
            if let Kernel::MatMul { bf16, .. } = k {
                *bf16 = true;
            }
        }
    }
    Ok(program)
}

/// `--emit=ir`: the forward graph.
pub fn render_ir(stage: &CompiledStage) -> String {
    render_graph(&stage.forward)
}

/// `--emit=ir-grad`: forward, backward and optimizer step.
pub fn render_ir_grad(stage: &CompiledStage) -> String {
    render_graph(&stage.with_grad)
}

/// `--emit=kernels`: the training step's kernels, their count and the peak planned memory.
pub fn render_kernels(stage: &CompiledStage) -> String {
    kernel::render_kernels(&stage.kernels)
}
