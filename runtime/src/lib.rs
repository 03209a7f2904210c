//! The gsc runtime: backends that execute kernel IR, the training loop,
//! in-place growth, data and checkpoints.

pub mod fsutil;
pub mod grow;
pub mod machine;
pub mod run;
