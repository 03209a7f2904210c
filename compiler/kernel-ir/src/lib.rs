//! The kernel IR and what every backend relies on before it generates code:
//! validation, bounds and integer ranges, the parallel outer loop,
//! store/load overlap, the arena plan and the tabulation of constants. It
//! depends on serde alone, so that a backend (Cranelift, MLIR, CUDA) links
//! none of the front end.

pub mod analysis;
pub mod approx;
pub mod attention;
pub mod bf16;
pub mod entry;
pub mod ir;
pub mod library;
pub mod plan;
pub mod render;
pub mod tabulate;
pub mod validate;

pub use analysis::{analyse, analyse_loop, IntRange, LoopFacts, ProgramFacts, Rejected};
pub use entry::{Entry, BLOCK};
pub use ir::*;
pub use plan::plan_arena;
pub use render::{render_kernel, render_kernels};
pub use validate::{validate, InvalidProgram};
