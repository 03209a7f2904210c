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

/// At most this many threads compile a program's kernels, each its share
/// in its own context and engine (LLVM's -O3 is most of the time).
const MAX_THREADS: usize = 8;

/// Compiled host code for a program's loop kernels.
pub struct CpuKernels {
    engines: Vec<mlir_sys::MlirExecutionEngine>,
    /// Every loop kernel's entry, with its address in `func`.
    pub entries: Vec<(Entry, *const u8)>,
    pub timings: Timings,
}

// SAFETY: each engine owns its compiled code and its own LLVM context; it is
// touched only at construction and drop, and the function addresses are
// plain code, callable from any thread.
unsafe impl Send for CpuKernels {}
unsafe impl Sync for CpuKernels {}

impl Drop for CpuKernels {
    fn drop(&mut self) {
        for &engine in &self.engines {
            // SAFETY: created by mlirExecutionEngineCreate, destroyed once.
            unsafe { mlir_sys::mlirExecutionEngineDestroy(engine) }
        }
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

/// Lowers and JIT-compiles every loop kernel of `program` for the host,
/// the kernels dealt out to as many threads as the machine has cores; the
/// timings are each phase's longest.
pub fn compile_cpu(program: &KernelProgram) -> Result<CpuKernels, MlirError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let parts: Vec<Result<CpuKernels, MlirError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|part| s.spawn(move || compile_part(program, part, threads)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(MlirError::Engine("a compile thread panicked".into())))
            })
            .collect()
    });
    let mut all = CpuKernels {
        engines: vec![],
        entries: vec![],
        timings: Timings::default(),
    };
    for part in parts {
        let mut part = part?;
        all.engines.append(&mut part.engines);
        all.entries.append(&mut part.entries);
        for (phase, took) in &part.timings.0 {
            match all.timings.0.iter_mut().find(|(p, _)| p == phase) {
                Some((_, t)) => *t = (*t).max(*took),
                None => all.timings.0.push((phase.clone(), *took)),
            }
        }
    }
    all.entries.sort_by_key(|(e, _)| e.kernel);
    Ok(all)
}

/// The loop kernels `i` with `i % parts == part`, in one module.
fn compile_part(
    program: &KernelProgram,
    part: usize,
    parts: usize,
) -> Result<CpuKernels, MlirError> {
    let label = if parts > 1 {
        format!("part{part}-")
    } else {
        String::new()
    };
    crate::lower(
        program,
        Target::Cpu,
        (&|i| i % parts == part, &label),
        |session, module, entries| {
            session.phase("lower-to-llvm", LOWER_TO_LLVM, module)?;
            jit(session, module, &entries)
        },
    )
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
        engines: vec![engine],
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
