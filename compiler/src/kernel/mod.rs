//! Fusion: graph → loop kernels and library calls over a planned set of
//! buffers. The kernel IR itself, and the analyses every backend relies on,
//! are the `gsc-kernel-ir` crate, re-exported here.

pub mod fuse;

pub use fuse::{lower, LowerError};
pub use gsc_kernel_ir::*;
