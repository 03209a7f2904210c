//! The model graph IR of one stage and its builder.

pub mod build;
pub mod ir;
pub mod render;

pub use build::{build_forward, build_forward_gated, Gates};
pub use ir::*;
pub use render::render_graph;
