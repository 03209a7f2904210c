//! The gsc compiler: `.gs` source → AST → checks → plan → graph IR → autodiff
//! → fusion → kernel IR.

/// This compiler's identity: its version and a fingerprint of its sources.
/// Artifacts are keyed by it, since two builds with the same version number
/// may lower the same plan to different kernels.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+",
    env!("GSC_COMPILER_FINGERPRINT")
);

pub mod check;
pub mod diag;
pub mod fnv;
pub mod grad;
pub mod graph;
pub mod init;
pub mod kernel;
pub mod plan;
pub mod stage;
pub mod syntax;

pub use check::{check_source, Checked};
pub use stage::{
    compile_split_step, compile_stage, compile_stage_gated, render_ir, render_ir_grad,
    render_kernels, CompileError, CompiledStage, SplitStep,
};
