//! The CPU backend: loop kernels JIT-compiled with Cranelift, matrix products
//! through the `gemm` crate, fused flash-style attention, all parallel over
//! rayon's threads.
//!
//! [`CpuBackend::new`] checks and compiles a [`KernelProgram`] once;
//! [`CpuBackend::execute`] runs its kernels in order on a
//! [`ProgramBuffers`]. Every raw-pointer access below rests on the checks
//! made at construction (every index in bounds, outputs disjoint from
//! inputs) and at the start of each execution (the buffers have the
//! program's layout, integer inputs are in range).

pub mod attention;
pub mod isa;
pub mod jit;
pub mod matmul;
#[cfg(feature = "mlir")]
pub mod mlir;
#[cfg(target_arch = "x86_64")]
pub mod transpose;

use crate::buffers::{BufferError, ProgramBuffers, Slot};
use attention::{attention_backward, attention_forward, AttentionShape};
use gsc_compiler::kernel::{
    render_kernel, AttnShape, BufId, DType, IntRange, Kernel, KernelProgram, Storage,
};
use jit::{compile_program_with, CompiledLoop, JitError, JitOptions};
use matmul::Gemm;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Loop kernels with fewer innermost iterations than this run on the
/// calling thread: a hand-off to the pool costs a few microseconds.
const PARALLEL_MIN_WORK: u64 = 1 << 14;

/// The kinds of kernel the profile sums time over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    Loop,
    MatMul,
    Attention,
    AttentionBwd,
    EmbeddingBwd,
}

impl KernelKind {
    pub const ALL: [KernelKind; 5] = [
        KernelKind::Loop,
        KernelKind::MatMul,
        KernelKind::Attention,
        KernelKind::AttentionBwd,
        KernelKind::EmbeddingBwd,
    ];

    pub fn of(k: &Kernel) -> Self {
        match k {
            Kernel::Loop(_) => KernelKind::Loop,
            Kernel::MatMul { .. } => KernelKind::MatMul,
            Kernel::Attention { .. } => KernelKind::Attention,
            Kernel::AttentionBwd { .. } => KernelKind::AttentionBwd,
            Kernel::EmbeddingBwd { .. } => KernelKind::EmbeddingBwd,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Loop => "loops (jit)",
            KernelKind::MatMul => "matmul",
            KernelKind::Attention => "attention",
            KernelKind::AttentionBwd => "attention bwd",
            KernelKind::EmbeddingBwd => "embedding bwd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("the buffers do not have this program's layout: {0}")]
    Layout(String),
    #[error(transparent)]
    Buffers(#[from] BufferError),
    #[error("{buffer} holds {value} at position {position}, outside [{lo}, {hi}] (kernel k{kernel} would index outside a buffer with it)")]
    OutOfRange {
        buffer: String,
        position: usize,
        value: i32,
        lo: i64,
        hi: i64,
        kernel: usize,
    },
}

/// Wall time spent per kernel, summed over executions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub runs: u64,
    /// Indexed like the program's kernels.
    pub per_kernel: Vec<Duration>,
}

impl Profile {
    /// Total per kind, in `KernelKind::ALL` order.
    pub fn per_kind(&self, program: &KernelProgram) -> Vec<(KernelKind, Duration)> {
        KernelKind::ALL
            .iter()
            .map(|&kind| {
                let t = program
                    .kernels
                    .iter()
                    .zip(&self.per_kernel)
                    .filter(|(k, _)| KernelKind::of(k) == kind)
                    .map(|(_, t)| *t)
                    .sum();
                (kind, t)
            })
            .collect()
    }
}

/// Native code for a program's loop kernels, whatever generated it
/// (Cranelift, or MLIR's ExecutionEngine). Holding it keeps the code alive.
pub trait LoopCode: Send + Sync + std::fmt::Debug {
    /// Indexed like the program's kernels; `Some` for loop kernels.
    fn loops(&self) -> &[Option<CompiledLoop>];
    /// Constant tables the kernels read as buffers after the program's own.
    fn tables(&self) -> &[Vec<f32>];
    /// Wall time of code generation for the whole program.
    fn compile_time(&self) -> Duration;
    /// Who generated it: `cranelift` or `mlir`.
    fn name(&self) -> &'static str;
}

/// Loop code being generated on a thread of its own (see
/// [`CpuBackend::compile_beside`]).
type Beside = std::thread::JoinHandle<Result<Box<dyn LoopCode>, JitError>>;

pub struct CpuBackend {
    program: KernelProgram,
    /// Native code of the loop kernels (Cranelift by default).
    jit: Box<dyn LoopCode>,
    /// Other code for the same loop kernels, being generated meanwhile,
    /// to replace `jit` when [`CpuBackend::switch_code`] is called.
    beside: Option<Beside>,
    /// Per I32 buffer: the range its values must lie in.
    int_ranges: Vec<Option<IntRange>>,
    profile: Profile,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("kernels", &self.program.kernels.len())
            .field("jit", &self.jit)
            .finish()
    }
}

/// A rejected kernel, named and printed (every backend reports it alike).
pub(crate) fn library_error(p: &KernelProgram, index: usize, what: String) -> JitError {
    JitError::Kernel {
        index,
        kernel: p.kernels[index].name().to_string(),
        what,
        ir: render_kernel(&p.kernels[index]),
    }
}

fn attn_shape(s: &AttnShape) -> AttentionShape {
    AttentionShape {
        batch: s.batch,
        seq: s.seq,
        heads: s.heads,
        kv_heads: s.kv_heads,
        head_dim: s.head_dim,
        scale: s.scale as f32,
    }
}

/// A raw pointer table shared by the threads of one kernel.
#[derive(Clone, Copy)]
struct Table(*const *mut u8);
// SAFETY: the table and the buffers it points at outlive the parallel call
// (they are borrowed by `execute`), and the threads touch disjoint elements.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

impl Table {
    /// Through a method, so closures capture the whole `Table` (which is
    /// `Sync`) rather than its raw-pointer field.
    fn ptr(self) -> *const *mut u8 {
        self.0
    }
}

impl CpuBackend {
    /// Checks and compiles `program`. Fails, naming the kernel and printing
    /// its IR, if a kernel could index outside a buffer, its operands do not
    /// fit its shapes, or Cranelift rejects it.
    pub fn new(program: &KernelProgram) -> Result<Self, JitError> {
        Self::with_options(program, JitOptions::default())
    }

