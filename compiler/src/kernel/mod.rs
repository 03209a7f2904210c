//! Fusion and the kernel IR: graph → loop kernels and library calls over a
//! planned set of buffers.

pub mod fuse;
pub mod ir;
pub mod plan;
pub mod render;
pub mod validate;

pub use fuse::{lower, LowerError};
pub use ir::*;
pub use render::render_kernels;
pub use validate::{validate, InvalidProgram};
