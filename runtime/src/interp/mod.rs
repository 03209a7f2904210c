//! The reference interpreter: kernel IR executed in plain loops, generic over
//! f32 and f64, and a direct evaluator of the graph IR. Slow and obviously
//! right: the oracle every other backend is diffed against.

pub mod float;
pub mod graph_eval;
pub mod kernels;
pub mod library;

pub use float::Float;
pub use graph_eval::{eval_graph, Value};
pub use kernels::{run, train_step, Memory};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    #[error("the program has no buffer for {0}")]
    NoBuffer(String),
    #[error("bad write: {0}")]
    BadWrite(String),
    #[error("index {1} out of bounds of buffer b{0}")]
    OutOfBounds(usize, usize),
    #[error("a token id is outside the vocabulary")]
    BadToken,
    #[error("{0}")]
    Invalid(String),
    #[error("kernel k{0} ({1}): {2}")]
    InKernel(usize, String, Box<InterpError>),
}
