//! Fused causal self-attention, forward and backward, in the style of
//! FlashAttention-2: keys are visited in tiles with an online softmax, so no
//! thread ever holds more than one `TILE × TILE` block of scores, and the
//! backward recomputes the probabilities from the saved row logsumexp
//! instead of storing them.
//!
//! Layout: `q` is `[batch, seq, heads, head_dim]` and `k`, `v` are
//! `[batch, seq, kv_heads, head_dim]`, row-major: exactly what the `[batch·seq,
//! heads·head_dim]` output of a projection matmul is, so no transpose sits
//! between the projections and this kernel. The output has `q`'s layout; the
//! logsumexp is `[batch, heads, seq]`. Query head `h` reads kv head
//! `h / (heads / kv_heads)` (grouped-query attention).
//!
//! Work is split over (batch, head) pairs for the forward and over
//! (batch, kv head) for the backward, so each task owns the rows it writes.
//! The tile products are small register-blocked loops compiled with AVX-512
//! enabled when the CPU has it (checked once per call), and plain otherwise.

use rayon::prelude::*;

/// Query rows and key columns per tile. 64 keeps a score tile (16 KiB) and
/// the tiles it multiplies inside a core's L1 data cache.
const TILE: usize = 64;
/// f32 lanes of one AVX-512 register; tile widths are padded to a multiple.
const LANES: usize = 16;

