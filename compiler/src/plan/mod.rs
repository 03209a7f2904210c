//! The plan: every stage of a schedule with concrete shapes, and the growth
//! steps between them.

pub mod cut;
pub mod model;
pub mod render;
pub mod schedule;
pub mod train;

pub use model::*;
pub use schedule::*;
pub use train::*;
