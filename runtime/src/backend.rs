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

/// The CPU backend: loop kernels JIT-compiled by Cranelift, matmuls by gemm,
/// flash attention; both cores.
#[derive(Default)]
pub struct Cpu;

struct CpuProgram {
    exec: crate::cpu::CpuBackend,
    bufs: crate::buffers::ProgramBuffers,
}

fn cpu_err(e: impl std::fmt::Display) -> BackendError {
    BackendError {
        backend: "cpu",
        message: e.to_string(),
    }
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn load(&self, program: &KernelProgram) -> Result<Box<dyn Program>, BackendError> {
        let exec = crate::cpu::CpuBackend::new(program).map_err(cpu_err)?;
        let bufs = crate::buffers::ProgramBuffers::new(program).map_err(cpu_err)?;
        Ok(Box::new(CpuProgram { exec, bufs }))
    }
}

impl Program for CpuProgram {
    fn write(&mut self, s: Storage, data: &[f32]) -> Result<(), BackendError> {
        self.bufs.load(s, data).map_err(cpu_err)
    }

    fn write_ints(&mut self, s: Storage, data: &[i32]) -> Result<(), BackendError> {
        match s {
            Storage::Tokens => self.bufs.set_tokens(data),
            Storage::Targets => self.bufs.set_targets(data),
            other => return Err(cpu_err(format!("{other:?} is not an integer buffer"))),
        }
        .map_err(cpu_err)
    }

    fn read(&self, s: Storage) -> Result<Vec<f32>, BackendError> {
        self.bufs
            .storage(s)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| cpu_err(format!("the program has no {s:?} buffer")))
    }

    fn run(&mut self) -> Result<(), BackendError> {
        self.exec.execute(&mut self.bufs).map_err(cpu_err)
    }
}

/// The CPU executor with its loop kernels compiled through MLIR (LLVM at
/// -O3 for the host) instead of Cranelift; library kernels as [`Cpu`].
#[cfg(feature = "mlir")]
#[derive(Default)]
pub struct Mlir;

#[cfg(feature = "mlir")]
impl Backend for Mlir {
    fn name(&self) -> &'static str {
        "mlir"
    }

    fn load(&self, program: &KernelProgram) -> Result<Box<dyn Program>, BackendError> {
        let exec = crate::cpu::CpuBackend::with_code(program, |p| {
            crate::cpu::mlir::MlirLoops::compile(p).map(|m| Box::new(m) as _)
        })
        .map_err(|e| BackendError {
            backend: "mlir",
            message: e.to_string(),
        })?;
        let bufs = crate::buffers::ProgramBuffers::new(program).map_err(cpu_err)?;
        Ok(Box::new(CpuProgram { exec, bufs }))
    }
}
