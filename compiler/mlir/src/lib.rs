//! gsc's MLIR lowering of the kernel IR (cargo feature `mlir` of the
//! workspace): loop kernels become `scf`/`arith`/`math`/`memref` functions,
//! lowered in named phases either to LLVM and JIT-compiled for the host
//! (`gsc run --backend mlir`) or through the `gpu` and NVVM dialects to PTX
//! for NVIDIA GPUs (`gsc compile --target cuda --emit=ptx`).
//!
//! Matrix products are not lowered here: each backend runs them with its
//! tuned library (the CPU's GEMM; cuBLAS on a GPU). On the CPU, attention
//! is the runtime's flash attention too; for a GPU, attention and the
//! embedding gradient are rewritten into products and loop kernels first
//! (`gsc_kernel_ir::library::for_gpu`), and those loop kernels go to PTX.

pub mod cpu;
pub mod emit;
pub mod math;
pub mod pipeline;
pub mod ptx;

pub use cpu::{compile_cpu, CpuKernels};
pub use emit::{symbol, Entry, Target, BLOCK};
pub use pipeline::{PhaseError, Timings};
pub use ptx::{compile_ptx, CudaOptions, PtxModule};

use gsc_kernel_ir::KernelProgram;

/// The LLVM/MLIR this crate links, e.g. `22.1.3`: stored PTX is keyed by it.
pub const LLVM_VERSION: &str = env!("GSC_LLVM_VERSION");

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MlirError {
    #[error("the kernel program is rejected: {0}")]
    Rejected(#[from] gsc_kernel_ir::Rejected),
    #[error(transparent)]
    Emit(#[from] emit::EmitError),
    #[error(transparent)]
    Phase(#[from] PhaseError),
    #[error("MLIR's ExecutionEngine: {0}")]
    Engine(String),
    #[error("{0}")]
    Toolkit(String),
}

/// The canonical kernel-level pipeline every target starts with.
const TIDY: &str = "builtin.module(canonicalize, cse)";

/// The first phases of every target: analyse `program`, emit its loop
/// kernels for `target` (those `include` accepts; `label` names its dump
/// files), parse, verify and canonicalise them; then `rest` runs the
/// target's own phases on the module.
fn lower<T>(
    program: &KernelProgram,
    target: Target,
    (include, label): (&dyn Fn(usize) -> bool, &str),
    rest: impl FnOnce(&pipeline::Session, &mut melior::ir::Module, Vec<Entry>) -> Result<T, MlirError>,
) -> Result<T, MlirError> {
    let start = std::time::Instant::now();
    // A GPU has no library but matrix products: the embedding gradient and
    // attention become loop kernels (and products).
    let rewritten;
    let program = match target {
        Target::Cuda => {
            rewritten = gsc_kernel_ir::library::for_gpu(program);
            &rewritten
        }
        Target::Cpu => program,
    };
    let facts = gsc_kernel_ir::analyse(program)?;
    let emitted = emit::emit(program, &facts, target, include)?;
    let session = pipeline::Session::new(emitted.text).labelled(label.to_string());
    session.time("emit", start.elapsed());
    let mut module = session.parse()?;
    session.phase("canonicalize", TIDY, &mut module)?;
    rest(&session, &mut module, emitted.entries)
}

/// The loop kernels of `program` as MLIR for `target`, parsed, verified
/// and canonicalised: what `gsc compile --emit=mlir` prints.
pub fn kernel_mlir(program: &KernelProgram, target: Target) -> Result<String, MlirError> {
    lower(program, target, (&|_| true, ""), |_, module, _| {
        Ok(module.as_operation().to_string())
    })
}
