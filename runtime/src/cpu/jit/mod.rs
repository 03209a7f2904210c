//! Loop kernels → native code with Cranelift.
//!
//! Every `Kernel::Loop` of a program becomes one function
//! `unsafe extern "C" fn(bufs: *const *mut u8, lo: i64, hi: i64)`: `bufs` is
//! the table of buffer base addresses indexed by `BufId`
//! ([`crate::buffers::Bound::pointers`]), and `[lo, hi)` the
//! range of the outermost loop this call runs.
//!
//! What makes running a kernel sound (indices in bounds, the parallel outer
//! loop, no overlap between what it stores and what it reads) is proved by
//! the kernel IR's backend-neutral [`gsc_compiler::kernel::analysis`] before
//! any code is generated; the code relies on those facts.

mod codegen;
mod math;

use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlags};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use gsc_compiler::kernel::{
    analyse_loop, render_kernel, DType, Kernel, KernelProgram, LoopFacts, LoopKernel, Storage,
};
use std::time::{Duration, Instant};

/// A compiled loop kernel. Safety contract for calling it: `bufs` points at a
/// table with the base address of every buffer of the program it was compiled
/// from, each holding at least the program's length for it, the integer
/// buffers' values lie in the ranges [`gsc_compiler::kernel::analyse`] found, and concurrent calls
/// cover disjoint `[lo, hi)` ranges of a kernel marked parallel.
pub type LoopFn = unsafe extern "C" fn(bufs: *const *mut u8, lo: i64, hi: i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitError {
    #[error("kernel k{index} \"{kernel}\": {what}\n{ir}")]
    Kernel {
        index: usize,
        kernel: String,
        what: String,
        /// The kernel as `gsc compile --emit=kernels` prints it.
        ir: String,
    },
    /// Raised while lowering, before the kernel index is known.
    #[error("kernel \"{kernel}\": {what}")]
    Malformed { kernel: String, what: String },
    #[error("the host's instruction set is not supported by Cranelift: {0}")]
    Host(String),
    #[error("program: {0}")]
    Program(String),
}

/// A loop kernel ready to run.
#[derive(Clone, Copy, Debug)]
pub struct CompiledLoop {
    pub func: LoopFn,
    /// The outer loop's extent when its iterations may run on different
    /// threads; `None` means call once with `[0, 1)`.
    pub parallel: Option<usize>,
    /// Innermost iterations of one run (scalar work estimate, for deciding
    /// whether splitting is worth a thread hand-off).
    pub work: u64,
}

/// All loop kernels of one program in one JIT module.
pub struct JitProgram {
    module: Option<JITModule>,
    /// Indexed like `program.kernels`; `Some` for loop kernels.
    pub loops: Vec<Option<CompiledLoop>>,
    /// Wall time of analysis and code generation for the whole program.
    pub compile_time: Duration,
    /// Constant tables the kernels read as buffers `program.buffers.len() + t`:
    /// append their addresses to the pointer table.
    pub tables: Vec<Vec<f32>>,
}

// SAFETY: the module owns executable memory and symbol tables that are only
// touched at construction and drop (both need `&mut self` / ownership); the
// function pointers are plain code addresses, callable from any thread.
unsafe impl Send for JitProgram {}
unsafe impl Sync for JitProgram {}

impl Drop for JitProgram {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the function pointers in `loops` die with `self`, and
            // `execute` borrows the backend for as long as any call runs.
            unsafe { m.free_memory() };
        }
    }
}

impl crate::cpu::LoopCode for JitProgram {
    fn loops(&self) -> &[Option<CompiledLoop>] {
        &self.loops
    }

    fn tables(&self) -> &[Vec<f32>] {
        &self.tables
    }

    fn compile_time(&self) -> Duration {
        self.compile_time
    }

    fn name(&self) -> &'static str {
        "cranelift"
    }
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("loops", &self.loops.iter().filter(|l| l.is_some()).count())
            .field("compile_time", &self.compile_time)
            .finish()
    }
}

fn kernel_error(index: usize, k: &LoopKernel, what: String) -> JitError {
    JitError::Kernel {
        index,
        kernel: k.name.clone(),
        what,
        ir: render_kernel(&Kernel::Loop(k.clone())),
    }
}

/// Code generation choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitOptions {
    /// f32x4 loops where the access pattern allows (else scalar only).
    pub simd: bool,
    /// Precompute transcendental functions of loop indices alone (RoPE's
    /// angles) into constant tables.
    pub tabulate: bool,
}

impl Default for JitOptions {
    /// SIMD on, unless the environment says `GSC_JIT_SCALAR=1`.
    fn default() -> Self {
        JitOptions {
            simd: std::env::var("GSC_JIT_SCALAR").map_or(true, |v| v != "1"),
            tabulate: std::env::var("GSC_JIT_NO_TABLES").map_or(true, |v| v != "1"),
        }
    }
}

/// The JIT symbol of kernel `index`, e.g. `k98_gelu_bwd`: profilers name
/// JIT code by it (`perf` reads the map Cranelift writes when
/// `PERF_BUILDID_DIR` is set, as `perf record` does).
fn symbol(index: usize, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("k{index}_{name}")
}

/// Compiles every loop kernel of `program` with the default options.
pub fn compile_program(program: &KernelProgram) -> Result<JitProgram, JitError> {
    compile_program_with(program, JitOptions::default())
}

