//! Loop kernels compiled through MLIR (`gsc run --backend mlir`, cargo
//! feature `mlir`): the same kernel IR lowered by `gsc-mlir` to LLVM and
//! JIT-compiled by MLIR's ExecutionEngine, run by the CPU executor beside
//! the same library kernels as the Cranelift backend.

use super::jit::{CompiledLoop, JitError, LoopFn};
use super::LoopCode;
use gsc_compiler::kernel::KernelProgram;
use std::time::Duration;

/// A program's loop kernels as MLIR compiled them.
#[derive(Debug)]
pub struct MlirLoops {
    loops: Vec<Option<CompiledLoop>>,
    compile_time: Duration,
    /// Owns the code the function pointers point into.
    _code: gsc_mlir::CpuKernels,
}

impl MlirLoops {
    pub fn compile(program: &KernelProgram) -> Result<Self, JitError> {
        let code = gsc_mlir::compile_cpu(program).map_err(|e| JitError::Program(e.to_string()))?;
        let mut loops = vec![None; program.kernels.len()];
        for (entry, addr) in &code.entries {
            // SAFETY: every entry is a function `(ptr, i64, i64) -> ()` in
            // the C calling convention (gsc_mlir::cpu), over buffers the
            // kernel IR's analyses proved in bounds.
            let func = unsafe { std::mem::transmute::<*const u8, LoopFn>(*addr) };
            loops[entry.kernel] = Some(CompiledLoop {
                func,
                parallel: entry.parallel,
                work: entry.work,
            });
        }
        Ok(MlirLoops {
            loops,
            compile_time: code.timings.total(),
            _code: code,
        })
    }

    /// [`MlirLoops::compile`] as the code generator that
    /// [`super::CpuBackend::with_code`] and
    /// [`super::CpuBackend::compile_beside`] take.
    pub fn codegen(program: &KernelProgram) -> Result<Box<dyn LoopCode>, JitError> {
        Ok(Box::new(Self::compile(program)?))
    }
}

impl LoopCode for MlirLoops {
    fn loops(&self) -> &[Option<CompiledLoop>] {
        &self.loops
    }

    fn tables(&self) -> &[Vec<f32>] {
        &[]
    }

    fn compile_time(&self) -> Duration {
        self.compile_time
    }

    fn name(&self) -> &'static str {
        "mlir"
    }
}
