//! What the training loop needs of a backend: a compiled program bound to
//! its buffers, which it can fill, run, and read back. The reference
//! interpreter and the CPU backend both implement it; so will CUDA.

use crate::buffers::ProgramBuffers;
use crate::cpu::jit::JitOptions;
use crate::cpu::CpuBackend;
use gsc_compiler::kernel::{KernelProgram, Storage};
use std::any::Any;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{backend} backend: {message}")]
pub struct BackendError {
    pub backend: &'static str,
    pub message: String,
}

/// One compiled program (a training step, or a forward pass) with its
/// buffers. `Any`, so that its backend can find its buffers again
/// ([`Backend::load_sharing`]).
pub trait Program: Any {
    /// Fills a persistent f32 buffer (a parameter, a moment, `Lr`, `Step`).
    fn write(&mut self, s: Storage, data: &[f32]) -> Result<(), BackendError>;
    /// Fills an i32 buffer (`Tokens`, `Targets`).
    fn write_ints(&mut self, s: Storage, data: &[i32]) -> Result<(), BackendError>;
    fn read(&self, s: Storage) -> Result<Vec<f32>, BackendError>;
    /// Runs every kernel once.
    fn run(&mut self) -> Result<(), BackendError>;
    /// Starts generating faster code for the program's kernels on a thread
    /// of its own, where the backend has a slower-to-build, faster-to-run
    /// code generator (the CPU backend built with MLIR: LLVM's loop kernels
    /// beside Cranelift's). `false` if it has none.
    fn compile_beside(&mut self) -> bool {
        false
    }
    /// Runs the code [`Program::compile_beside`] started from the next
    /// [`Program::run`] on, waiting for it; `Ok(false)` if there is none.
    /// The new code's results may differ in the last bits, so callers
    /// switch at a step fixed in advance. On an error the old code stays.
    fn switch_code(&mut self) -> Result<bool, BackendError> {
        Ok(false)
    }
    /// Who generated the code that runs now (`cranelift`, `mlir`, `ptx`,
    /// `interpreter`), for logs and benchmarks.
    fn code(&self) -> &'static str;
}

/// A kind of device: turns kernel IR into runnable programs.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn load(&self, program: &KernelProgram) -> Result<Box<dyn Program>, BackendError>;
    /// As [`Backend::load`], but the program's parameters (`Storage::Param`)
    /// are `owner`'s own buffers: it reads them where `owner` updates them,
    /// so evaluation beside training copies nothing (on a GPU, nothing
    /// crosses the bus). `owner` must be a program of this backend holding
    /// every parameter `program` has, at the same length.
    fn load_sharing(
        &self,
        program: &KernelProgram,
        owner: &dyn Program,
    ) -> Result<Box<dyn Program>, BackendError>;
}

/// The CPU backend: loop kernels JIT-compiled by Cranelift, matmuls by gemm,
/// flash attention; both cores.
#[derive(Default)]
pub struct Cpu;

struct CpuProgram {
    exec: CpuBackend,
    bufs: ProgramBuffers,
}

/// `program` compiled into `exec`, with fresh buffers or ones sharing
/// `owner`'s parameters (which must be a program of the CPU executor).
fn cpu_program(
    exec: CpuBackend,
    program: &KernelProgram,
    owner: Option<&dyn Program>,
) -> Result<Box<dyn Program>, BackendError> {
    let bufs = match owner {
        None => ProgramBuffers::new(program),
        Some(o) => {
            let o: &dyn Any = o;
            let o = o.downcast_ref::<CpuProgram>().ok_or_else(|| {
                cpu_err("the program to share parameters with is not the CPU executor's")
            })?;
            ProgramBuffers::sharing(program, &o.bufs)
        }
    }
    .map_err(cpu_err)?;
    Ok(Box::new(CpuProgram { exec, bufs }))
}

fn cpu_err(e: impl std::fmt::Display) -> BackendError {
    BackendError {
        backend: "cpu",
        message: e.to_string(),
    }
}

impl Cpu {
    /// [`Backend::load`] with explicit code generation options.
    pub fn load_with(
        &self,
        program: &KernelProgram,
        options: JitOptions,
    ) -> Result<Box<dyn Program>, BackendError> {
        let exec = CpuBackend::with_options(program, options).map_err(cpu_err)?;
        cpu_program(exec, program, None)
    }
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn load(&self, program: &KernelProgram) -> Result<Box<dyn Program>, BackendError> {
        self.load_with(program, JitOptions::default())
    }

    fn load_sharing(
        &self,
        program: &KernelProgram,
        owner: &dyn Program,
    ) -> Result<Box<dyn Program>, BackendError> {
        let exec = CpuBackend::new(program).map_err(cpu_err)?;
        cpu_program(exec, program, Some(owner))
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
            .map(|v| v.to_vec())
            .ok_or_else(|| cpu_err(format!("the program has no {s:?} buffer")))
    }

    fn run(&mut self) -> Result<(), BackendError> {
        self.exec.execute(&mut self.bufs).map_err(cpu_err)
    }

    #[cfg(feature = "mlir")]
    fn compile_beside(&mut self) -> bool {
        if self.exec.loop_code() == "mlir" {
            return false;
        }
        self.exec
            .compile_beside(crate::cpu::mlir::MlirLoops::codegen);
        true
    }

    fn switch_code(&mut self) -> Result<bool, BackendError> {
        self.exec.switch_code().map_err(cpu_err)
    }

    fn code(&self) -> &'static str {
        self.exec.loop_code()
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
        cpu_program(mlir_exec(program)?, program, None)
    }

    fn load_sharing(
        &self,
        program: &KernelProgram,
        owner: &dyn Program,
    ) -> Result<Box<dyn Program>, BackendError> {
        cpu_program(mlir_exec(program)?, program, Some(owner))
    }
}

/// The CPU executor of `program` with its loop kernels compiled by MLIR.
#[cfg(feature = "mlir")]
fn mlir_exec(program: &KernelProgram) -> Result<CpuBackend, BackendError> {
    CpuBackend::with_code(program, crate::cpu::mlir::MlirLoops::codegen).map_err(|e| BackendError {
        backend: "mlir",
        message: e.to_string(),
    })
}