    /// As [`CpuBackend::new`], with explicit code generation options.
    pub fn with_options(program: &KernelProgram, options: JitOptions) -> Result<Self, JitError> {
        Self::with_code(program, |p| {
            compile_program_with(p, options).map(|j| Box::new(j) as Box<dyn LoopCode>)
        })
    }

    /// As [`CpuBackend::new`], with the loop kernels compiled by `codegen`
    /// (called once the program has passed the kernel IR's analyses).
    pub fn with_code(
        program: &KernelProgram,
        codegen: impl FnOnce(&KernelProgram) -> Result<Box<dyn LoopCode>, JitError>,
    ) -> Result<Self, JitError> {
        let facts = gsc_compiler::kernel::analyse(program)
            .map_err(|e| library_error(program, e.kernel, e.what))?;
        let jit = codegen(program)?;
        Ok(CpuBackend {
            program: program.clone(),
            profile: Profile {
                runs: 0,
                per_kernel: vec![Duration::ZERO; program.kernels.len()],
            },
            jit,
            beside: None,
            int_ranges: facts.int_ranges,
        })
    }

    /// Starts generating the loop kernels' code again with `codegen`, on a
    /// thread of its own, while this executor goes on running its current
    /// code: Cranelift's compiles in milliseconds, MLIR's (LLVM at the
    /// machine's full vector width) runs faster but takes seconds, so a
    /// long run can start at once and switch later. A second call before
    /// [`CpuBackend::switch_code`] replaces the first.
    pub fn compile_beside(
        &mut self,
        codegen: impl FnOnce(&KernelProgram) -> Result<Box<dyn LoopCode>, JitError> + Send + 'static,
    ) {
        let program = self.program.clone();
        self.beside = Some(std::thread::spawn(move || codegen(&program)));
    }

