//! The CPU backend's hand-tuned building blocks: matrix products and fused
//! causal attention, both parallel over the machine's cores.

pub mod attention;
pub mod matmul;