/// Compiles every loop kernel of `program`.
pub fn compile_program_with(
    program: &KernelProgram,
    options: JitOptions,
) -> Result<JitProgram, JitError> {
    let start = Instant::now();
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| JitError::Host(format!("setting {k}={v}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| JitError::Host(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| JitError::Host(e.to_string()))?;
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    for (name, f) in math::SYMBOLS {
        jb.symbol(name, f as *const u8);
    }
    let mut module = JITModule::new(jb);
    let ptr = module.target_config().pointer_type();
    if ptr != types::I64 {
        return Err(JitError::Host("only 64-bit targets are supported".into()));
    }

    let mut unary = module.make_signature();
    unary.params.push(AbiParam::new(types::F32));
    unary.returns.push(AbiParam::new(types::F32));
    let mut imports = vec![];
    for (name, _) in math::SYMBOLS {
        let id = module
            .declare_function(name, Linkage::Import, &unary)
            .map_err(|e| JitError::Program(e.to_string()))?;
        imports.push(id);
    }

    // Constant tables become extra buffers after the program's own.
    let mut tables = gsc_compiler::kernel::tabulate::Tables {
        first: program.buffers.len(),
        data: vec![],
    };
    let mut rewritten: Vec<Option<LoopKernel>> = vec![None; program.kernels.len()];
    for (index, kernel) in program.kernels.iter().enumerate() {
        if let Kernel::Loop(k) = kernel {
            let mut k2 = k.clone();
            if options.tabulate {
                gsc_compiler::kernel::tabulate::tabulate(&mut k2, &mut tables);
            }
            rewritten[index] = Some(k2);
        }
    }
    let mut augmented = KernelProgram {
        buffers: program.buffers.clone(),
        kernels: vec![],
        arena_len: program.arena_len,
    };
    for (t, data) in tables.data.iter().enumerate() {
        augmented.buffers.push(gsc_compiler::kernel::Buffer {
            name: format!("table{t}"),
            dtype: DType::F32,
            len: data.len(),
            storage: Storage::Param(usize::MAX - t),
        });
    }

    // GSC_JIT_DUMP=<name part or kN>: print those kernels' Cranelift IR and
    // machine code.
    let dump = std::env::var("GSC_JIT_DUMP").ok();
    let mut int_ranges: Vec<Option<(i64, i64)>> = vec![None; augmented.buffers.len()];
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut pending = vec![];
    let mut loops = vec![None; program.kernels.len()];
    for (index, kernel) in program.kernels.iter().enumerate() {
        let Kernel::Loop(k) = kernel else { continue };
        let Some(k2) = &rewritten[index] else {
            continue;
        };
        let facts = analyse_loop(&augmented, k2, &mut int_ranges)
            .map_err(|what| kernel_error(index, k, what))?;
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        let id = module
            .declare_function(&symbol(index, &k.name), Linkage::Local, &sig)
            .map_err(|e| kernel_error(index, k, e.to_string()))?;
        ctx.func.signature = sig;
        build(
            &mut module,
            &mut ctx,
            &mut fctx,
            &imports,
            &augmented,
            k2,
            &facts,
            options,
        )
        .map_err(|e| kernel_error(index, k, e.to_string()))?;
        let dumped = dump
            .as_deref()
            .is_some_and(|d| k.name.contains(d) || d == format!("k{index}"));
        if dumped {
            eprintln!("// k{index} \"{}\":\n{}", k.name, ctx.func.display());
            ctx.set_disasm(true);
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| kernel_error(index, k, format!("code generation: {e:?}")))?;
        if let Some(code) = ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
            eprintln!("// k{index} machine code:\n{code}");
        }
        module.clear_context(&mut ctx);
        pending.push((index, id, facts));
    }
    module
        .finalize_definitions()
        .map_err(|e| JitError::Program(e.to_string()))?;
    for (index, id, facts) in pending {
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the finalized body of a function declared with
        // exactly this signature (pointer, i64, i64) → () in the host's
        // default calling convention, which is `extern "C"` here.
        let func: LoopFn = unsafe { std::mem::transmute::<*const u8, LoopFn>(code) };
        loops[index] = Some(CompiledLoop {
            func,
            parallel: facts.parallel,
            work: facts.work,
        });
    }
    Ok(JitProgram {
        module: Some(module),
        loops,
        tables: tables.data,
        compile_time: start.elapsed(),
    })
}

#[allow(clippy::too_many_arguments)]
fn build(
    module: &mut JITModule,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    imports: &[cranelift_module::FuncId],
    program: &KernelProgram,
    k: &LoopKernel,
    facts: &LoopFacts,
    options: JitOptions,
) -> Result<(), JitError> {
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (table, lo, hi) = (params[0], params[1], params[2]);
    let mut bases = vec![None; program.buffers.len()];
    for &id in &facts.touched {
        let flags = MemFlags::trusted().with_readonly();
        bases[id.0] = Some(b.ins().load(types::I64, flags, table, (id.0 * 8) as i32));
    }
    let refs: Vec<_> = imports
        .iter()
        .map(|&id| module.declare_func_in_func(id, b.func))
        .collect();
    let fns = math::MathFns { log: refs[0] };
    let mut written = vec![false; program.buffers.len()];
    for id in &facts.written {
        written[id.0] = true;
    }
    let mut lower = codegen::Lower {
        b,
        math: &fns,
        bases,
        written,
        vars: vec![None; k.num_vars as usize],
        locals: vec![None; k.num_locals as usize],
        ptr: types::I64,
        kernel: &k.name,
        simd: options.simd,
        vector: None,
    };
    lower.kernel(k, facts.parallel.is_some(), lo, hi)?;
    lower.b.seal_all_blocks();
    lower.b.finalize();
    Ok(())
}
