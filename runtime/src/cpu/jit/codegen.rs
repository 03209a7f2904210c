//! One loop kernel → one Cranelift function
//! `fn(bufs: *const *mut u8, lo: i64, hi: i64)`.
//!
//! Loops become header/body/exit blocks with the index as a block parameter;
//! a `Reduce` carries its accumulator as a second header parameter. Locals
//! are plain SSA values: the IR scopes them like the loops, so a definition
//! always dominates its uses. When the kernel is a single outer `for`, that
//! loop runs over `[lo, hi)` (the executor splits it across threads);
//! otherwise the whole body runs once and `lo`, `hi` are ignored.
//!
//! Loads from buffers the kernel never stores to are marked read-only, which
//! lets Cranelift's e-graph pass merge repeated loads and hoist invariant
//! ones out of inner loops.

use super::math::MathFns;
use super::JitError;
use cranelift_codegen::ir::{condcodes::IntCC, types, BlockArg, InstBuilder, MemFlags, Type, Value};
use cranelift_frontend::FunctionBuilder;
use gsc_compiler::kernel::{
    Affine, BinaryFn, BufId, Expr, Index, LoopKernel, ReduceFn, Stmt, UnaryFn,
};

pub(super) struct Lower<'a, 'b> {
    pub b: FunctionBuilder<'b>,
    pub math: &'a MathFns,
    /// Base address of each buffer the kernel touches, loaded once at entry.
    pub bases: Vec<Option<Value>>,
    /// Buffers the kernel stores to (their loads are not read-only).
    pub written: Vec<bool>,
    pub vars: Vec<Option<Value>>,
    pub locals: Vec<Option<Value>>,
    pub ptr: Type,
    pub kernel: &'a str,
}

fn malformed(kernel: &str, what: String) -> JitError {
    JitError::Malformed {
        kernel: kernel.to_string(),
        what,
    }
}

impl Lower<'_, '_> {
    /// Emits the whole kernel into the current (entry) block, which has the
    /// three function parameters.
    pub fn kernel(&mut self, k: &LoopKernel, parallel: bool, lo: Value, hi: Value) -> Result<(), JitError> {
        match (&k.body[..], parallel) {
            ([Stmt::For { var, body, .. }], true) => {
                self.for_loop(*var, lo, hi, body)?;
            }
            _ => self.stmts(&k.body)?,
        }
        self.b.ins().return_(&[]);
        Ok(())
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), JitError> {
        for s in body {
            match s {
                Stmt::For { var, extent, body } => {
                    let lo = self.b.ins().iconst(types::I64, 0);
                    let hi = self.b.ins().iconst(types::I64, *extent as i64);
                    self.for_loop(*var, lo, hi, body)?;
                }
                Stmt::Let { local, value } => {
                    let v = self.expr(value)?;
                    self.set_local(local.0, v)?;
                }
                Stmt::Reduce {
                    local,
                    op,
                    var,
                    extent,
                    body,
                    value,
                } => {
                    let v = self.reduce(*op, *var, *extent, body, value)?;
                    self.set_local(local.0, v)?;
                }
                Stmt::Store { buf, index, value } => {
                    let v = self.expr(value)?;
                    let addr = self.address(*buf, index)?;
                    self.b.ins().store(MemFlags::trusted(), v, addr, 0);
                }
            }
        }
        Ok(())
    }

    fn set_local(&mut self, l: u32, v: Value) -> Result<(), JitError> {
        let slot = self
            .locals
            .get_mut(l as usize)
            .ok_or_else(|| malformed(self.kernel, format!("local l{l} beyond num_locals")))?;
        *slot = Some(v);
        Ok(())
    }

    fn set_var(&mut self, v: u32, i: Option<Value>) -> Result<(), JitError> {
        let slot = self
            .vars
            .get_mut(v as usize)
            .ok_or_else(|| malformed(self.kernel, format!("index i{v} beyond num_vars")))?;
        *slot = i;
        Ok(())
    }

