//! Loop kernels → native code with Cranelift.
//!
//! Every `Kernel::Loop` of a program becomes one function
//! `unsafe extern "C" fn(bufs: *const *mut u8, lo: i64, hi: i64)`: `bufs` is
//! the table of buffer base addresses indexed by `BufId`
//! ([`crate::buffers::ProgramBuffers::base_pointers`]), and `[lo, hi)` the
//! range of the outermost loop this call runs.
//!
//! Before any code is generated, each kernel is checked so that running it is
//! sound: every affine index stays inside its buffer for all loop indices,
//! every gather's position does too, and the values a gather may read are
//! recorded as a range that the executor checks the integer buffers against
//! before each run. A kernel is marked parallel only if its body is one `for`
//! whose iterations provably store to disjoint elements and never load an
//! element another iteration stores; otherwise it runs on one thread.

mod codegen;
mod math;
mod tabulate;

use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlags};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use gsc_compiler::kernel::{
    render_kernels, visit_expr, visit_stmts, Affine, BufId, DType, Expr, Index, Kernel,
    KernelProgram, LoopKernel, Stmt, Storage,
};
use std::time::{Duration, Instant};

/// A compiled loop kernel. Safety contract for calling it: `bufs` points at a
/// table with the base address of every buffer of the program it was compiled
/// from, each holding at least the program's length for it, the integer
/// buffers' values lie in [`JitProgram::int_ranges`], and concurrent calls
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
    /// Per I32 buffer (by `BufId`), the inclusive range its values must lie
    /// in for every gather through it to stay inside its target.
    pub int_ranges: Vec<Option<(i64, i64)>>,
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

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("loops", &self.loops.iter().filter(|l| l.is_some()).count())
            .field("compile_time", &self.compile_time)
            .finish()
    }
}