    /// Runs the code [`CpuBackend::compile_beside`] started from now on,
    /// waiting for it if it is not ready; `Ok(false)` if none was started.
    /// Its results can differ from the old code's in the last bits (it may
    /// sum reductions in another order), so callers switch at a point fixed
    /// in advance, never when the code happens to be ready. On an error the
    /// old code stays.
    pub fn switch_code(&mut self) -> Result<bool, JitError> {
        let Some(beside) = self.beside.take() else {
            return Ok(false);
        };
        let code = beside
            .join()
            .map_err(|_| JitError::Program("the code generator beside panicked".into()))??;
        self.jit = code;
        Ok(true)
    }

    /// Who generated the loop kernels' code that runs now.
    pub fn loop_code(&self) -> &'static str {
        self.jit.name()
    }

    pub fn program(&self) -> &KernelProgram {
        &self.program
    }

    /// Time Cranelift took for the whole program (analysis included).
    pub fn compile_time(&self) -> Duration {
        self.jit.compile_time()
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn reset_profile(&mut self) {
        self.profile.runs = 0;
        self.profile
            .per_kernel
            .iter_mut()
            .for_each(|t| *t = Duration::ZERO);
    }

    fn check_layout(&self, bufs: &ProgramBuffers) -> Result<(), ExecError> {
        let p = &self.program;
        if bufs.len() != p.buffers.len() || bufs.arena().len() != p.arena_len {
            return Err(ExecError::Layout(format!(
                "{} buffers and an arena of {}, the program has {} and {}",
                bufs.len(),
                bufs.arena().len(),
                p.buffers.len(),
                p.arena_len
            )));
        }
        for (i, b) in p.buffers.iter().enumerate() {
            let id = BufId(i);
            let ok = match (bufs.slot(id), b.storage) {
                (Some(Slot::Arena { offset, len }), Storage::Arena { offset: o }) => {
                    offset == o && len == b.len
                }
                (Some(Slot::F32(_)), _) if b.dtype == DType::F32 => match bufs.f32(id) {
                    Some(v) => v.len() == b.len,
                    None => return Err(BufferError::Busy(b.name.clone()).into()),
                },
                (Some(Slot::I32(_)), _) => {
                    b.dtype == DType::I32 && bufs.i32(id).map(<[i32]>::len) == Some(b.len)
                }
                _ => false,
            };
            if !ok {
                return Err(ExecError::Layout(format!("b{i} ({}) differs", b.name)));
            }
        }
        Ok(())
    }

    fn check_ints(&self, bufs: &ProgramBuffers) -> Result<(), ExecError> {
        for (id, r) in self.int_ranges.iter().enumerate() {
            let Some(IntRange { lo, hi, kernel }) = *r else {
                continue;
            };
            let Some(values) = bufs.i32(BufId(id)) else {
                continue;
            };
            if let Some((position, &value)) = values
                .iter()
                .enumerate()
                .find(|(_, &v)| (v as i64) < lo || (v as i64) > hi)
            {
                return Err(ExecError::OutOfRange {
                    buffer: self.program.buffers[id].name.clone(),
                    position,
                    value,
                    lo,
                    hi,
                    kernel,
                });
            }
        }
        Ok(())
    }

    /// Runs every kernel of the program, in order, on `bufs`.
    pub fn execute(&mut self, bufs: &mut ProgramBuffers) -> Result<(), ExecError> {
        self.check_layout(bufs)?;
        self.check_ints(bufs)?;
        let bound = bufs.bind()?;
        let mut table = bound.pointers().to_vec();
        // The JIT's constant tables follow the program's buffers; kernels
        // only read them.
        table.extend(self.jit.tables().iter().map(|t| t.as_ptr() as *mut u8));
        let t = Table(table.as_ptr());
        for i in 0..self.program.kernels.len() {
            let start = Instant::now();
            // SAFETY: `table` holds the base of every buffer of `bufs`, whose
            // layout was just checked against the program the kernels were
            // checked against, and `bound` keeps them all (shared ones too)
            // borrowed for us alone throughout.
            unsafe { self.run_kernel(i, t) };
            self.profile.per_kernel[i] += start.elapsed();
        }
        self.profile.runs += 1;
        Ok(())
    }

    /// # Safety
    /// `t` must be the base-pointer table of buffers with the program's layout.
    unsafe fn run_kernel(&self, i: usize, t: Table) {
        let f32_at = |b: BufId| -> *mut f32 { *t.0.add(b.0) as *mut f32 };
        let len = |b: BufId| self.program.buffers[b.0].len;
        // Slices over buffers: in bounds by the layout check, and outputs
        // never overlap other operands (check_library).
        let src = |b: BufId| -> &[f32] { std::slice::from_raw_parts(f32_at(b), len(b)) };
        let dst = |b: BufId| -> &mut [f32] { std::slice::from_raw_parts_mut(f32_at(b), len(b)) };
        match &self.program.kernels[i] {
            Kernel::Loop(_) => {
                let Some(l) = self.jit.loops()[i] else {
                    return;
                };
                match l.parallel {
                    Some(extent) if extent > 1 && l.work >= PARALLEL_MIN_WORK => {
                        // A few chunks per thread: work stealing evens out
                        // a core that is busy with something else.
                        let parts = (4 * rayon::current_num_threads()).min(extent).max(1);
                        (0..parts).into_par_iter().for_each(|p| {
                            let lo = extent * p / parts;
                            let hi = extent * (p + 1) / parts;
                            // SAFETY: the parts are disjoint ranges of a
                            // loop whose iterations touch disjoint elements.
                            unsafe { (l.func)(t.ptr(), lo as i64, hi as i64) };
                        });
                    }
                    Some(extent) => (l.func)(t.0, 0, extent as i64),
                    None => (l.func)(t.0, 0, 1),
                }
            }
            Kernel::MatMul {
                a,
                b,
                out,
                m,
                n,
                k,
                ta,
                tb,
                batch,
                bf16,
            } => {
                let mut g = Gemm::new(*m, *n, *k);
                if *bf16 {
                    g = g.bf16();
                }
                if *ta {
                    g = g.trans_a();
                }
                if *tb {
                    g = g.trans_b();
                }
                let (sa, sb, so) = (m * k, k * n, m * n);
                let (a, b, out) = (src(*a), src(*b), dst(*out));
                for i in 0..*batch {
                    g.run(
                        &a[i * sa..][..sa],
                        &b[i * sb..][..sb],
                        &mut out[i * so..][..so],
                    );
                }
            }
            Kernel::Attention {
                q,
                k,
                v,
                out,
                lse,
                shape,
            } => attention_forward(
                &attn_shape(shape),
                src(*q),
                src(*k),
                src(*v),
                dst(*out),
                dst(*lse),
            ),
            Kernel::AttentionBwd {
                q,
                k,
                v,
                o,
                lse,
                dy,
                dq,
                dk,
                dv,
                shape,
            } => attention_backward(
                &attn_shape(shape),
                src(*q),
                src(*k),
                src(*v),
                src(*o),
                src(*lse),
                src(*dy),
                dst(*dq),
                dst(*dk),
                dst(*dv),
            ),
            Kernel::EmbeddingBwd {
                ids,
                dy,
                out,
                vocab,
                dim,
            } => {
                let ids = std::slice::from_raw_parts(*t.0.add(ids.0) as *const i32, len(*ids));
                embedding_backward(ids, src(*dy), dst(*out), *vocab, *dim);
            }
        }
    }
}

/// `out[v, :] = Σ_{n: ids[n] = v} dy[n, :]`, parallel over vocabulary
/// rows so that each thread owns the rows it writes. Ids outside the
/// vocabulary are skipped (the executor refuses them before any kernel runs).
pub fn embedding_backward(ids: &[i32], dy: &[f32], out: &mut [f32], vocab: usize, dim: usize) {
    if dim == 0 {
        return;
    }
    let parts = rayon::current_num_threads().clamp(1, vocab.max(1));
    let rows_per = vocab.div_ceil(parts).max(1);
    out.par_chunks_mut(rows_per * dim)
        .enumerate()
        .for_each(|(p, chunk)| {
            chunk.iter_mut().for_each(|x| *x = 0.0);
            let v0 = p * rows_per;
            let v1 = v0 + chunk.len() / dim;
            for (n, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= v0 && id < v1 {
                    let row = &mut chunk[(id - v0) * dim..(id - v0 + 1) * dim];
                    let g = &dy[n * dim..(n + 1) * dim];
                    row.iter_mut().zip(g).for_each(|(r, g)| *r += g);
                }
            }
        });
}
