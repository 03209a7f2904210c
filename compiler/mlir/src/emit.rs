//! Loop kernels → MLIR text in the `func`, `scf`, `arith`, `math` and
//! `memref` dialects, one function per kernel; the module is then parsed,
//! verified and lowered by [`crate::pipeline`].
//!
//! The kernel IR maps one to one: a `for` is an `scf.for`, a reduction an
//! `scf.for` carrying its accumulator in `iter_args`, a `let` an SSA value,
//! a load or store a `memref.load`/`memref.store` of a buffer typed
//! `memref<LENxf32>`, an affine index `arith` on `index` values, a gather
//! one more load from an `i32` buffer. Only what lets a kernel run differs
//! by target:
//!
//! - CPU: `@kN_name(%table: !llvm.ptr, %lo: i64, %hi: i64)` takes the table
//!   of buffer base addresses indexed by buffer id, as the Cranelift
//!   backend's kernels do, and runs iterations `[lo, hi)` of a parallel
//!   outer loop (a sequential kernel is called with `[0, 1)`); it views
//!   each buffer as a memref and calls the body function.
//! - CUDA: `gpu.func @kN_name(buffers…) kernel` runs one iteration of the
//!   parallel outer loop per GPU thread (global id < extent), or the whole
//!   kernel on one thread when it has no parallel loop.

use crate::math::{self, f32_literal, Helper};
use gsc_kernel_ir::*;
pub use gsc_kernel_ir::{Entry, BLOCK};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

/// Which code the module carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Host functions for MLIR's ExecutionEngine.
    Cpu,
    /// A `gpu.module` of kernels for NVVM.
    Cuda,
}

/// A module's text and its entry points.
#[derive(Clone, Debug)]
pub struct Emitted {
    pub text: String,
    pub entries: Vec<Entry>,
}

/// An emission failure, naming the kernel.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("kernel k{kernel} \"{name}\": {what}")]
pub struct EmitError {
    pub kernel: usize,
    pub name: String,
    pub what: String,
}

/// The symbol of kernel `index`, as the Cranelift backend names it (so
/// profiles of either backend read alike): `k98_gelu_bwd`.
pub fn symbol(index: usize, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("k{index}_{name}")
}

fn memref(b: &Buffer) -> String {
    let elem = match b.dtype {
        DType::F32 => "f32",
        DType::I32 => "i32",
    };
    format!("memref<{}x{elem}>", b.len)
}

/// Emits the loop kernels of `program` (whose analyses are `facts`) for
/// `target` whose index `include` accepts. Library kernels are the
/// runtime's to run and are skipped.
pub fn emit(
    program: &KernelProgram,
    facts: &ProgramFacts,
    target: Target,
    include: &dyn Fn(usize) -> bool,
) -> Result<Emitted, EmitError> {
    let mut funcs = String::new();
    let mut entries = vec![];
    let mut helpers = BTreeSet::new();
    for (index, kernel) in program.kernels.iter().enumerate() {
        let (Kernel::Loop(k), Some(f)) = (kernel, &facts.loops[index]) else {
            continue;
        };
        if !include(index) {
            continue;
        }
        let sym = symbol(index, &k.name);
        let mut fe = FuncEmitter {
            program,
            kernel: k,
            index,
            out: String::new(),
            next: 0,
            depth: 2,
            vars: vec![None; k.num_vars as usize],
            locals: vec![None; k.num_locals as usize],
            vector: None,
            consts: HashMap::new(),
            helpers: &mut helpers,
            bufs: HashMap::new(),
        };
        match target {
            Target::Cpu => fe.cpu_kernel(&sym, f)?,
            Target::Cuda => fe.gpu_kernel(&sym, f)?,
        }
        funcs.push_str(&fe.out);
        entries.push(Entry {
            kernel: index,
            symbol: sym,
            args: f.touched.clone(),
            parallel: f.parallel,
            work: f.work,
        });
    }
    let mut lib = String::new();
    for &(h, width) in &helpers {
        lib.push_str(&math::definition(h, width));
    }
    let text = match target {
        Target::Cpu => format!("module {{\n{lib}{funcs}}}\n"),
        Target::Cuda => format!(
            "module attributes {{gpu.container_module}} {{\n  gpu.module @gsc_kernels {{\n{}{}  }}\n}}\n",
            indent(&lib),
            funcs
        ),
    };
    Ok(Emitted { text, entries })
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

struct FuncEmitter<'a> {
    program: &'a KernelProgram,
    kernel: &'a LoopKernel,
    index: usize,
    out: String,
    next: usize,
    depth: usize,
    /// SSA `index` value of each loop index in scope.
    vars: Vec<Option<String>>,
    /// SSA value of each local in scope (`f32`, or a vector of [`WIDTH`]
    /// in a vectorised outer loop).
    locals: Vec<Option<String>>,
    /// In a vectorised outer loop, its index: values are vectors of its
    /// [`WIDTH`] consecutive iterations, and the index holds the first.
    vector: Option<Var>,
    /// Index constants of the function's entry block.
    consts: HashMap<i64, String>,
    helpers: &'a mut BTreeSet<(Helper, Option<usize>)>,
    /// The memref value of each buffer the kernel touches.
    bufs: HashMap<BufId, String>,
}

