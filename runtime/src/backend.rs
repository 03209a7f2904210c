//! What the training loop needs of a backend: a compiled program bound to
//! its buffers, which it can fill, run, and read back. The reference
//! interpreter and the CPU backend both implement it; so will CUDA.

use gsc_compiler::kernel::{KernelProgram, Storage};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{backend} backend: {message}")]
pub struct BackendError {
    pub backend: &'static str,
    pub message: String,
}

/// One compiled program (a training step, or a forward pass) with its buffers.
pub trait Program {
    /// Fills a persistent f32 buffer (a parameter, a moment, `Lr`, `Step`).
    fn write(&mut self, s: Storage, data: &[f32]) -> Result<(), BackendError>;
    /// Fills an i32 buffer (`Tokens`, `Targets`).
    fn write_ints(&mut self, s: Storage, data: &[i32]) -> Result<(), BackendError>;
    fn read(&self, s: Storage) -> Result<Vec<f32>, BackendError>;
    /// Runs every kernel once.
    fn run(&mut self) -> Result<(), BackendError>;
}

/// A kind of device: turns kernel IR into runnable programs.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn load(&self, program: &KernelProgram) -> Result<Box<dyn Program>, BackendError>;
}
