//! The gsc runtime: backends that execute kernel IR, the training loop,
//! in-place growth, data and checkpoints.

pub mod backend;
pub mod buffers;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod fsutil;
pub mod grow;
pub mod interp;
pub mod machine;
pub mod rng;
pub mod run;
pub mod workloads;

#[cfg(test)]
mod test_util;
