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
//!
//! Innermost loops and reductions whose accesses are unit-stride or
//! invariant in the loop index run four lanes at a time (f32x4, Cranelift's
//! widest), with a scalar loop for the remainder: see [`vectorizable`].
//! Inside such a loop, expressions are F32 when invariant and F32X4
//! otherwise; an invariant operand is splatted where it meets a vector.

use super::math::MathFns;
use super::JitError;
use cranelift_codegen::ir::{
    condcodes::IntCC, types, BlockArg, ConstantData, Endianness, FuncRef, InstBuilder, MemFlags,
    Type, Value,
};
use cranelift_frontend::FunctionBuilder;
use gsc_compiler::kernel::{
    visit_expr, Affine, BinaryFn, BufId, Expr, Index, LoopKernel, ReduceFn, Stmt, UnaryFn, Var,
};

/// f32 lanes of one Cranelift vector.
const LANES: i64 = 4;

/// Vectors of a jammed reduction loop (see [`Lower::jammed_loop`]): 4·4
/// lanes = 64 bytes, one cache line of each strided row.
const JAM: i64 = 4;

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
    /// Emit f32x4 loops where [`vectorizable`] allows.
    pub simd: bool,
    /// The index of the loop being emitted four lanes at a time; its value
    /// in `vars` is lane 0's.
    pub vector: Option<Var>,
}

/// Coefficient of `var` in `a`.
fn coeff(a: &Affine, var: Var) -> i64 {
    a.terms.iter().filter(|t| t.0 == var).map(|t| t.1).sum()
}

/// Whether the loop over `var` with this body (and reduction value) can run
/// four iterations at once with the same result as one at a time: every load is unit-stride (coefficient 1) or invariant in `var`,
/// every store unit-stride; gathers' positions invariant in `var`; and a
/// buffer the loop stores to is loaded only at exactly a stored index (so
/// no lane reads what another lane writes). Nested reductions and loops are
/// allowed: they run once per group of four `var`s with four-lane values (a
/// column sum becomes four column sums at once; see the extra rule for
/// stores inside nested loops below).
pub(super) fn vectorizable(var: Var, body: &[Stmt], value: Option<&Expr>) -> bool {
    let mut v = Vectorizable {
        var,
        ok: true,
        nested: false,
        stores: vec![],
        loads: vec![],
    };
    v.stmts(body);
    if let Some(e) = value {
        v.expr(e);
    }
    let Vectorizable {
        ok,
        stores,
        loads,
        nested,
        ..
    } = v;
    if !ok {
        return false;
    }
    if nested {
        // Stores inside an inner `for` repeat across its iterations: lane
        // L's accesses to a stored buffer are at offset + var + L + rest,
        // with rest a combination of inner indices. If every access to the
        // buffer has the same index and rest's coefficients are multiples
        // of LANES, two lanes can never reach the same element.
        return stores.iter().all(|(b, six)| {
            let rest_ok = six
                .affine
                .terms
                .iter()
                .all(|(u, c)| *u == var || c % LANES == 0);
            rest_ok
                && stores
                    .iter()
                    .chain(&loads)
                    .filter(|a| a.0 == *b)
                    .all(|a| a.1 == *six)
        });
    }
    loads.iter().all(|(b, ix)| {
        let mut same_buf = stores.iter().filter(|s| s.0 == *b).peekable();
        same_buf.peek().is_none() || same_buf.any(|s| s.1 == *ix)
    })
}

struct Vectorizable {
    var: Var,
    ok: bool,
    /// A `for` inside the loop (it then runs scalar in its own index, with
    /// four-lane values).
    nested: bool,
    stores: Vec<(BufId, Index)>,
    loads: Vec<(BufId, Index)>,
}

impl Vectorizable {
    fn gather_ok(&self, ix: &Index) -> bool {
        ix.gather
            .as_ref()
            .is_none_or(|g| coeff(&g.at, self.var) == 0)
    }

