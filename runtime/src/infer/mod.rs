//! Inference on the CPU: a checkpoint's model run one token at a time with a
//! KV cache (`gsc generate`), and sampling from its logits.
//!
//! This is a second implementation of the forward pass of
//! `gsc_compiler::graph::build_forward`, in f32 and shaped for decoding
//! (matrix–vector products, cached keys and values) rather than training
//! (whole batches through fused kernels); the tests hold it to the reference
//! interpreter's logits.

mod decoder;
mod kernels;
mod sample;
mod weights;

pub use decoder::Decoder;
pub use sample::{Sampler, Sampling};
pub use weights::Model;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("token {token} is outside the model's vocabulary of {vocab}")]
    Token { token: u32, vocab: usize },
    #[error("the KV cache holds {context} positions (the model's context), all in use")]
    Full { context: usize },
}
