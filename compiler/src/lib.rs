//! The gsc compiler: `.gs` source → AST → checks → plan → graph IR → autodiff
//! → fusion → kernel IR.

pub mod grad;
pub mod graph;
pub mod init;
pub mod kernel;
pub mod plan;
pub mod stage;

pub use stage::{
    compile_stage, render_ir, render_ir_grad, render_kernels, CompileError, CompiledStage,
};
