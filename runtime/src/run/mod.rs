//! Running a plan: the run directory, metrics, and (with a backend) training.

pub mod artifact;
pub mod dir;
pub mod interrupt;
pub mod train;
