//! The gsc runtime: backends that execute kernel IR, the training loop,
//! in-place growth, data and checkpoints.

pub mod buffers;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod interp;
pub mod rng;

#[cfg(test)]
mod test_util;