impl FuncEmitter<'_> {
    fn err(&self, what: impl Into<String>) -> EmitError {
        EmitError {
            kernel: self.index,
            name: self.kernel.name.clone(),
            what: what.into(),
        }
    }

    fn line(&mut self, s: &str) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn fresh(&mut self) -> String {
        let n = format!("%{}", self.next);
        self.next += 1;
        n
    }

    fn op(&mut self, rhs: &str) -> String {
        let v = self.fresh();
        self.line(&format!("{v} = {rhs}"));
        v
    }

    /// An `index` constant, defined once at the top of the function.
    fn index_const(&mut self, c: i64) -> String {
        if let Some(v) = self.consts.get(&c) {
            return v.clone();
        }
        let v = format!(
            "%c{}",
            if c < 0 {
                format!("m{}", -c)
            } else {
                c.to_string()
            }
        );
        self.consts.insert(c, v.clone());
        v
    }

    fn const_block(&self) -> String {
        let mut cs: Vec<_> = self.consts.iter().collect();
        cs.sort();
        let pad = "  ".repeat(self.depth);
        cs.iter()
            .map(|(c, v)| format!("{pad}{v} = arith.constant {c} : index\n"))
            .collect()
    }

    fn buf(&self, b: BufId) -> Result<String, EmitError> {
        self.bufs
            .get(&b)
            .cloned()
            .ok_or_else(|| self.err(format!("b{} is not among the buffers it touches", b.0)))
    }

    fn buffer_type(&self, b: BufId) -> String {
        memref(&self.program.buffers[b.0])
    }

    /// `%bN: memref<…>` for every buffer the kernel touches, each bound as
    /// that buffer's value.
    fn memref_params(&mut self, f: &LoopFacts) -> Vec<String> {
        f.touched
            .iter()
            .map(|&b| {
                let v = format!("%b{}", b.0);
                let param = format!("{v}: {}", self.buffer_type(b));
                self.bufs.insert(b, v);
                param
            })
            .collect()
    }

    /// The CPU entry (table of base addresses, outer range) and its body.
    fn cpu_kernel(&mut self, sym: &str, f: &LoopFacts) -> Result<(), EmitError> {
        // The body: memref arguments, then the outer range.
        let mut params = self.memref_params(f);
        params.push("%lo: index".into());
        params.push("%hi: index".into());
        self.stmts_outer(f, Outer::Range)?;
        let body = std::mem::take(&mut self.out);
        let consts = self.const_block();
        let _ = write!(
            self.out,
            "  func.func private @{sym}_body({}) {{\n{consts}{body}    return\n  }}\n",
            params.join(", ")
        );
        // The entry: each buffer's base address from the table, viewed as
        // a memref (a descriptor that the memref lowering folds away).
        let _ = writeln!(
            self.out,
            "  func.func @{sym}(%table: !llvm.ptr, %lo: i64, %hi: i64) {{"
        );
        let desc = "!llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>";
        self.out
            .push_str("    %zero = llvm.mlir.constant(0 : i64) : i64\n");
        self.out
            .push_str("    %one = llvm.mlir.constant(1 : i64) : i64\n");
        let mut args = vec![];
        let mut types = vec![];
        for &b in &f.touched {
            let len = self.program.buffers[b.0].len;
            let t = self.buffer_type(b);
            let n = b.0;
            let _ = write!(
                self.out,
                "    %a{n} = llvm.getelementptr %table[{n}] : (!llvm.ptr) -> !llvm.ptr, !llvm.ptr\n\
                 \x20   %p{n} = llvm.load %a{n} : !llvm.ptr -> !llvm.ptr\n\
                 \x20   %n{n} = llvm.mlir.constant({len} : i64) : i64\n\
                 \x20   %d{n}_0 = llvm.mlir.poison : {desc}\n\
                 \x20   %d{n}_1 = llvm.insertvalue %p{n}, %d{n}_0[0] : {desc}\n\
                 \x20   %d{n}_2 = llvm.insertvalue %p{n}, %d{n}_1[1] : {desc}\n\
                 \x20   %d{n}_3 = llvm.insertvalue %zero, %d{n}_2[2] : {desc}\n\
                 \x20   %d{n}_4 = llvm.insertvalue %n{n}, %d{n}_3[3, 0] : {desc}\n\
                 \x20   %d{n}_5 = llvm.insertvalue %one, %d{n}_4[4, 0] : {desc}\n\
                 \x20   %b{n} = builtin.unrealized_conversion_cast %d{n}_5 : {desc} to {t}\n"
            );
            args.push(format!("%b{n}"));
            types.push(t);
        }
        self.out.push_str(
            "    %lo_i = arith.index_cast %lo : i64 to index\n    %hi_i = arith.index_cast %hi : i64 to index\n",
        );
        args.push("%lo_i".into());
        args.push("%hi_i".into());
        types.push("index".into());
        types.push("index".into());
        let _ = write!(
            self.out,
            "    func.call @{sym}_body({}) : ({}) -> ()\n    return\n  }}\n",
            args.join(", "),
            types.join(", ")
        );
        Ok(())
    }

    /// The GPU kernel: one outer iteration per thread.
    fn gpu_kernel(&mut self, sym: &str, f: &LoopFacts) -> Result<(), EmitError> {
        let params = self.memref_params(f);
        self.depth = 3;
        self.stmts_outer(f, Outer::Thread)?;
        let body = std::mem::take(&mut self.out);
        let consts = self.const_block();
        let _ = write!(
            self.out,
            "    gpu.func @{sym}({}) kernel {{\n{consts}{body}      gpu.return\n    }}\n",
            params.join(", ")
        );
        Ok(())
    }

    /// The kernel's statements, the outer loop bound as `outer` says when
    /// it is parallel.
    fn stmts_outer(&mut self, f: &LoopFacts, outer: Outer) -> Result<(), EmitError> {
        let body = &self.kernel.body;
        match (f.parallel, &body[..]) {
            (Some(extent), [Stmt::For { var, body, .. }]) => match outer {
                Outer::Range => {
                    let i = format!("%i{}", var.0);
                    let one = self.index_const(1);
                    let mut lo = "%lo".to_string();
                    if vectorise_pays(*var, body) {
                        lo = self.vector_loop(*var, body)?;
                    }
                    self.line(&format!("scf.for {i} = {lo} to %hi step {one} {{"));
                    self.scoped(*var, i, body)?;
                    self.line("}");
                }
                Outer::Thread => {
                    let bid = self.op("gpu.block_id x");
                    let bdim = self.op("gpu.block_dim x");
                    let tid = self.op("gpu.thread_id x");
                    let base = self.op(&format!("arith.muli {bid}, {bdim} : index"));
                    let i = self.op(&format!("arith.addi {base}, {tid} : index"));
                    let e = self.index_const(extent as i64);
                    let inside = self.op(&format!("arith.cmpi ult, {i}, {e} : index"));
                    self.line(&format!("scf.if {inside} {{"));
                    self.scoped(*var, i, body)?;
                    self.line("}");
                }
            },
            _ => self.stmts(body)?,
        }
        Ok(())
    }

    /// Iterations `[lo, mid)` of the parallel outer loop `var` as vectors of
    /// [`WIDTH`] consecutive iterations: where the inner loop is strided
    /// (column sums), its loads of `WIDTH` adjacent columns become one
    /// vector load, which LLVM cannot find by itself. Returns `mid`, where
    /// the one-iteration-at-a-time loop takes over.
    fn vector_loop(&mut self, var: Var, body: &[Stmt]) -> Result<String, EmitError> {
        let width = self.index_const(WIDTH as i64);
        let n = self.op("arith.subi %hi, %lo : index");
        let q = self.op(&format!("arith.divui {n}, {width} : index"));
        let whole = self.op(&format!("arith.muli {q}, {width} : index"));
        let mid = self.op(&format!("arith.addi %lo, {whole} : index"));
        let i = format!("%v{}", var.0);
        self.line(&format!("scf.for {i} = %lo to {mid} step {width} {{"));
        self.vector = Some(var);
        let r = self.scoped(var, i, body);
        self.vector = None;
        r?;
        self.line("}");
        Ok(mid)
    }

    /// The float type of values: `f32`, or a vector in a vectorised loop.
    fn fty(&self) -> String {
        match self.vector {
            Some(_) => format!("vector<{WIDTH}xf32>"),
            None => "f32".into(),
        }
    }

    fn fconst(&mut self, x: f64) -> String {
        let lit = f32_literal(x as f32);
        match self.vector {
            Some(_) => self.op(&format!("arith.constant dense<{lit}> : {}", self.fty())),
            None => self.op(&format!("arith.constant {lit} : f32")),
        }
    }

    /// A scalar `f32` as the current value type (broadcast when vectorised).
    fn widen(&mut self, x: String) -> String {
        match self.vector {
            Some(_) => self.op(&format!("vector.broadcast {x} : f32 to {}", self.fty())),
            None => x,
        }
    }

    /// `body` with loop index `var` bound to `value`, one level deeper.
    fn scoped(&mut self, var: Var, value: String, body: &[Stmt]) -> Result<(), EmitError> {
        self.in_loop(var, value, |me| me.stmts(body))
    }

    /// Runs `f` inside a loop region: loop index `var` bound to `value`,
    /// one level deeper, the locals it defines gone after.
    fn in_loop<T>(
        &mut self,
        var: Var,
        value: String,
        f: impl FnOnce(&mut Self) -> Result<T, EmitError>,
    ) -> Result<T, EmitError> {
        let slot = var.0 as usize;
        if slot >= self.vars.len() {
            return Err(self.err(format!("index i{} beyond num_vars", var.0)));
        }
        self.vars[slot] = Some(value);
        let saved = self.locals.clone();
        self.depth += 1;
        let r = f(self)?;
        self.depth -= 1;
        self.locals = saved;
        self.vars[slot] = None;
        Ok(r)
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), EmitError> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), EmitError> {
        match s {
            Stmt::For { var, extent, body } => {
                let i = format!("%i{}", var.0);
                let zero = self.index_const(0);
                let e = self.index_const(*extent as i64);
                let one = self.index_const(1);
                self.line(&format!("scf.for {i} = {zero} to {e} step {one} {{"));
                self.scoped(*var, i, body)?;
                self.line("}");
            }
            Stmt::Let { local, value } => {
                let v = self.expr(value)?;
                self.set_local(*local, v)?;
            }
            Stmt::Reduce {
                local,
                op,
                var,
                extent,
                body,
                value,
            } => {
                let (init, combine) = match op {
                    ReduceFn::Sum => (0.0, "arith.addf"),
                    ReduceFn::Max => (f64::NEG_INFINITY, "arith.maximumf"),
                };
                let ty = self.fty();
                let init = self.fconst(init);
                let i = format!("%i{}", var.0);
                let zero = self.index_const(0);
                let e = self.index_const(*extent as i64);
                let one = self.index_const(1);
                let acc = self.fresh();
                let result = self.fresh();
                self.line(&format!(
                    "{result} = scf.for {i} = {zero} to {e} step {one} iter_args({acc} = {init}) -> ({ty}) {{"
                ));
                self.in_loop(*var, i, |me| {
                    me.stmts(body)?;
                    let v = me.expr(value)?;
                    // Reassociation lets LLVM vectorise the reduction
                    // (several partial sums), as the Cranelift backend does.
                    let next = me.op(&format!("{combine} {acc}, {v} fastmath<reassoc> : {ty}"));
                    me.line(&format!("scf.yield {next} : {ty}"));
                    Ok(())
                })?;
                self.line("}");
                self.set_local(*local, result)?;
            }
            Stmt::Store { buf, index, value } => {
                let v = self.expr(value)?;
                let i = self.index(index)?;
                let m = self.buf(*buf)?;
                let t = self.buffer_type(*buf);
                // Vectorised, every store moves with the outer index (vectorise_pays).
                let op = match self.vector {
                    Some(_) => format!("vector.store {v}, {m}[{i}] : {t}, {}", self.fty()),
                    None => format!("memref.store {v}, {m}[{i}] : {t}"),
                };
                self.line(&op);
            }
        }
        Ok(())
    }

    fn set_local(&mut self, l: Local, v: String) -> Result<(), EmitError> {
        match self.locals.get_mut(l.0 as usize) {
            Some(slot) => {
                *slot = Some(v);
                Ok(())
            }
            None => Err(self.err(format!("local l{} beyond num_locals", l.0))),
        }
    }

    fn var(&self, v: Var) -> Result<String, EmitError> {
        self.vars
            .get(v.0 as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| self.err(format!("index i{} used outside its loop", v.0)))
    }

    fn affine(&mut self, a: &Affine) -> Result<String, EmitError> {
        let mut acc: Option<String> = None;
        for &(v, c) in &a.terms {
            if c == 0 {
                continue;
            }
            let x = self.var(v)?;
            let term = if c == 1 {
                x
            } else {
                let k = self.index_const(c);
                self.op(&format!("arith.muli {x}, {k} : index"))
            };
            acc = Some(match acc {
                None => term,
                Some(s) => self.op(&format!("arith.addi {s}, {term} : index")),
            });
        }
        Ok(match (acc, a.offset) {
            (None, o) => self.index_const(o),
            (Some(s), 0) => s,
            (Some(s), o) => {
                let k = self.index_const(o);
                self.op(&format!("arith.addi {s}, {k} : index"))
            }
        })
    }

    fn index(&mut self, ix: &Index) -> Result<String, EmitError> {
        let base = self.affine(&ix.affine)?;
        let Some(g) = &ix.gather else {
            return Ok(base);
        };
        let at = self.affine(&g.at)?;
        let ids = self.buf(g.buf)?;
        let t = self.buffer_type(g.buf);
        let id = self.op(&format!("memref.load {ids}[{at}] : {t}"));
        let id = self.op(&format!("arith.index_cast {id} : i32 to index"));
        let scaled = match g.scale {
            1 => id,
            s => {
                let k = self.index_const(s);
                self.op(&format!("arith.muli {id}, {k} : index"))
            }
        };
        Ok(self.op(&format!("arith.addi {base}, {scaled} : index")))
    }

    fn expr(&mut self, e: &Expr) -> Result<String, EmitError> {
        Ok(match e {
            Expr::Const(c) => self.fconst(*c),
            Expr::Load { buf, index } => {
                let i = self.index(index)?;
                let m = self.buf(*buf)?;
                let t = self.buffer_type(*buf);
                match self.vector {
                    // `WIDTH` consecutive elements, or one for all lanes.
                    Some(v) if outer_coeff(index, v) == 1 => {
                        self.op(&format!("vector.load {m}[{i}] : {t}, {}", self.fty()))
                    }
                    _ => {
                        let x = self.op(&format!("memref.load {m}[{i}] : {t}"));
                        self.widen(x)
                    }
                }
            }
            Expr::Local(l) => self
                .locals
                .get(l.0 as usize)
                .cloned()
                .flatten()
                .ok_or_else(|| self.err(format!("local l{} used outside its scope", l.0)))?,
            Expr::Var(v) => {
                let x = self.var(*v)?;
                let i = self.op(&format!("arith.index_cast {x} : index to i64"));
                let f = self.op(&format!("arith.sitofp {i} : i64 to f32"));
                let f = self.widen(f);
                if self.vector == Some(*v) {
                    // Lane l holds iteration first + l.
                    let lanes: Vec<String> = (0..WIDTH).map(|l| format!("{l}.0")).collect();
                    let iota = self.op(&format!(
                        "arith.constant dense<[{}]> : {}",
                        lanes.join(", "),
                        self.fty()
                    ));
                    self.op(&format!("arith.addf {f}, {iota} : {}", self.fty()))
                } else {
                    f
                }
            }
            Expr::Unary(f, a) => {
                let a = self.expr(a)?;
                let ty = self.fty();
                let width = self.vector.map(|_| WIDTH);
                let helper = |h: Helper, me: &mut Self| {
                    me.helpers.insert((h, width));
                    let sym = h.symbol(width);
                    me.op(&format!("func.call @{sym}({a}) : ({ty}) -> {ty}"))
                };
                match f {
                    UnaryFn::Neg => self.op(&format!("arith.negf {a} : {ty}")),
                    UnaryFn::Sqrt => self.op(&format!("math.sqrt {a} : {ty}")),
                    UnaryFn::Floor => self.op(&format!("math.floor {a} : {ty}")),
                    UnaryFn::Exp => helper(Helper::Exp, self),
                    UnaryFn::Log => helper(Helper::Log, self),
                    UnaryFn::Tanh => helper(Helper::Tanh, self),
                    UnaryFn::Sin => helper(Helper::Sin, self),
                    UnaryFn::Cos => helper(Helper::Cos, self),
                }
            }
            Expr::Binary(f, a, b) => {
                let a = self.expr(a)?;
                let b = self.expr(b)?;
                let op = match f {
                    BinaryFn::Add => "addf",
                    BinaryFn::Sub => "subf",
                    BinaryFn::Mul => "mulf",
                    BinaryFn::Div => "divf",
                    // NaN-propagating, as the Cranelift backend's.
                    BinaryFn::Max => "maximumf",
                    BinaryFn::Min => "minimumf",
                };
                self.op(&format!("arith.{op} {a}, {b} : {}", self.fty()))
            }
            Expr::SelectEq {
                a,
                b,
                then,
                otherwise,
            } => {
                let a = self.index(a)?;
                let b = self.index(b)?;
                let t = self.expr(then)?;
                let o = self.expr(otherwise)?;
                // Vectorised, neither index moves with the outer one
                // (vectorise_pays): one condition for every lane.
                let eq = self.op(&format!("arith.cmpi eq, {a}, {b} : index"));
                self.op(&format!("arith.select {eq}, {t}, {o} : {}", self.fty()))
            }
        })
    }
}