/// One kernel as text, for error messages.
pub fn render_kernel(k: &Kernel) -> String {
    let p = KernelProgram {
        buffers: vec![],
        kernels: vec![k.clone()],
        arena_len: 0,
    };
    render_kernels(&p)
        .lines()
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
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
    let mut tables = tabulate::Tables {
        first: program.buffers.len(),
        data: vec![],
    };
    let mut rewritten: Vec<Option<LoopKernel>> = vec![None; program.kernels.len()];
    for (index, kernel) in program.kernels.iter().enumerate() {
        if let Kernel::Loop(k) = kernel {
            let mut k2 = k.clone();
            if options.tabulate {
                tabulate::tabulate(&mut k2, &mut tables);
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
        let facts = analyse(&augmented, k2, &mut int_ranges)
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
    int_ranges.truncate(program.buffers.len());
    Ok(JitProgram {
        module: Some(module),
        loops,
        int_ranges,
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
    facts: &Facts,
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

/// What the checks found out about one kernel.
struct Facts {
    touched: Vec<BufId>,
    written: Vec<BufId>,
    parallel: Option<usize>,
    work: u64,
}

/// Inclusive range of an affine index over the loop indices in scope.
fn range(a: &Affine, extents: &[Option<usize>]) -> Result<(i64, i64), String> {
    let (mut lo, mut hi) = (a.offset, a.offset);
    for (v, c) in &a.terms {
        let e = extents
            .get(v.0 as usize)
            .copied()
            .flatten()
            .ok_or_else(|| format!("index i{} used outside its loop", v.0))?;
        let top = c * (e as i64 - 1);
        lo += top.min(0);
        hi += top.max(0);
    }
    Ok((lo, hi))
}

struct Checker<'a> {
    program: &'a KernelProgram,
    extents: Vec<Option<usize>>,
    int_ranges: &'a mut Vec<Option<(i64, i64)>>,
    /// Stores: (buffer, index), for the parallel check.
    stores: Vec<(BufId, Index)>,
    loads: Vec<(BufId, Index)>,
    touched: Vec<BufId>,
    work: u64,
}

impl Checker<'_> {
    fn buf_len(&self, b: BufId, dtype: DType) -> Result<usize, String> {
        let buf = self
            .program
            .buffers
            .get(b.0)
            .ok_or_else(|| format!("buffer b{} does not exist", b.0))?;
        if buf.dtype != dtype {
            return Err(format!(
                "buffer b{} ({}) is {:?}, used as {dtype:?}",
                b.0, buf.name, buf.dtype
            ));
        }
        Ok(buf.len)
    }

    /// Range of the element index `ix`, after checking its gather.
    fn index(&mut self, ix: &Index) -> Result<(i64, i64), String> {
        let (mut lo, mut hi) = range(&ix.affine, &self.extents)?;
        if let Some(g) = &ix.gather {
            let len = self.buf_len(g.buf, DType::I32)? as i64;
            let (glo, ghi) = range(&g.at, &self.extents)?;
            if glo < 0 || ghi >= len {
                return Err(format!(
                    "gather position b{}[{glo}..={ghi}] outside its {len} elements",
                    g.buf.0
                ));
            }
            self.touched.push(g.buf);
            // The gathered value's own range is unknown here: the caller
            // turns the target's bounds into a constraint on it.
            let _ = (&mut lo, &mut hi);
        }
        Ok((lo, hi))
    }

    /// Checks a load or store of `buf[ix]` against the buffer's length.
    fn access(&mut self, buf: BufId, ix: &Index) -> Result<(), String> {
        let len = self.buf_len(buf, DType::F32)? as i64;
        let (lo, hi) = self.index(ix)?;
        self.touched.push(buf);
        match &ix.gather {
            None => {
                if lo < 0 || hi >= len {
                    return Err(format!(
                        "b{}[{lo}..={hi}] outside its {len} elements",
                        buf.0
                    ));
                }
            }
            Some(g) => {
                // scale·v + [lo, hi] ⊆ [0, len): the values v may take.
                if g.scale == 0 {
                    if lo < 0 || hi >= len {
                        return Err(format!(
                            "b{}[{lo}..={hi}] outside its {len} elements",
                            buf.0
                        ));
                    }
                } else {
                    let s = g.scale;
                    let (a, b) = if s > 0 {
                        (div_ceil(-lo, s), div_floor(len - 1 - hi, s))
                    } else {
                        (div_ceil(len - 1 - hi, s), div_floor(-lo, s))
                    };
                    let slot = &mut self.int_ranges[g.buf.0];
                    *slot = Some(match *slot {
                        Some((x, y)) => (x.max(a), y.min(b)),
                        None => (a, b),
                    });
                }
            }
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> Result<(), String> {
        let mut err = Ok(());
        visit_expr(e, &mut |e| {
            if err.is_err() {
                return;
            }
            err = match e {
                Expr::Load { buf, index } => {
                    self.loads.push((*buf, index.clone()));
                    self.access(*buf, index)
                }
                Expr::SelectEq { a, b, .. } => self.index(a).and(self.index(b)).map(|_| ()),
                _ => Ok(()),
            };
        });
        err
    }

    fn stmts(&mut self, body: &[Stmt], trips: u64) -> Result<(), String> {
        for s in body {
            match s {
                Stmt::For { var, extent, body }
                | Stmt::Reduce {
                    var, extent, body, ..
                } => {
                    let slot = self
                        .extents
                        .get_mut(var.0 as usize)
                        .ok_or_else(|| format!("index i{} beyond num_vars", var.0))?;
                    if slot.is_some() {
                        return Err(format!("index i{} bound twice", var.0));
                    }
                    if *extent == 0 {
                        continue; // never runs: nothing inside is ever evaluated
                    }
                    *slot = Some(*extent);
                    let inner = trips.saturating_mul(*extent as u64);
                    self.stmts(body, inner)?;
                    if let Stmt::Reduce { value, .. } = s {
                        self.expr(value)?;
                        self.work = self.work.saturating_add(inner);
                    }
                    self.extents[var.0 as usize] = None;
                }
                Stmt::Let { value, .. } => self.expr(value)?,
                Stmt::Store { buf, index, value } => {
                    self.expr(value)?;
                    self.access(*buf, index)?;
                    self.stores.push((*buf, index.clone()));
                    self.work = self.work.saturating_add(trips);
                }
            }
        }
        Ok(())
    }
}

fn div_floor(a: i64, b: i64) -> i64 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

fn div_ceil(a: i64, b: i64) -> i64 {
    -div_floor(-a, b)
}

fn analyse(
    program: &KernelProgram,
    k: &LoopKernel,
    int_ranges: &mut Vec<Option<(i64, i64)>>,
) -> Result<Facts, String> {
    let mut c = Checker {
        program,
        extents: vec![None; k.num_vars as usize],
        int_ranges,
        stores: vec![],
        loads: vec![],
        touched: vec![],
        work: 0,
    };
    c.stmts(&k.body, 1)?;
    let mut touched = std::mem::take(&mut c.touched);
    touched.sort();
    touched.dedup();
    let mut written: Vec<BufId> = c.stores.iter().map(|s| s.0).collect();
    written.sort();
    written.dedup();
    check_overlap(program, &touched, &written)?;
    let parallel = match &k.body[..] {
        [Stmt::For { var, extent, body }]
            if disjoint(*var, body, &c.stores, &c.loads, k, *extent) =>
        {
            Some(*extent)
        }
        _ => None,
    };
    Ok(Facts {
        touched,
        written,
        parallel,
        work: c.work,
    })
}

/// A buffer the kernel writes must not share memory with any other buffer it
/// touches (the arena planner's promise, checked here because the generated
/// code relies on it).
fn check_overlap(
    program: &KernelProgram,
    touched: &[BufId],
    written: &[BufId],
) -> Result<(), String> {
    let span = |b: BufId| match program.buffers[b.0].storage {
        Storage::Arena { offset } => Some((offset, offset + program.buffers[b.0].len)),
        _ => None,
    };
    for &w in written {
        let Some((a0, a1)) = span(w) else { continue };
        for &t in touched {
            if t == w {
                continue;
            }
            if let Some((b0, b1)) = span(t) {
                if a0 < b1 && b0 < a1 {
                    return Err(format!("b{} and b{} overlap in the arena", w.0, t.0));
                }
            }
        }
        if program.buffers[w.0].dtype != DType::F32 {
            return Err(format!("b{} is stored to but is not F32", w.0));
        }
    }
    Ok(())
}

/// Whether iterations of the outer loop `var` store to disjoint elements and
/// load no element another iteration stores.
fn disjoint(
    var: gsc_compiler::kernel::Var,
    body: &[Stmt],
    stores: &[(BufId, Index)],
    loads: &[(BufId, Index)],
    k: &LoopKernel,
    extent: usize,
) -> bool {
    // Extents of every index inside the outer loop, for the span of the
    // non-outer part of each store index.
    let mut extents = vec![None; k.num_vars as usize];
    visit_stmts(body, &mut |s| {
        if let Stmt::For { var, extent, .. } | Stmt::Reduce { var, extent, .. } = s {
            if let Some(e) = extents.get_mut(var.0 as usize) {
                *e = Some(*extent);
            }
        }
    });
    if let Some(e) = extents.get_mut(var.0 as usize) {
        *e = Some(extent);
    }
    // Every access to a stored buffer, stores and loads alike, must be
    // `c·var + rest` with one common `c` and all the `rest` ranges inside a
    // window narrower than |c|: then iteration v touches only
    // [c·v + lo, c·v + hi], disjoint from every other iteration's.
    let mut bufs: Vec<BufId> = stores.iter().map(|s| s.0).collect();
    bufs.sort();
    bufs.dedup();
    for b in bufs {
        let mut common: Option<i64> = None;
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for (_, ix) in stores.iter().chain(loads).filter(|s| s.0 == b) {
            if ix.gather.is_some() {
                return false;
            }
            let coeff: i64 = ix
                .affine
                .terms
                .iter()
                .filter(|t| t.0 == var)
                .map(|t| t.1)
                .sum();
            if coeff == 0 || common.is_some_and(|c| c != coeff) {
                return false;
            }
            common = Some(coeff);
            let rest = Affine {
                offset: ix.affine.offset,
                terms: ix
                    .affine
                    .terms
                    .iter()
                    .filter(|t| t.0 != var)
                    .cloned()
                    .collect(),
            };
            let Ok((l, h)) = range(&rest, &extents) else {
                return false;
            };
            lo = lo.min(l);
            hi = hi.max(h);
        }
        match common {
            Some(c) if hi - lo < c.abs() => {}
            _ => return false,
        }
    }
    true
}