    fn expr(&mut self, e: &Expr) {
        visit_expr(e, &mut |e| match e {
            Expr::Load { buf, index } => {
                let c = coeff(&index.affine, self.var);
                if !(c == 0 || c == 1) || !self.gather_ok(index) {
                    self.ok = false;
                }
                self.loads.push((*buf, index.clone()));
            }
            Expr::SelectEq { a, b, .. } if !self.gather_ok(a) || !self.gather_ok(b) => {
                self.ok = false
            }
            _ => {}
        });
    }

    fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            match s {
                Stmt::For { body, .. } => {
                    self.nested = true;
                    self.stmts(body);
                }
                Stmt::Reduce { body, value, .. } => {
                    self.stmts(body);
                    self.expr(value);
                }
                Stmt::Let { value, .. } => self.expr(value),
                Stmt::Store { buf, index, value } => {
                    self.expr(value);
                    if coeff(&index.affine, self.var) != 1 || !self.gather_ok(index) {
                        self.ok = false;
                    }
                    self.stores.push((*buf, index.clone()));
                }
            }
        }
    }
}

/// Whether a vectorised loop with this body is worth jamming: it reduces
/// or loops over an inner index at its top level (strided, since the
/// vectorised index is the unit-stride one), one level deep.
fn jammable(body: &[Stmt]) -> bool {
    let flat = |body: &[Stmt]| {
        body.iter()
            .all(|s| matches!(s, Stmt::Let { .. } | Stmt::Store { .. }))
    };
    body.iter()
        .any(|s| matches!(s, Stmt::Reduce { .. } | Stmt::For { .. }))
        && body.iter().all(|s| match s {
            Stmt::For { body, .. } | Stmt::Reduce { body, .. } => flat(body),
            _ => true,
        })
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
    pub fn kernel(
        &mut self,
        k: &LoopKernel,
        parallel: bool,
        lo: Value,
        hi: Value,
    ) -> Result<(), JitError> {
        match (&k.body[..], parallel) {
            ([Stmt::For { var, body, .. }], true) => {
                self.range_loop(*var, lo, hi, body)?;
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
                    self.range_loop(*var, lo, hi, body)?;
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
                    let mut v = self.expr(value)?;
                    let addr = self.address(*buf, index)?;
                    let flags = if self.lanewise(index) {
                        v = self.widen(v);
                        MemFlags::new().with_notrap()
                    } else {
                        MemFlags::trusted()
                    };
                    self.b.ins().store(flags, v, addr, 0);
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

    /// `for var in lo..hi`: f32x4 over the largest multiple of four
    /// iterations and scalar for the rest when the body allows.
    fn range_loop(
        &mut self,
        var: Var,
        lo: Value,
        hi: Value,
        body: &[Stmt],
    ) -> Result<(), JitError> {
        if !(self.simd && self.vector.is_none() && vectorizable(var, body, None)) {
            return self.for_loop(var, lo, hi, body, 1);
        }
        let mut lo = lo;
        if jammable(body) {
            let n = self.b.ins().isub(hi, lo);
            let whole = self.b.ins().band_imm(n, !(LANES * JAM - 1));
            let mid = self.b.ins().iadd(lo, whole);
            self.vector = Some(var);
            let r = self.jammed_loop(var, lo, mid, body);
            self.vector = None;
            r?;
            lo = mid;
        }
        let n = self.b.ins().isub(hi, lo);
        let whole = self.b.ins().band_imm(n, !(LANES - 1));
        let mid = self.b.ins().iadd(lo, whole);
        self.vector = Some(var);
        let r = self.for_loop(var, lo, mid, body, LANES);
        self.vector = None;
        r?;
        self.for_loop(var, mid, hi, body, 1)
    }

    /// A vectorised loop whose body reduces or loops over an inner index (a
    /// column sum: `out[j] = Σ_i x[i·n + j]`; a column normalisation), `JAM`
    /// vectors of `var` per iteration with their inner loops fused into one.
    /// One vector at a time would walk the rows once per four columns and
    /// use a quarter of each cache line it loads; jammed, the whole line.
    fn jammed_loop(
        &mut self,
        var: Var,
        lo: Value,
        hi: Value,
        body: &[Stmt],
    ) -> Result<(), JitError> {
        self.counted_loop(lo, hi, LANES * JAM, |me, i| {
            // Each copy has its own locals; statements other than reductions
            // are emitted once per copy, with `var` at that copy's first lane.
            let mut copies = vec![me.locals.clone(); JAM as usize];
            for s in body {
                match s {
                    Stmt::Reduce {
                        local,
                        op,
                        var: rvar,
                        extent,
                        body: rbody,
                        value,
                    } => {
                        let results = me.jammed_reduce(
                            var,
                            i,
                            &mut copies,
                            *op,
                            *rvar,
                            *extent,
                            rbody,
                            value,
                        )?;
                        for (copy, r) in copies.iter_mut().zip(results) {
                            copy[local.0 as usize] = Some(r);
                        }
                    }
                    Stmt::For {
                        var: fvar,
                        extent,
                        body: fbody,
                    } => me.jammed_for(var, i, &mut copies, *fvar, *extent, fbody)?,
                    other => {
                        for g in 0..JAM as usize {
                            me.in_copy(var, i, g, &mut copies, |me| {
                                me.stmts(std::slice::from_ref(other))
                            })?;
                        }
                    }
                }
            }
            me.set_var(var.0, None)
        })
    }

    /// `for i in (lo..hi).step_by(step) { body(i) }` as Cranelift blocks:
    /// a header testing `i < hi`, the body, and an exit the builder is left
    /// in.
    fn counted_loop(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value) -> Result<(), JitError>,
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
        body(self, i)?;
        let next = self.b.ins().iadd_imm(i, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Runs `f` as copy `g` of a jammed loop body: that copy's locals, and
    /// `var` at `base + g·LANES`.
    fn in_copy<T>(
        &mut self,
        var: Var,
        base: Value,
        g: usize,
        copies: &mut [Vec<Option<Value>>],
        f: impl FnOnce(&mut Self) -> Result<T, JitError>,
    ) -> Result<T, JitError> {
        let at = self.b.ins().iadd_imm(base, g as i64 * LANES);
        self.set_var(var.0, Some(at))?;
        std::mem::swap(&mut self.locals, &mut copies[g]);
        let r = f(self);
        std::mem::swap(&mut self.locals, &mut copies[g]);
        r
    }

    /// One inner loop running every copy's body per iteration. Interleaving
    /// the copies is safe: [`vectorizable`] proved that a loop with a nested
    /// `for` touches each stored buffer only at its own lanes' elements.
    fn jammed_for(
        &mut self,
        var: Var,
        base: Value,
        copies: &mut [Vec<Option<Value>>],
        fvar: Var,
        extent: usize,
        body: &[Stmt],
    ) -> Result<(), JitError> {
        let lo = self.b.ins().iconst(types::I64, 0);
        let hi = self.b.ins().iconst(types::I64, extent as i64);
        self.counted_loop(lo, hi, 1, |me, i| {
            for g in 0..copies.len() {
                me.in_copy(var, base, g, copies, |me| {
                    me.set_var(fvar.0, Some(i))?;
                    me.stmts(body)
                })?;
            }
            me.set_var(fvar.0, None)
        })
    }

    /// One reduction loop carrying every copy's four-lane accumulator.
    #[allow(clippy::too_many_arguments)]
    fn jammed_reduce(
        &mut self,
        var: Var,
        base: Value,
        copies: &mut [Vec<Option<Value>>],
        op: ReduceFn,
        rvar: Var,
        extent: usize,
        body: &[Stmt],
        value: &Expr,
    ) -> Result<Vec<Value>, JitError> {
        let init = self.identity(op);
        let init = self.b.ins().splat(types::F32X4, init);
        let lo = self.b.ins().iconst(types::I64, 0);
        let hi = self.b.ins().iconst(types::I64, extent as i64);
        let header = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        let accs: Vec<Value> = (0..copies.len())
            .map(|_| self.b.append_block_param(header, types::F32X4))
            .collect();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        let results: Vec<Value> = (0..copies.len())
            .map(|_| self.b.append_block_param(exit, types::F32X4))
            .collect();
        let mut args = vec![BlockArg::Value(lo)];
        args.extend(accs.iter().map(|_| BlockArg::Value(init)));
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        let done: Vec<BlockArg> = accs.iter().map(|a| BlockArg::Value(*a)).collect();
        self.b.ins().brif(go, inner, &[], exit, &done);
        self.b.switch_to_block(inner);
        let mut next = vec![];
        for (g, acc) in accs.iter().enumerate() {
            let v = self.in_copy(var, base, g, copies, |me| {
                me.set_var(rvar.0, Some(i))?;
                me.stmts(body)?;
                let v = me.expr(value)?;
                Ok(me.widen(v))
            })?;
            next.push(self.combine(op, *acc, v));
        }
        self.set_var(rvar.0, None)?;
        let step = self.b.ins().iadd_imm(i, 1);
        let mut args = vec![BlockArg::Value(step)];
        args.extend(next.into_iter().map(BlockArg::Value));
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(exit);
        Ok(results)
    }

    fn for_loop(
        &mut self,
        var: Var,
        lo: Value,
        hi: Value,
        body: &[Stmt],
        step: i64,
    ) -> Result<(), JitError> {
        self.counted_loop(lo, hi, step, |me, i| {
            me.set_var(var.0, Some(i))?;
            me.stmts(body)?;
            me.set_var(var.0, None)
        })
    }

    fn reduce(
        &mut self,
        op: ReduceFn,
        var: Var,
        extent: usize,
        body: &[Stmt],
        value: &Expr,
    ) -> Result<Value, JitError> {
        let init = self.identity(op);
        let zero = self.b.ins().iconst(types::I64, 0);
        let end = self.b.ins().iconst(types::I64, extent as i64);
        if self.vector.is_some() {
            // Inside an f32x4 loop over an outer index: four reductions at
            // once, one per lane.
            let vinit = self.b.ins().splat(types::F32X4, init);
            return self.reduce_loop(op, var, zero, end, vinit, body, value, 1);
        }
        let whole = extent as i64 / LANES * LANES;
        if !(self.simd
            && self.vector.is_none()
            && whole >= 2 * LANES
            && vectorizable(var, body, Some(value)))
        {
            return self.reduce_loop(op, var, zero, end, init, body, value, 1);
        }
        // Four partial accumulators, combined pairwise, then the remainder.
        let mid = self.b.ins().iconst(types::I64, whole);
        let vinit = self.b.ins().splat(types::F32X4, init);
        self.vector = Some(var);
        let acc = self.reduce_loop(op, var, zero, mid, vinit, body, value, LANES);
        self.vector = None;
        let acc = acc?;
        let lane = |b: &mut FunctionBuilder, l: u8| b.ins().extractlane(acc, l);
        let (a0, a1, a2, a3) = (
            lane(&mut self.b, 0),
            lane(&mut self.b, 1),
            lane(&mut self.b, 2),
            lane(&mut self.b, 3),
        );
        let s01 = self.combine(op, a0, a1);
        let s23 = self.combine(op, a2, a3);
        let partial = self.combine(op, s01, s23);
        self.reduce_loop(op, var, mid, end, partial, body, value, 1)
    }

    /// `acc = init; for var in lo..hi step: body; acc = acc op value`.
    #[allow(clippy::too_many_arguments)]
    fn reduce_loop(
        &mut self,
        op: ReduceFn,
        var: Var,
        lo: Value,
        hi: Value,
        init: Value,
        body: &[Stmt],
        value: &Expr,
        step: i64,
    ) -> Result<Value, JitError> {
        let ty = self.b.func.dfg.value_type(init);
        let header = self.b.create_block();
        let i = self.b.append_block_param(header, types::I64);
        let acc = self.b.append_block_param(header, ty);
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        let result = self.b.append_block_param(exit, ty);
        self.b
            .ins()
            .jump(header, &[BlockArg::Value(lo), BlockArg::Value(init)]);
        self.b.switch_to_block(header);
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b
            .ins()
            .brif(go, inner, &[], exit, &[BlockArg::Value(acc)]);
        self.b.switch_to_block(inner);
        self.set_var(var.0, Some(i))?;
        self.stmts(body)?;
        let v = self.expr(value)?;
        let v = if ty.is_vector() { self.widen(v) } else { v };
        self.set_var(var.0, None)?;
        let acc2 = self.combine(op, acc, v);
        let next = self.b.ins().iadd_imm(i, step);
        self.b
            .ins()
            .jump(header, &[BlockArg::Value(next), BlockArg::Value(acc2)]);
        self.b.switch_to_block(exit);
        Ok(result)
    }

    /// The value a reduction starts from.
    fn identity(&mut self, op: ReduceFn) -> Value {
        self.b.ins().f32const(match op {
            ReduceFn::Sum => 0.0,
            ReduceFn::Max => f32::NEG_INFINITY,
        })
    }

    /// One step of a reduction: `acc op v`.
    fn combine(&mut self, op: ReduceFn, acc: Value, v: Value) -> Value {
        match op {
            ReduceFn::Sum => self.b.ins().fadd(acc, v),
            ReduceFn::Max => self.b.ins().fmax(acc, v),
        }
    }

    fn is_vec(&self, v: Value) -> bool {
        self.b.func.dfg.value_type(v).is_vector()
    }

    /// `v` as f32x4 (splatted when it is a scalar).
    fn widen(&mut self, v: Value) -> Value {
        if self.is_vec(v) {
            v
        } else {
            self.b.ins().splat(types::F32X4, v)
        }
    }

    /// Whether `ix` varies with the vectorised index (unit stride, as
    /// [`vectorizable`] guaranteed).
    fn lanewise(&self, ix: &Index) -> bool {
        self.vector.is_some_and(|v| coeff(&ix.affine, v) != 0)
    }

    fn vconst(&mut self, ty: Type, bytes: Vec<u8>) -> Value {
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(ty, c)
    }

    fn var(&self, v: gsc_compiler::kernel::Var) -> Result<Value, JitError> {
        self.vars
            .get(v.0 as usize)
            .copied()
            .flatten()
            .ok_or_else(|| malformed(self.kernel, format!("index i{} used outside its loop", v.0)))
    }

    fn base(&self, buf: BufId) -> Result<Value, JitError> {
        self.bases.get(buf.0).copied().flatten().ok_or_else(|| {
            malformed(
                self.kernel,
                format!("buffer b{} not in the kernel's operands", buf.0),
            )
        })
    }

    fn affine(&mut self, a: &Affine) -> Result<Value, JitError> {
        let mut acc = self.b.ins().iconst(types::I64, a.offset);
        for (v, c) in &a.terms {
            let i = self.var(*v)?;
            let t = if *c == 1 {
                i
            } else {
                self.b.ins().imul_imm(i, *c)
            };
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
            let v = if g.scale == 1 {
                v
            } else {
                self.b.ins().imul_imm(v, g.scale)
            };
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
                let written = self.written.get(buf.0).copied().unwrap_or(true);
                // Vector loads are not 16-byte aligned in general: no
                // `aligned` flag, so they are never folded into an
                // instruction that demands alignment.
                let (ty, flags) = if self.lanewise(index) {
                    (types::F32X4, MemFlags::new().with_notrap())
                } else {
                    (types::F32, MemFlags::trusted())
                };
                let flags = if written {
                    flags
                } else {
                    flags.with_readonly()
                };
                self.b.ins().load(ty, flags, addr, 0)
            }
            Expr::Local(l) => self
                .locals
                .get(l.0 as usize)
                .copied()
                .flatten()
                .ok_or_else(|| {
                    malformed(
                        self.kernel,
                        format!("local l{} used before its definition", l.0),
                    )
                })?,
            Expr::Var(v) => {
                let i = self.var(*v)?;
                let x = self.b.ins().fcvt_from_sint(types::F32, i);
                if self.vector == Some(*v) {
                    let x = self.b.ins().splat(types::F32X4, x);
                    let iota = [0.0f32, 1.0, 2.0, 3.0]
                        .iter()
                        .flat_map(|f| f.to_le_bytes())
                        .collect();
                    let iota = self.vconst(types::F32X4, iota);
                    self.b.ins().fadd(x, iota)
                } else {
                    x
                }
            }
            Expr::Unary(f, a) => {
                let x = self.expr(a)?;
                match f {
                    UnaryFn::Neg => self.b.ins().fneg(x),
                    UnaryFn::Sqrt => self.b.ins().sqrt(x),
                    UnaryFn::Exp => super::math::exp(&mut self.b, x),
                    UnaryFn::Tanh => super::math::tanh(&mut self.b, x),
                    UnaryFn::Log => self.call(self.math.log, x),
                    UnaryFn::Sin => super::math::sin_cos(&mut self.b, x, false),
                    UnaryFn::Cos => super::math::sin_cos(&mut self.b, x, true),
                    UnaryFn::Floor => self.b.ins().floor(x),
                }
            }
            Expr::Binary(f, a, c) => {
                let mut x = self.expr(a)?;
                let mut y = self.expr(c)?;
                if self.is_vec(x) || self.is_vec(y) {
                    x = self.widen(x);
                    y = self.widen(y);
                }
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
                let mut t = self.expr(then)?;
                let mut o = self.expr(otherwise)?;
                let (ca, cb) = match self.vector {
                    Some(v) => (coeff(&a.affine, v), coeff(&b.affine, v)),
                    None => (0, 0),
                };
                if ca == cb {
                    // The same comparison in every lane.
                    if self.is_vec(t) || self.is_vec(o) {
                        t = self.widen(t);
                        o = self.widen(o);
                    }
                    let eq = self.b.ins().icmp(IntCC::Equal, ia, ib);
                    self.b.ins().select(eq, t, o)
                } else {
                    // Lane l: ia + ca·l == ib + cb·l ⇔ ia − ib == (cb − ca)·l.
                    // The difference is clamped into i32 first; the lane
                    // offsets are tiny, so clamping never creates equality.
                    let diff = self.b.ins().isub(ia, ib);
                    let lim = 1i64 << 30;
                    let hi = self.b.ins().iconst(types::I64, lim);
                    let lo = self.b.ins().iconst(types::I64, -lim);
                    let diff = self.b.ins().smin(diff, hi);
                    let diff = self.b.ins().smax(diff, lo);
                    let diff = self.b.ins().ireduce(types::I32, diff);
                    let diff = self.b.ins().splat(types::I32X4, diff);
                    let steps = (0..LANES as i32)
                        .flat_map(|l| ((cb - ca) as i32 * l).to_le_bytes())
                        .collect();
                    let steps = self.vconst(types::I32X4, steps);
                    let mask = self.b.ins().icmp(IntCC::Equal, diff, steps);
                    let mask = self.b.ins().bitcast(
                        types::F32X4,
                        MemFlags::new().with_endianness(Endianness::Little),
                        mask,
                    );
                    let t = self.widen(t);
                    let o = self.widen(o);
                    self.b.ins().bitselect(mask, t, o)
                }
            }
        })
    }

    /// A libm call, once per lane for a vector.
    fn call(&mut self, f: FuncRef, x: Value) -> Value {
        if !self.is_vec(x) {
            let call = self.b.ins().call(f, &[x]);
            return self.b.inst_results(call)[0];
        }
        let mut out = None;
        for l in 0..LANES as u8 {
            let xl = self.b.ins().extractlane(x, l);
            let call = self.b.ins().call(f, &[xl]);
            let r = self.b.inst_results(call)[0];
            out = Some(match out {
                None => self.b.ins().splat(types::F32X4, r),
                Some(v) => self.b.ins().insertlane(v, r, l),
            });
        }
        out.unwrap_or(x)
    }
}
