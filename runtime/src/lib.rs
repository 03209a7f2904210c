//! The gsc runtime: backends that execute kernel IR, the training loop,
//! in-place growth, data and checkpoints.

pub mod interp;