/// Lanes of a vectorised outer loop: 16 f32, one AVX-512 vector or two
/// AVX2 ones, and one 64-byte line of each strided row.
const WIDTH: usize = 16;

/// The coefficient of `var` in an index (its stride per outer iteration).
fn outer_coeff(ix: &Index, var: Var) -> i64 {
    ix.affine
        .terms
        .iter()
        .filter(|t| t.0 == var)
        .map(|t| t.1)
        .sum()
}

/// Whether computing `WIDTH` iterations of the parallel outer loop `var`
/// at once pays, and is possible: its body has an inner loop (a reduction
/// or a `for`) with no loop inside it, every store moves one element per
/// outer iteration, every load one or none, and no gather position or
/// compared index depends on `var`.
fn vectorise_pays(var: Var, body: &[Stmt]) -> bool {
    let flat = |b: &[Stmt]| {
        b.iter()
            .all(|s| matches!(s, Stmt::Let { .. } | Stmt::Store { .. }))
    };
    let inner = body.iter().any(|s| match s {
        Stmt::For { body, .. } | Stmt::Reduce { body, .. } => flat(body),
        _ => false,
    });
    let nested = body.iter().any(|s| match s {
        Stmt::For { body, .. } | Stmt::Reduce { body, .. } => !flat(body),
        _ => false,
    });
    let moves = |ix: &Index| {
        ix.gather
            .as_ref()
            .is_some_and(|g| g.at.terms.iter().any(|t| t.0 == var))
    };
    let mut ok = true;
    visit_stmts(body, &mut |s| {
        let value = match s {
            Stmt::Store { index, value, .. } => {
                ok &= outer_coeff(index, var) == 1 && !moves(index);
                Some(value)
            }
            Stmt::Let { value, .. } | Stmt::Reduce { value, .. } => Some(value),
            Stmt::For { .. } => None,
        };
        if let Some(v) = value {
            visit_expr(v, &mut |e| match e {
                Expr::Load { index, .. } => {
                    ok &= matches!(outer_coeff(index, var), 0 | 1) && !moves(index);
                }
                Expr::SelectEq { a, b, .. } => {
                    ok &= outer_coeff(a, var) == 0 && outer_coeff(b, var) == 0;
                    ok &= !moves(a) && !moves(b);
                }
                _ => {}
            });
        }
    });
    inner && !nested && ok
}

#[derive(Clone, Copy)]
enum Outer {
    /// `scf.for` over `[%lo, %hi)`.
    Range,
    /// The GPU thread's global id, guarded by the extent.
    Thread,
}
