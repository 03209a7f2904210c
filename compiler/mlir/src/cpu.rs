//! The host path: the kernels' MLIR lowered to the LLVM dialect and
//! compiled by MLIR's ExecutionEngine (LLVM at -O3 for the host CPU, its
//! full vector width included). Each kernel is a function
//! `extern "C" fn(table: *const *mut u8, lo: i64, hi: i64)`, the ABI of the
//! Cranelift backend's kernels, so the CPU executor runs either.

use crate::emit::{Entry, Target};
use crate::pipeline::{Session, Timings};
use crate::MlirError;
use gsc_kernel_ir::KernelProgram;
use melior::ir::Module;
use std::time::Instant;

const LOWER_TO_LLVM: &str = "builtin.module(inline, symbol-dce, convert-scf-to-cf, \
     convert-vector-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, finalize-memref-to-llvm, \
     convert-cf-to-llvm, convert-func-to-llvm, reconcile-unrealized-casts, canonicalize, cse)";

/// LLVM's optimisation level for the host code.
const OPT_LEVEL: i32 = 3;

/// Compiled host code for a program's loop kernels.
pub struct CpuKernels {
    engine: mlir_sys::MlirExecutionEngine,
    /// Every loop kernel's entry, with its address in `func`.
    pub entries: Vec<(Entry, *const u8)>,
    pub timings: Timings,
}

// SAFETY: the engine owns the compiled code and its own LLVM context; it is
// touched only at construction and drop, and the function addresses are
// plain code, callable from any thread.
unsafe impl Send for CpuKernels {}
unsafe impl Sync for CpuKernels {}

impl Drop for CpuKernels {
    fn drop(&mut self) {
        // SAFETY: created by mlirExecutionEngineCreate, destroyed once.
        unsafe { mlir_sys::mlirExecutionEngineDestroy(self.engine) }
    }
}

impl std::fmt::Debug for CpuKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuKernels")
            .field("entries", &self.entries.len())
            .field("timings", &self.timings)
            .finish()
    }
}

/// Lowers and JIT-compiles every loop kernel of `program` for the host.
pub fn compile_cpu(program: &KernelProgram) -> Result<CpuKernels, MlirError> {
    crate::lower(program, Target::Cpu, |session, module, entries| {
        session.phase("lower-to-llvm", LOWER_TO_LLVM, module)?;
        jit(session, module, &entries)
    })
}

/// LLVM code for the host from a module in the LLVM dialect, and the
/// address of every entry.
fn jit(session: &Session, module: &Module, entries: &[Entry]) -> Result<CpuKernels, MlirError> {
    let start = Instant::now();
    // SAFETY: the module is valid LLVM-dialect IR (verified above); the
    // engine is checked for null before use.
    let engine = unsafe {
        mlir_sys::mlirExecutionEngineCreate(
            module.to_raw(),
            OPT_LEVEL,
            0,
            std::ptr::null(),
            false,
            false,
        )
    };
    if engine.ptr.is_null() {
        return Err(MlirError::Engine(format!(
            "could not compile the module for the host{}\n{}",
            module_hint(module),
            session.take_diagnostics().join("\n")
        )));
    }
    let mut kernels = CpuKernels {
        engine,
        entries: vec![],
        timings: Timings::default(),
    };
    for e in entries {
        let name = std::ffi::CString::new(e.symbol.as_str())
            .map_err(|_| MlirError::Engine(format!("bad symbol {}", e.symbol)))?;
        // SAFETY: a lookup by name in a live engine.
        let f = unsafe {
            mlir_sys::mlirExecutionEngineLookup(
                engine,
                mlir_sys::MlirStringRef {
                    data: name.as_ptr(),
                    length: e.symbol.len(),
                },
            )
        };
        if f.is_null() {
            return Err(MlirError::Engine(format!(
                "the compiled module has no function {}",
                e.symbol
            )));
        }
        kernels.entries.push((e.clone(), f as *const u8));
    }
    session.time("llvm-jit", start.elapsed());
    kernels.timings = session.timings();
    Ok(kernels)
}

fn module_hint(module: &melior::ir::Module) -> String {
    let text = module.as_operation().to_string();
    let lines = text.lines().count();
    format!(" ({lines} lines of LLVM dialect; set GSC_MLIR_DUMP=DIR to see them)")
}
