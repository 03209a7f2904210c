//! Backend-neutral analyses of a kernel program, proved once before any
//! backend generates code for it: every index in bounds for all loop
//! indices, the values each integer buffer may hold for its gathers to stay
//! in bounds (checked by the executor before each run), which outer loops
//! may run in parallel, and that no kernel writes memory another of its
//! operands occupies.

use crate::ir::*;

/// What the checks found out about one loop kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopFacts {
    /// Buffers the kernel loads from or stores to (gathered-through
    /// integer buffers included), ascending.
    pub touched: Vec<BufId>,
    /// Buffers it stores to, ascending.
    pub written: Vec<BufId>,
    /// The outer loop's extent when its iterations may run on different
    /// threads (or GPU threads); `None` means one sequential call.
    pub parallel: Option<usize>,
    /// Innermost iterations of one run (scalar work estimate, for deciding
    /// whether splitting is worth a thread hand-off).
    pub work: u64,
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

pub fn analyse_loop(
    program: &KernelProgram,
    k: &LoopKernel,
    int_ranges: &mut Vec<Option<(i64, i64)>>,
) -> Result<LoopFacts, String> {
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
    Ok(LoopFacts {
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
    var: Var,
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

/// A kernel the analyses reject, with what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("kernel k{kernel}: {what}")]
pub struct Rejected {
    pub kernel: usize,
    pub what: String,
}

/// What every backend needs to know of a program before running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramFacts {
    /// Indexed like the program's kernels; `Some` for loop kernels.
    pub loops: Vec<Option<LoopFacts>>,
    /// Per I32 buffer: the inclusive range its values must lie in, and the
    /// first kernel that needs it (for the error message).
    pub int_ranges: Vec<Option<IntRange>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntRange {
    pub lo: i64,
    pub hi: i64,
    pub kernel: usize,
}

/// Validates `program` and proves what running it relies on: well-formed
/// kernels, in-bounds indices, library outputs that share no memory with
/// their other operands. Fails naming the first kernel that does not pass.
pub fn analyse(program: &KernelProgram) -> Result<ProgramFacts, Rejected> {
    crate::validate(program).map_err(|e| Rejected {
        kernel: e.kernel,
        what: e.detail,
    })?;
    let mut ranges: Vec<Option<(i64, i64)>> = vec![None; program.buffers.len()];
    let mut loops = vec![None; program.kernels.len()];
    for (i, k) in program.kernels.iter().enumerate() {
        let fail = |what: String| Rejected { kernel: i, what };
        match k {
            Kernel::Loop(l) => {
                loops[i] = Some(analyse_loop(program, l, &mut ranges).map_err(fail)?)
            }
            _ => check_library(program, k).map_err(fail)?,
        }
    }
    let mut int_ranges: Vec<Option<IntRange>> = vec![None; program.buffers.len()];
    for (id, r) in ranges.iter().enumerate() {
        if let Some((lo, hi)) = *r {
            let kernel = program
                .kernels
                .iter()
                .position(|k| k.reads().contains(&BufId(id)))
                .unwrap_or(0);
            int_ranges[id] = Some(IntRange { lo, hi, kernel });
        }
    }
    for (i, k) in program.kernels.iter().enumerate() {
        if let Kernel::EmbeddingBwd { ids, vocab, .. } = k {
            let hi = *vocab as i64 - 1;
            let slot = &mut int_ranges[ids.0];
            *slot = Some(match *slot {
                Some(r) => IntRange {
                    lo: r.lo.max(0),
                    hi: r.hi.min(hi),
                    kernel: r.kernel,
                },
                None => IntRange {
                    lo: 0,
                    hi,
                    kernel: i,
                },
            });
        }
    }
    Ok(ProgramFacts { loops, int_ranges })
}

/// Memory a buffer occupies: persistent buffers by storage, arena buffers
/// by element range.
#[derive(Clone, Copy, PartialEq)]
enum Region {
    Own(Storage, DType),
    Arena(usize, usize),
}

fn region(p: &KernelProgram, b: BufId) -> Region {
    let buf = &p.buffers[b.0];
    match buf.storage {
        Storage::Arena { offset } => Region::Arena(offset, offset + buf.len),
        s => Region::Own(s, buf.dtype),
    }
}

/// Whether two regions share some memory.
fn overlaps(a: Region, b: Region) -> bool {
    match (a, b) {
        (Region::Arena(a0, a1), Region::Arena(b0, b1)) => a0 < b1 && b0 < a1 && a0 < a1 && b0 < b1,
        (Region::Own(s, d), Region::Own(t, e)) => s == t && d == e,
        _ => false,
    }
}

/// No output of a library call shares memory with another of its operands
/// (the library kernels write in place as they read).
fn check_library(p: &KernelProgram, k: &Kernel) -> Result<(), String> {
    let writes = k.writes();
    let reads = k.reads();
    for (i, &w) in writes.iter().enumerate() {
        let others = reads.iter().chain(
            writes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, o)| o),
        );
        for &o in others {
            if overlaps(region(p, w), region(p, o)) {
                return Err(format!(
                    "output b{} shares memory with operand b{}",
                    w.0, o.0
                ));
            }
        }
    }
    Ok(())
}