    fn for_loop(
        &mut self,
        var: gsc_compiler::kernel::Var,
        lo: Value,
        hi: Value,
        body: &[Stmt],
    ) -> Result<(), JitError> {
        let header = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[BlockArg::Value(lo)]);
        self.b.switch_to_block(header);
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(go, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        self.set_var(var.0, Some(i))?;
        self.stmts(body)?;
        self.set_var(var.0, None)?;
        let next = self.b.ins().iadd_imm(i, 1);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    fn reduce(
        &mut self,
        op: ReduceFn,
        var: gsc_compiler::kernel::Var,
        extent: usize,
        body: &[Stmt],
        value: &Expr,
    ) -> Result<Value, JitError> {
        let init = match op {
            ReduceFn::Sum => 0.0,
            ReduceFn::Max => f32::NEG_INFINITY,
        };
        let init = self.b.ins().f32const(init);
        let zero = self.b.ins().iconst(types::I64, 0);
        let header = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        let acc = self.b.append_block_param(header, types::F32);
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        let result = self.b.append_block_param(exit, types::F32);
        self.b
            .ins()
            .jump(header, &[BlockArg::Value(zero), BlockArg::Value(init)]);
        self.b.switch_to_block(header);
        let go = self
            .b
            .ins()
            .icmp_imm(IntCC::SignedLessThan, i, extent as i64);
        self.b
            .ins()
            .brif(go, inner, &[], exit, &[BlockArg::Value(acc)]);
        self.b.switch_to_block(inner);
        self.set_var(var.0, Some(i))?;
        self.stmts(body)?;
        let v = self.expr(value)?;
        self.set_var(var.0, None)?;
        let acc2 = match op {
            ReduceFn::Sum => self.b.ins().fadd(acc, v),
            ReduceFn::Max => self.b.ins().fmax(acc, v),
        };
        let next = self.b.ins().iadd_imm(i, 1);
        self.b
            .ins()
            .jump(header, &[BlockArg::Value(next), BlockArg::Value(acc2)]);
        self.b.switch_to_block(exit);
        Ok(result)
    }

    fn var(&self, v: gsc_compiler::kernel::Var) -> Result<Value, JitError> {
        self.vars
            .get(v.0 as usize)
            .copied()
            .flatten()
            .ok_or_else(|| malformed(self.kernel, format!("index i{} used outside its loop", v.0)))
    }

    fn base(&self, buf: BufId) -> Result<Value, JitError> {
        self.bases
            .get(buf.0)
            .copied()
            .flatten()
            .ok_or_else(|| malformed(self.kernel, format!("buffer b{} not in the kernel's operands", buf.0)))
    }

    fn affine(&mut self, a: &Affine) -> Result<Value, JitError> {
        let mut acc = self.b.ins().iconst(types::I64, a.offset);
        for (v, c) in &a.terms {
            let i = self.var(*v)?;
            let t = if *c == 1 { i } else { self.b.ins().imul_imm(i, *c) };
            acc = self.b.ins().iadd(acc, t);
        }
        Ok(acc)
    }

    /// The element index (i64) of `ix`.
    fn index(&mut self, ix: &Index) -> Result<Value, JitError> {
        let mut at = self.affine(&ix.affine)?;
        if let Some(g) = &ix.gather {
            let base = self.base(g.buf)?;
            let gi = self.affine(&g.at)?;
            let off = self.b.ins().ishl_imm(gi, 2);
            let addr = self.b.ins().iadd(base, off);
            let flags = if self.written.get(g.buf.0).copied().unwrap_or(true) {
                MemFlags::trusted()
            } else {
                MemFlags::trusted().with_readonly()
            };
            let v = self.b.ins().load(types::I32, flags, addr, 0);
            let v = self.b.ins().sextend(types::I64, v);
            let v = if g.scale == 1 { v } else { self.b.ins().imul_imm(v, g.scale) };
            at = self.b.ins().iadd(at, v);
        }
        Ok(at)
    }

    fn address(&mut self, buf: BufId, ix: &Index) -> Result<Value, JitError> {
        let base = self.base(buf)?;
        let at = self.index(ix)?;
        let off = self.b.ins().ishl_imm(at, 2);
        debug_assert_eq!(self.ptr, types::I64);
        Ok(self.b.ins().iadd(base, off))
    }

    fn expr(&mut self, e: &Expr) -> Result<Value, JitError> {
        Ok(match e {
            Expr::Const(c) => self.b.ins().f32const(*c as f32),
            Expr::Load { buf, index } => {
                let addr = self.address(*buf, index)?;
                let flags = if self.written.get(buf.0).copied().unwrap_or(true) {
                    MemFlags::trusted()
                } else {
                    MemFlags::trusted().with_readonly()
                };
                self.b.ins().load(types::F32, flags, addr, 0)
            }
            Expr::Local(l) => self
                .locals
                .get(l.0 as usize)
                .copied()
                .flatten()
                .ok_or_else(|| malformed(self.kernel, format!("local l{} used before its definition", l.0)))?,
            Expr::Var(v) => {
                let i = self.var(*v)?;
                self.b.ins().fcvt_from_sint(types::F32, i)
            }
            Expr::Unary(f, a) => {
                let x = self.expr(a)?;
                match f {
                    UnaryFn::Neg => self.b.ins().fneg(x),
                    UnaryFn::Sqrt => self.b.ins().sqrt(x),
                    UnaryFn::Exp => super::math::exp(&mut self.b, x),
                    UnaryFn::Tanh => super::math::tanh(&mut self.b, x),
                    UnaryFn::Log => self.call(self.math.log, x),
                    UnaryFn::Sin => self.call(self.math.sin, x),
                    UnaryFn::Cos => self.call(self.math.cos, x),
                }
            }
            Expr::Binary(f, a, c) => {
                let x = self.expr(a)?;
                let y = self.expr(c)?;
                let ins = self.b.ins();
                match f {
                    BinaryFn::Add => ins.fadd(x, y),
                    BinaryFn::Sub => ins.fsub(x, y),
                    BinaryFn::Mul => ins.fmul(x, y),
                    BinaryFn::Div => ins.fdiv(x, y),
                    BinaryFn::Max => ins.fmax(x, y),
                    BinaryFn::Min => ins.fmin(x, y),
                }
            }
            Expr::SelectEq {
                a,
                b,
                then,
                otherwise,
            } => {
                let ia = self.index(a)?;
                let ib = self.index(b)?;
                let t = self.expr(then)?;
                let o = self.expr(otherwise)?;
                let eq = self.b.ins().icmp(IntCC::Equal, ia, ib);
                self.b.ins().select(eq, t, o)
            }
        })
    }

    fn call(&mut self, f: cranelift_codegen::ir::FuncRef, x: Value) -> Value {
        let call = self.b.ins().call(f, &[x]);
        self.b.inst_results(call)[0]
    }
}
