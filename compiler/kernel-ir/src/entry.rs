//! How a backend calls one compiled loop kernel: the kernel IR's side of
//! code that a code generator (MLIR → host code, MLIR → PTX) produced, kept
//! in artifacts beside that code.

use crate::ir::BufId;
use serde::{Deserialize, Serialize};

/// Threads per block of every GPU launch of a parallel kernel.
pub const BLOCK: usize = 256;

/// How the runtime calls one emitted kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The kernel's index in its program.
    pub kernel: usize,
    /// The function's symbol.
    pub symbol: String,
    /// On the GPU: the buffers passed as arguments, in order (device
    /// addresses).
    pub args: Vec<BufId>,
    /// The parallel outer loop's extent (on the GPU, one thread each, in
    /// blocks of [`BLOCK`]); `None`: one call (one thread) runs it all.
    pub parallel: Option<usize>,
    /// Innermost iterations of one run (the executor's estimate of whether
    /// splitting it across threads pays).
    pub work: u64,
}