/// The shapes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    /// Divides `heads`; equal to it for plain multi-head attention.
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` before the softmax: `1/√head_dim` for gpt,
    /// `√head_dim` for nGPT (whose q and k are unit vectors).
    pub scale: f32,
}

impl AttentionShape {
    pub fn q_len(&self) -> usize {
        self.batch * self.seq * self.heads * self.head_dim
    }

    pub fn kv_len(&self) -> usize {
        self.batch * self.seq * self.kv_heads * self.head_dim
    }

    pub fn lse_len(&self) -> usize {
        self.batch * self.heads * self.seq
    }

    /// Multiply-adds ×2 of the forward's two products over the causal
    /// triangle (diagonal included), the count FLOP/s figures use.
    pub fn forward_flops(&self) -> f64 {
        let pairs = self.seq as f64 * (self.seq as f64 + 1.0) / 2.0;
        4.0 * pairs * self.head_dim as f64 * (self.batch * self.heads) as f64
    }

    /// The backward's four products (dV, dP, dQ, dK) and the recomputed scores.
    pub fn backward_flops(&self) -> f64 {
        2.5 * self.forward_flops()
    }

    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn check(&self) {
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "attention: kv_heads {} must divide heads {}",
            self.kv_heads,
            self.heads
        );
    }
}

/// Causal attention forward: writes `o` (`q`'s layout) and the per-row
/// logsumexp of the scaled scores `lse` (`[batch, heads, seq]`), which the
/// backward needs.
///
/// # Panics
/// If a slice's length does not match `shape` or `kv_heads` does not divide
/// `heads`: shapes come from the compiled plan, so that is a caller bug.
pub fn attention_forward(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &mut [f32],
    lse: &mut [f32],
) {
    forward_on(Isa::get().kernels().0, shape, q, k, v, o, lse)
}

/// The forward of one (batch, head), in one of its compiled versions.
type ForwardHead =
    unsafe fn(&AttentionShape, usize, usize, &[f32], &[f32], &[f32], *mut f32, *mut f32);
/// The backward of one (batch, kv head), in one of its compiled versions.
type BackwardGroup =
    unsafe fn(&AttentionShape, usize, usize, &Inputs, *mut f32, *mut f32, *mut f32);

fn forward_on(
    head: ForwardHead,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &mut [f32],
    lse: &mut [f32],
) {
    shape.check();
    check_len("q", q.len(), shape.q_len());
    check_len("k", k.len(), shape.kv_len());
    check_len("v", v.len(), shape.kv_len());
    check_len("o", o.len(), shape.q_len());
    check_len("lse", lse.len(), shape.lse_len());
    let s = *shape;
    let out = Shared(o.as_mut_ptr());
    let lse_out = Shared(lse.as_mut_ptr());
    (0..s.batch * s.heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / s.heads, task % s.heads);
        // SAFETY: task (b, h) writes only o[b, :, h, :] and lse[b, h, :],
        // which no other task touches, and both slices outlive the loop.
        unsafe {
            let o_rows = out.at(0);
            let lse_row = lse_out.at((b * s.heads + h) * s.seq);
            head(&s, b, h, q, k, v, o_rows, lse_row);
        }
    });
}

/// Causal attention backward: from the forward's inputs, its output `o` and
/// `lse`, and the output gradient `d_o`, overwrites `dq`, `dk`, `dv` (the
/// layouts of `q`, `k`, `v`).
///
/// # Panics
/// As [`attention_forward`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let inputs = Inputs {
        q,
        k,
        v,
        o,
        lse,
        d_o,
    };
    backward_on(Isa::get().kernels().1, shape, &inputs, dq, dk, dv)
}

fn backward_on(
    group: BackwardGroup,
    shape: &AttentionShape,
    inputs: &Inputs,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    shape.check();
    let Inputs {
        q,
        k,
        v,
        o,
        lse,
        d_o,
    } = *inputs;
    for (name, len, want) in [
        ("q", q.len(), shape.q_len()),
        ("k", k.len(), shape.kv_len()),
        ("v", v.len(), shape.kv_len()),
        ("o", o.len(), shape.q_len()),
        ("lse", lse.len(), shape.lse_len()),
        ("d_o", d_o.len(), shape.q_len()),
        ("dq", dq.len(), shape.q_len()),
        ("dk", dk.len(), shape.kv_len()),
        ("dv", dv.len(), shape.kv_len()),
    ] {
        check_len(name, len, want);
    }
    let s = *shape;
    let grads = (
        Shared(dq.as_mut_ptr()),
        Shared(dk.as_mut_ptr()),
        Shared(dv.as_mut_ptr()),
    );
    (0..s.batch * s.kv_heads).into_par_iter().for_each(|task| {
        let (b, g) = (task / s.kv_heads, task % s.kv_heads);
        // SAFETY: task (b, g) writes dk/dv[b, :, g, :] and dq[b, :, h, :] for
        // the query heads h of group g, which no other task touches.
        unsafe {
            let (dq, dk, dv) = (grads.0.at(0), grads.1.at(0), grads.2.at(0));
            group(&s, b, g, inputs, dq, dk, dv);
        }
    });
}

thread_local! {
    /// Buffers of finished heads on this thread, for the next ones: a
    /// fresh allocation per head faulted in new pages every step, and two
    /// threads faulting at once wait on each other in the kernel.
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `len` zeros in a buffer from this thread's pool, returned to it on drop.
fn scratch(len: usize) -> Scratch {
    let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    v.resize(len, 0.0);
    Scratch(v)
}

/// A pooled buffer (see [`scratch`]).
struct Scratch(Vec<f32>);

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        POOL.with(|p| p.borrow_mut().push(v));
    }
}

fn check_len(name: &str, len: usize, want: usize) {
    assert_eq!(
        len, want,
        "attention: {name} holds {len} values, the shape needs {want}"
    );
}

/// A raw output pointer that tasks writing disjoint rows may share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: only used for disjoint writes, as argued at each use.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

#[derive(Clone, Copy)]
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    lse: &'a [f32],
    d_o: &'a [f32],
}

use super::isa::Isa;

impl Isa {
    fn kernels(self) -> (ForwardHead, BackwardGroup) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (forward_head_avx512, backward_group_avx512),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (forward_head_avx2, backward_group_avx2),
            Isa::Portable => (forward_head_portable, backward_group_portable),
        }
    }
}

/// Defines one entry point per [`Isa`] for `$body`, each compiled with that
/// instruction set enabled and the register block that fits its register
/// file (rows × columns of accumulators): 6 × 64 fills 24 of AVX-512's 32
/// zmm registers, 6 × 16 fills 12 of AVX2's 16 ymm registers. Everything the
/// body calls is inlined, so all of it is vectorised for the ISA. The
/// AVX-512 blocks are written with intrinsics (`Z`): left to the
/// vectoriser, LLVM's tuning for 256-bit vectors splits them into ymm
/// halves that no longer fit the register file.
macro_rules! compile_per_isa {
    ($body:ident => $avx512:ident, $avx2:ident, $portable:ident ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx512($($arg: $ty),*) {
            $body::<6, 64, true>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx2($($arg: $ty),*) {
            $body::<6, 16, false>($($arg),*)
        }

        #[allow(clippy::too_many_arguments)]
        unsafe fn $portable($($arg: $ty),*) {
            $body::<4, 16, false>($($arg),*)
        }
    };
}

compile_per_isa!(forward_head => forward_head_avx512, forward_head_avx2, forward_head_portable(
    s: &AttentionShape, b: usize, h: usize, q: &[f32], k: &[f32], v: &[f32], o: *mut f32, lse: *mut f32
));
compile_per_isa!(backward_group => backward_group_avx512, backward_group_avx2, backward_group_portable(
    s: &AttentionShape, b: usize, g: usize, x: &Inputs, dq: *mut f32, dk: *mut f32, dv: *mut f32
));

// ---------------------------------------------------------------------------
// Tile kernels. All take a leading dimension per operand and work on the
// zero-padded scratch buffers, whose widths are multiples of LANES.

/// Which part of a tile product a diagonal tile of causal attention needs.
/// There the tile's row `r` and column `c` index the same token, and
/// `P[r, c]` is zero for `c > r`, so whole register blocks can be skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Causal {
    /// Off the diagonal: everything.
    No,
    /// Scores `Q·Kᵀ`: row `r` needs output columns up to `r`.
    Cols,
    /// `P·V`, `dS·K`: row `r` needs inner indices up to `r`.
    InnerUpTo,
    /// `Pᵀ·dO`, `dSᵀ·Q`: row `c` needs inner indices from `c` on.
    InnerFrom,
}

/// `C[m, n] += op(A)[m, kk] · B[kk, n]`, B row-major, `n % LANES == 0`.
/// `op(A)` is `A` stored `[m, kk]` or, with `TA`, stored `[kk, m]`. Runs in
/// `R × N` register blocks; leftover columns go `LANES` at a time. With
/// `Z`, the blocks are AVX-512 intrinsics ([`block_zmm`], `N` = 64), which
/// only a caller compiled with AVX-512 may ask for.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn madd<const TA: bool, const R: usize, const N: usize, const Z: bool>(
    causal: Causal,
    m: usize,
    n: usize,
    kk: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    debug_assert_eq!(n % LANES, 0);
    let mut r0 = 0;
    while r0 < m {
        // Rows left over from R-blocks go 4 at a time where they can: one
        // row alone is a single FMA dependency chain, several times slower.
        let rows = match m - r0 {
            left if left >= R => R,
            left if left >= 4 => 4,
            _ => 1,
        };
        let end = r0 + rows;
        let (n, inner) = match causal {
            Causal::No => (n, 0..kk),
            Causal::Cols => (n.min(round_up(end, LANES)), 0..kk),
            Causal::InnerUpTo => (n, 0..kk.min(end)),
            Causal::InnerFrom => (n, r0.min(kk)..kk),
        };
        let mut j0 = 0;
        while j0 < n {
            let wide = n - j0 >= N;
            let p = inner.clone();
            // The block for this many rows, `$wide` or `$narrow` columns
            // (in `$f`'s unit) depending on what is left of the row.
            macro_rules! by_shape {
                ($f:ident, $wide:expr, $narrow:expr) => {
                    match (rows, wide) {
                        (4, true) => $f::<TA, 4, { $wide }>(r0, j0, p, a, lda, b, ldb, c, ldc),
                        (4, false) => $f::<TA, 4, { $narrow }>(r0, j0, p, a, lda, b, ldb, c, ldc),
                        (1, true) => $f::<TA, 1, { $wide }>(r0, j0, p, a, lda, b, ldb, c, ldc),
                        (1, false) => $f::<TA, 1, { $narrow }>(r0, j0, p, a, lda, b, ldb, c, ldc),
                        (_, true) => $f::<TA, R, { $wide }>(r0, j0, p, a, lda, b, ldb, c, ldc),
                        (_, false) => $f::<TA, R, { $narrow }>(r0, j0, p, a, lda, b, ldb, c, ldc),
                    }
                };
            }
            #[cfg(target_arch = "x86_64")]
            if Z {
                debug_assert_eq!(N, 64);
                // SAFETY: Z is only set by callers compiled with AVX-512.
                unsafe { by_shape!(block_zmm, 4, 1) }
            } else {
                by_shape!(block, N, LANES)
            }
            #[cfg(not(target_arch = "x86_64"))]
            by_shape!(block, N, LANES);
            j0 += if wide { N } else { LANES };
        }
        r0 = end;
    }
}

/// Where `op(A)[row, p]` is stored: `A` is `[m, kk]`, or `[kk, m]` with `TA`.
#[inline(always)]
fn a_at<const TA: bool>(row: usize, p: usize, lda: usize) -> usize {
    if TA {
        p * lda + row
    } else {
        row * lda + p
    }
}

/// The bounds of an `R`-row, `width`-column register block at `(r0, j0)`
/// over inner indices below `inner_end`: one check of the furthest element
/// of each operand replaces a bounds check per multiply-add, which would
/// otherwise outnumber the FMAs.
#[inline(always)]
fn check_block<const TA: bool, const R: usize>(
    r0: usize,
    j0: usize,
    width: usize,
    inner_end: usize,
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    (c, ldc): (&[f32], usize),
) {
    let last = inner_end - 1;
    assert!(a_at::<TA>(r0 + R - 1, last, lda) < a.len());
    assert!(last * ldb + j0 + width <= b.len());
    assert!((r0 + R - 1) * ldc + j0 + width <= c.len());
}

/// One `R × N` register block of [`madd`] at rows `r0..`, columns `j0..`:
/// the accumulators stay in registers across the whole inner dimension.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<const TA: bool, const R: usize, const N: usize>(
    r0: usize,
    j0: usize,
    inner: std::ops::Range<usize>,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if inner.is_empty() {
        return;
    }
    check_block::<TA, R>(r0, j0, N, inner.end, (a, lda), (b, ldb), (c, ldc));
    let mut acc = [[0.0f32; N]; R];
    for (r, acc_r) in acc.iter_mut().enumerate() {
        acc_r.copy_from_slice(&c[(r0 + r) * ldc + j0..][..N]);
    }
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for p in inner {
        // SAFETY: p < inner.end and r < R keep every offset within the extents
        // asserted above; f32 arrays need only f32 alignment.
        let b_p: [f32; N] = unsafe { bp.add(p * ldb + j0).cast::<[f32; N]>().read() };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x = unsafe { ap.add(a_at::<TA>(r0 + r, p, lda)).read() };
            for (acc_rj, b_pj) in acc_r.iter_mut().zip(b_p) {
                *acc_rj = x.mul_add(b_pj, *acc_rj);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        c[(r0 + r) * ldc + j0..][..N].copy_from_slice(acc_r);
    }
}

/// [`block`] in AVX-512 intrinsics: `R` rows × `H` zmm vectors (16·H
/// columns) of accumulators.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_zmm<const TA: bool, const R: usize, const H: usize>(
    r0: usize,
    j0: usize,
    inner: std::ops::Range<usize>,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    use std::arch::x86_64::*;
    if inner.is_empty() {
        return;
    }
    check_block::<TA, R>(r0, j0, 16 * H, inner.end, (a, lda), (b, ldb), (c, ldc));
    let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let mut acc = [[_mm512_setzero_ps(); H]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        for (h, v) in row.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(cp.add((r0 + r) * ldc + j0 + 16 * h));
        }
    }
    for p in inner {
        let mut bv = [_mm512_setzero_ps(); H];
        for (h, v) in bv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(bp.add(p * ldb + j0 + 16 * h));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*ap.add(a_at::<TA>(r0 + r, p, lda)));
            for (v, &bh) in row.iter_mut().zip(&bv) {
                *v = _mm512_fmadd_ps(x, bh, *v);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (h, v) in row.iter().enumerate() {
            _mm512_storeu_ps(cp.add((r0 + r) * ldc + j0 + 16 * h), *v);
        }
    }
}

/// `e^x`, vectorisable when inlined into a loop: Cephes' `expf` (range
/// reduction by ln 2, degree-6 polynomial, exponent built in the bits),
/// about 2 ulp. Callers pass scores shifted by their row maximum or
/// logsumexp, so `x ≤ 0` (a few ulp above at most); inputs below −87 give
/// ≈1e-38 rather than 0, far below the rounding of a sum that includes e⁰.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding 1.5·2²³ rounds to an integer and leaves it in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    // A select, not f32::max, so it compiles to one vmaxps (NaN-agnostic).
    let x = if x > -87.0 { x } else { -87.0 };
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    e * f32::from_bits(t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23)
}

/// `x ← e^(x − shift)` over a row, returning the sum of the results: one
/// pass, summed in LANES independent lanes so that it vectorises.
#[inline(always)]
fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(chunk) {
            *x = exp(*x - shift);
            *l += *x;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - shift);
        sum += *x;
    }
    sum
}

/// Largest element (−∞ for none), in LANES independent lanes so that it
/// vectorises (a sequential fold is one long dependency chain).
#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = if x > *l { x } else { *l };
        }
    }
    lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Copies head `h` of a `[seq, heads, head_dim]` block (rows `stride` apart)
/// into `dst` as `[seq, width]` rows, times `scale`; the padding stays zero.
#[inline(always)]
fn gather_rows(
    src: &[f32],
    stride: usize,
    seq: usize,
    d: usize,
    scale: f32,
    dst: &mut [f32],
    width: usize,
) {
    for t in 0..seq {
        let row = &src[t * stride..][..d];
        for (x, &y) in dst[t * width..][..d].iter_mut().zip(row) {
            *x = y * scale;
        }
    }
}

/// As [`gather_rows`] but transposed: `dst` is `[d, width]`, column t = row t.
/// Goes LANES source rows at a time so both sides stay in L1: each pass
/// writes one cache line per destination row. With `Z`, 16 × 16 blocks are
/// transposed in AVX-512 registers (LLVM makes the plain loop a gather,
/// which took a third of the backward's time).
#[inline(always)]
fn gather_cols<const Z: bool>(
    src: &[f32],
    stride: usize,
    seq: usize,
    d: usize,
    dst: &mut [f32],
    width: usize,
) {
    // One check of the furthest source element instead of one per copy.
    assert!(seq == 0 || (seq - 1) * stride + d <= src.len());
    assert!(d == 0 || (d - 1) * width + seq.next_multiple_of(LANES) <= dst.len());
    #[cfg(target_arch = "x86_64")]
    if Z {
        // SAFETY: Z is only set by callers compiled with AVX-512; the
        // asserts above bound every row read and written.
        unsafe { transpose_zmm(src, stride, seq, d, dst, width) };
        return;
    }
    for t0 in (0..seq).step_by(LANES) {
        let n = (seq - t0).min(LANES);
        for i in 0..d {
            for (r, x) in dst[i * width + t0..][..n].iter_mut().enumerate() {
                // SAFETY: t0 + r < seq and i < d, within the asserted extent.
                *x = unsafe { *src.get_unchecked((t0 + r) * stride + i) };
            }
        }
    }
}

/// [`gather_cols`] in 16 × 16 blocks: 16 source rows (tokens) of 16 values
/// are loaded (zero past the end), transposed in registers, and stored as
/// 16-wide pieces of destination rows.
///
/// # Safety
/// The CPU must have AVX-512F; the slices must hold what
/// [`gather_cols`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_zmm(
    src: &[f32],
    stride: usize,
    seq: usize,
    d: usize,
    dst: &mut [f32],
    width: usize,
) {
    use std::arch::x86_64::*;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for t0 in (0..seq).step_by(16) {
        let rows = (seq - t0).min(16);
        for i0 in (0..d).step_by(16) {
            let cols = (d - i0).min(16);
            let mask: __mmask16 = if cols == 16 { !0 } else { (1 << cols) - 1 };
            let mut r = [_mm512_setzero_ps(); 16];
            for (t, row) in r.iter_mut().enumerate().take(rows) {
                *row = _mm512_maskz_loadu_ps(mask, sp.add((t0 + t) * stride + i0));
            }
            let out = super::transpose::transpose16(&r);
            for (col, v) in out.into_iter().enumerate().take(cols) {
                _mm512_storeu_ps(dp.add((i0 + col) * width + t0), v);
            }
        }
    }
}

/// `Σ a·b` in LANES independent lanes, so that it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l = x.mul_add(*y, *l);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Causal softmax mask of one tile: row `i` (absolute query index) keeps
/// keys up to `i`, i.e. this many of the tile starting at key `j0`.
#[inline(always)]
fn visible(i: usize, j0: usize) -> usize {
    (i + 1 - j0).min(TILE)
}

// ---------------------------------------------------------------------------
// Forward for one (batch, head).

/// # Safety
/// `o` points at the start of the full output, `lse` at this head's row;
/// only this head's entries are written.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_head<const R: usize, const N: usize, const Z: bool>(
    s: &AttentionShape,
    b: usize,
    h: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: *mut f32,
    lse: *mut f32,
) {
    let (t_len, d) = (s.seq, s.head_dim);
    let g = h / s.group();
    let (q_stride, kv_stride) = (s.heads * d, s.kv_heads * d);
    let dp = round_up(d, LANES);
    let tp = round_up(t_len, TILE);
    let q_base = b * t_len * q_stride + h * d;
    let kv_base = b * t_len * kv_stride + g * d;

    // Kᵀ as [d, tp] so score rows are broadcasts against contiguous rows;
    // V as [tp, dp]. Padded keys are masked out by causality (index ≥ seq).
    let mut kt = scratch(d * tp);
    gather_cols::<Z>(&k[kv_base..], kv_stride, t_len, d, &mut kt, tp);
    let mut vr = scratch(tp * dp);
    gather_rows(&v[kv_base..], kv_stride, t_len, d, 1.0, &mut vr, dp);

    let mut qs = scratch(TILE * dp);
    let mut acc = scratch(TILE * dp);
    let mut scores = scratch(TILE * TILE);
    let mut row_max = [0.0f32; TILE];
    let mut row_sum = [0.0f32; TILE];

    for i0 in (0..t_len).step_by(TILE) {
        let rows = (t_len - i0).min(TILE);
        qs.fill(0.0);
        gather_rows(
            &q[q_base + i0 * q_stride..],
            q_stride,
            rows,
            d,
            s.scale,
            &mut qs,
            dp,
        );
        acc.fill(0.0);
        row_max.fill(f32::NEG_INFINITY);
        row_sum.fill(0.0);
        for j0 in (0..=i0).step_by(TILE) {
            let diag = j0 == i0;
            scores.fill(0.0);
            madd::<false, R, N, Z>(
                if diag { Causal::Cols } else { Causal::No },
                rows,
                TILE,
                d,
                &qs,
                dp,
                &kt[j0..],
                tp,
                &mut scores,
                TILE,
            );
            let keys = (t_len - j0).min(TILE);
            for r in 0..rows {
                let seen = visible(i0 + r, j0);
                let sr = &mut scores[r * TILE..][..TILE];
                let new_max = max_of(&sr[..seen]).max(row_max[r]);
                let sum = exp_shifted(&mut sr[..seen], new_max);
                sr[seen..].fill(0.0);
                if new_max > row_max[r] {
                    // e^(old max − new max) rescales what was summed so far.
                    let fix = exp(row_max[r] - new_max);
                    row_sum[r] *= fix;
                    for x in &mut acc[r * dp..][..dp] {
                        *x *= fix;
                    }
                    row_max[r] = new_max;
                }
                row_sum[r] += sum;
            }
            madd::<false, R, N, Z>(
                if diag { Causal::InnerUpTo } else { Causal::No },
                rows,
                dp,
                keys,
                &scores,
                TILE,
                &vr[j0 * dp..],
                dp,
                &mut acc,
                dp,
            );
        }
        for r in 0..rows {
            let inv = 1.0 / row_sum[r];
            let dst = std::slice::from_raw_parts_mut(o.add(q_base + (i0 + r) * q_stride), d);
            for (x, &y) in dst.iter_mut().zip(&acc[r * dp..][..d]) {
                *x = y * inv;
            }
            *lse.add(i0 + r) = row_max[r] + row_sum[r].ln();
        }
    }
}

// ---------------------------------------------------------------------------
// Backward for one (batch, kv head) and all the query heads that share it.

/// # Safety
/// `dq`, `dk`, `dv` point at the starts of the full gradients; only this
/// group's entries are written.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_group<const R: usize, const N: usize, const Z: bool>(
    s: &AttentionShape,
    b: usize,
    g: usize,
    x: &Inputs,
    dq: *mut f32,
    dk: *mut f32,
    dv: *mut f32,
) {
    let (t_len, d) = (s.seq, s.head_dim);
    let (q_stride, kv_stride) = (s.heads * d, s.kv_heads * d);
    let dp = round_up(d, LANES);
    let tp = round_up(t_len, TILE);
    let kv_base = b * t_len * kv_stride + g * d;

    let mut kt = scratch(d * tp);
    gather_cols::<Z>(&x.k[kv_base..], kv_stride, t_len, d, &mut kt, tp);
    let mut vt = scratch(d * tp);
    gather_cols::<Z>(&x.v[kv_base..], kv_stride, t_len, d, &mut vt, tp);
    let mut kr = scratch(tp * dp);
    gather_rows(&x.k[kv_base..], kv_stride, t_len, d, 1.0, &mut kr, dp);

    let mut dk_acc = scratch(tp * dp);
    let mut dv_acc = scratch(tp * dp);
    let mut qs = scratch(tp * dp);
    let mut dor = scratch(tp * dp);
    let mut dq_acc = scratch(tp * dp);
    let mut delta = scratch(t_len);
    let mut p = scratch(TILE * TILE);
    let mut ds = scratch(TILE * TILE);

    for h in g * s.group()..(g + 1) * s.group() {
        let q_base = b * t_len * q_stride + h * d;
        let lse = &x.lse[(b * s.heads + h) * t_len..][..t_len];
        gather_rows(&x.q[q_base..], q_stride, t_len, d, s.scale, &mut qs, dp);
        gather_rows(&x.d_o[q_base..], q_stride, t_len, d, 1.0, &mut dor, dp);
        // δ_i = dO_i · O_i, the softmax backward's per-row correction.
        for (t, dl) in delta.iter_mut().enumerate() {
            *dl = dot(&x.o[q_base + t * q_stride..][..d], &dor[t * dp..][..d]);
        }
        dq_acc.fill(0.0);
        for j0 in (0..t_len).step_by(TILE) {
            let keys = (t_len - j0).min(TILE);
            for i0 in (j0..t_len).step_by(TILE) {
                let rows = (t_len - i0).min(TILE);
                let diag = j0 == i0;
                p.fill(0.0);
                madd::<false, R, N, Z>(
                    if diag { Causal::Cols } else { Causal::No },
                    rows,
                    TILE,
                    d,
                    &qs[i0 * dp..],
                    dp,
                    &kt[j0..],
                    tp,
                    &mut p,
                    TILE,
                );
                ds.fill(0.0);
                madd::<false, R, N, Z>(
                    if diag { Causal::Cols } else { Causal::No },
                    rows,
                    TILE,
                    d,
                    &dor[i0 * dp..],
                    dp,
                    &vt[j0..],
                    tp,
                    &mut ds,
                    TILE,
                );
                for r in 0..rows {
                    let i = i0 + r;
                    let seen = visible(i, j0);
                    let pr = &mut p[r * TILE..][..TILE];
                    exp_shifted(&mut pr[..seen], lse[i]);
                    pr[seen..].fill(0.0);
                    // dS = P ∘ (dP − δ); zero wherever P is.
                    for (dsv, &pv) in ds[r * TILE..][..TILE].iter_mut().zip(pr.iter()) {
                        *dsv = pv * (*dsv - delta[i]);
                    }
                }
                // dV_j += Pᵀ dO_i and dK_j += dSᵀ (scale·Q_i): A read transposed.
                madd::<true, R, N, Z>(
                    if diag { Causal::InnerFrom } else { Causal::No },
                    keys,
                    dp,
                    rows,
                    &p,
                    TILE,
                    &dor[i0 * dp..],
                    dp,
                    &mut dv_acc[j0 * dp..],
                    dp,
                );
                madd::<true, R, N, Z>(
                    if diag { Causal::InnerFrom } else { Causal::No },
                    keys,
                    dp,
                    rows,
                    &ds,
                    TILE,
                    &qs[i0 * dp..],
                    dp,
                    &mut dk_acc[j0 * dp..],
                    dp,
                );
                // dQ_i += dS K_j (times scale at the end).
                madd::<false, R, N, Z>(
                    if diag { Causal::InnerUpTo } else { Causal::No },
                    rows,
                    dp,
                    keys,
                    &ds,
                    TILE,
                    &kr[j0 * dp..],
                    dp,
                    &mut dq_acc[i0 * dp..],
                    dp,
                );
            }
        }
        for t in 0..t_len {
            let dst = std::slice::from_raw_parts_mut(dq.add(q_base + t * q_stride), d);
            for (x, &y) in dst.iter_mut().zip(&dq_acc[t * dp..][..d]) {
                *x = y * s.scale;
            }
        }
    }
    for t in 0..t_len {
        let off = kv_base + t * kv_stride;
        std::slice::from_raw_parts_mut(dk.add(off), d).copy_from_slice(&dk_acc[t * dp..][..d]);
        std::slice::from_raw_parts_mut(dv.add(off), d).copy_from_slice(&dv_acc[t * dp..][..d]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::test_util::{assert_close, random_vec};

    /// Plain f64 attention of one problem: returns (o, lse) in the kernel's
    /// layouts, and, given `d_o`, the gradients (dq, dk, dv).
    struct Naive {
        o: Vec<f64>,
        lse: Vec<f64>,
        dq: Vec<f64>,
        dk: Vec<f64>,
        dv: Vec<f64>,
    }

    fn naive(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], d_o: &[f32]) -> Naive {
        let (t_len, d, hq, hk) = (s.seq, s.head_dim, s.heads, s.kv_heads);
        let qi = |b: usize, t: usize, h: usize| ((b * t_len + t) * hq + h) * d;
        let ki = |b: usize, t: usize, g: usize| ((b * t_len + t) * hk + g) * d;
        let mut out = Naive {
            o: vec![0.0; s.q_len()],
            lse: vec![0.0; s.lse_len()],
            dq: vec![0.0; s.q_len()],
            dk: vec![0.0; s.kv_len()],
            dv: vec![0.0; s.kv_len()],
        };
        for b in 0..s.batch {
            for h in 0..hq {
                let g = h / (hq / hk);
                for i in 0..t_len {
                    let dot = |x: &[f32], y: &[f32]| -> f64 {
                        x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
                    };
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            s.scale as f64 * dot(&q[qi(b, i, h)..][..d], &k[ki(b, j, g)..][..d])
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    let lse = max + sum.ln();
                    out.lse[(b * hq + h) * t_len + i] = lse;
                    let p: Vec<f64> = scores.iter().map(|x| (x - lse).exp()).collect();
                    for (j, &pj) in p.iter().enumerate() {
                        for c in 0..d {
                            out.o[qi(b, i, h) + c] += pj * v[ki(b, j, g) + c] as f64;
                        }
                    }
                    // dP_j = dO·v_j; dS_j = P_j (dP_j − Σ P dP); dq = scale Σ dS_j k_j.
                    let dp: Vec<f64> = (0..=i)
                        .map(|j| dot(&d_o[qi(b, i, h)..][..d], &v[ki(b, j, g)..][..d]))
                        .collect();
                    let mean: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                    for j in 0..=i {
                        let ds = p[j] * (dp[j] - mean) * s.scale as f64;
                        for c in 0..d {
                            out.dq[qi(b, i, h) + c] += ds * k[ki(b, j, g) + c] as f64;
                            out.dk[ki(b, j, g) + c] += ds * q[qi(b, i, h) + c] as f64;
                            out.dv[ki(b, j, g) + c] += p[j] * d_o[qi(b, i, h) + c] as f64;
                        }
                    }
                }
            }
        }
        out
    }

    fn to_f32(x: &[f64]) -> Vec<f32> {
        x.iter().map(|&v| v as f32).collect()
    }

    struct Run {
        o: Vec<f32>,
        lse: Vec<f32>,
        dq: Vec<f32>,
        dk: Vec<f32>,
        dv: Vec<f32>,
    }

    fn run(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], d_o: &[f32]) -> Run {
        run_with(Isa::get().kernels(), s, q, k, v, d_o)
    }

    fn run_with(
        (head, group): (ForwardHead, BackwardGroup),
        s: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        d_o: &[f32],
    ) -> Run {
        let mut o = vec![0.0; s.q_len()];
        let mut lse = vec![0.0; s.lse_len()];
        forward_on(head, s, q, k, v, &mut o, &mut lse);
        let mut dq = vec![f32::NAN; s.q_len()];
        let mut dk = vec![f32::NAN; s.kv_len()];
        let mut dv = vec![f32::NAN; s.kv_len()];
        let inputs = Inputs {
            q,
            k,
            v,
            o: &o,
            lse: &lse,
            d_o,
        };
        backward_on(group, s, &inputs, &mut dq, &mut dk, &mut dv);
        Run { o, lse, dq, dk, dv }
    }

    /// Every ISA's version this CPU runs, then the register-block shapes
    /// of every ISA built without target features, so the AVX-512 shapes
    /// are checked on CPUs without AVX-512 too.
    fn every_version() -> Vec<(ForwardHead, BackwardGroup)> {
        let isas = Isa::available();
        let names: Vec<&str> = isas.iter().map(|i| i.name()).collect();
        eprintln!("attention kernels checked on: {}", names.join(", "));
        let mut v: Vec<_> = isas.into_iter().map(Isa::kernels).collect();
        v.extend([
            (
                forward_head::<6, 64, false> as ForwardHead,
                backward_group::<6, 64, false> as BackwardGroup,
            ),
            (forward_head::<6, 16, false>, backward_group::<6, 16, false>),
            (forward_head::<4, 16, false>, backward_group::<4, 16, false>),
        ]);
        v
    }

    fn inputs(s: &AttentionShape, seed: u64, spread: f32) -> [Vec<f32>; 4] {
        let scaled = |n, seed| -> Vec<f32> {
            random_vec(n, seed)
                .into_iter()
                .map(|x| x * spread)
                .collect()
        };
        [
            scaled(s.q_len(), seed),
            scaled(s.kv_len(), seed + 1),
            random_vec(s.kv_len(), seed + 2),
            random_vec(s.q_len(), seed + 3),
        ]
    }

    #[test]
    fn forward_and_backward_match_the_naive_f64_loops_on_random_shapes() {
        let mut rng = SplitMix64::new(42);
        let mut cases = vec![
            // T a multiple of the tile, one below, one above; head_dim not a
            // multiple of 16; GQA; nGPT's large scale.
            (2, 64, 2, 2, 64, 0.125),
            (1, 63, 1, 1, 16, 0.25),
            (1, 130, 4, 2, 24, 0.2),
            (1, 129, 6, 1, 8, 8.0),
        ];
        for _ in 0..4 {
            let kv_heads = 1 + rng.below(3) as usize;
            let heads = kv_heads * (1 + rng.below(3) as usize);
            let head_dim = 1 + rng.below(70) as usize;
            let seq = 1 + rng.below(200) as usize;
            let scale = 1.0 / (head_dim as f32).sqrt();
            cases.push((
                1 + rng.below(2) as usize,
                seq,
                heads,
                kv_heads,
                head_dim,
                scale,
            ));
        }
        for (i, &(batch, seq, heads, kv_heads, head_dim, scale)) in cases.iter().enumerate() {
            let s = AttentionShape {
                batch,
                seq,
                heads,
                kv_heads,
                head_dim,
                scale,
            };
            let [q, k, v, d_o] = inputs(&s, 10 * i as u64, 1.0);
            let want = naive(&s, &q, &k, &v, &d_o);
            for (version, kernels) in every_version().into_iter().enumerate() {
                let got = run_with(kernels, &s, &q, &k, &v, &d_o);
                let what = |x: &str| format!("{x} of {s:?}, version {version}");
                assert_close(&got.o, &to_f32(&want.o), 2e-5, &what("o"));
                assert_close(&got.lse, &to_f32(&want.lse), 2e-5, &what("lse"));
                assert_close(&got.dq, &to_f32(&want.dq), 1e-4, &what("dq"));
                assert_close(&got.dk, &to_f32(&want.dk), 1e-4, &what("dk"));
                assert_close(&got.dv, &to_f32(&want.dv), 1e-4, &what("dv"));
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        // L = Σ o ∘ w, so dL/do = w; check every input coordinate in f64
        // differences of the f32 kernel with a step large enough for f32.
        let s = AttentionShape {
            batch: 1,
            seq: 70,
            heads: 2,
            kv_heads: 1,
            head_dim: 5,
            scale: 0.6,
        };
        let [q, k, v, w] = inputs(&s, 7, 2.0);
        let got = run(&s, &q, &k, &v, &w);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let mut o = vec![0.0; s.q_len()];
            let mut lse = vec![0.0; s.lse_len()];
            attention_forward(&s, q, k, v, &mut o, &mut lse);
            o.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let eps = 1e-2f32;
        let mut rng = SplitMix64::new(3);
        for (which, grad) in [(0, &got.dq), (1, &got.dk), (2, &got.dv)] {
            for _ in 0..40 {
                let mut xs = [q.clone(), k.clone(), v.clone()];
                let idx = rng.below(xs[which].len() as u64) as usize;
                xs[which][idx] += eps;
                let up = loss(&xs[0], &xs[1], &xs[2]);
                xs[which][idx] -= 2.0 * eps;
                let down = loss(&xs[0], &xs[1], &xs[2]);
                let fd = (up - down) / (2.0 * eps as f64);
                let err = (fd - grad[idx] as f64).abs();
                assert!(
                    err < 2e-3 * fd.abs().max(1.0),
                    "input {which} index {idx}: finite difference {fd}, gradient {}",
                    grad[idx]
                );
            }
        }
    }

    #[test]
    fn large_scores_stay_finite() {
        // nGPT-like scale with large logits: the online softmax must not overflow.
        let s = AttentionShape {
            batch: 1,
            seq: 100,
            heads: 1,
            kv_heads: 1,
            head_dim: 32,
            scale: 30.0,
        };
        let [q, k, v, d_o] = inputs(&s, 5, 3.0);
        let got = run(&s, &q, &k, &v, &d_o);
        for x in [&got.o, &got.lse, &got.dq, &got.dk, &got.dv] {
            assert!(x.iter().all(|v| v.is_finite()));
        }
        let want = naive(&s, &q, &k, &v, &d_o);
        assert_close(&got.o, &to_f32(&want.o), 1e-4, "o");
    }

    #[test]
    fn exp_is_accurate_over_the_softmax_range() {
        let mut xs: Vec<f32> = (0..2000).map(|i| -80.0 + i as f32 * 0.04).collect();
        let want: Vec<f32> = xs.iter().map(|x| (x - 0.5).exp()).collect();
        let sum = exp_shifted(&mut xs, 0.5);
        let want_sum: f64 = want.iter().map(|&w| w as f64).sum();
        assert!((sum as f64 - want_sum).abs() < 1e-5 * want_sum);
        for (g, w) in xs.iter().zip(&want) {
            assert!((g - w).abs() <= 4.0 * f32::EPSILON * w, "{g} vs {w}");
        }
    }
}
