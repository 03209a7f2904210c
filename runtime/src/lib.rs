//! The gsc runtime: backends that execute kernel IR, the training loop,
//! in-place growth, data and checkpoints.

/// This runtime's identity: its version and a fingerprint of its sources.
/// A run directory records it: the same kernels lowered by another build of
/// the JIT may round differently, so a resume with another build is not
/// bit-exact.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+",
    env!("GSC_RUNTIME_FINGERPRINT")
);

pub mod backend;
pub mod buffers;
pub mod checkpoint;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod dist;
pub mod fsutil;
pub mod grow;
pub mod infer;
pub mod interp;
pub mod machine;
pub mod rng;
pub mod run;
pub mod tokenizer;
pub mod workloads;

#[cfg(test)]
mod test_util;
