//! The blocking shared by gsc's packed products, in the style of BLIS:
//! `op(B)` is copied into `KC × NR` column panels that stay in L1, `op(A)`
//! into `MR × KC` row panels whose block stays in L2, and a register-tiled
//! microkernel runs over them. A [`Format`] says how one instruction set
//! packs and multiplies: f32 on AVX2 ([`super::avx2`]), bf16 pairs on
//! AVX512_BF16 ([`super::bf16`]).

use std::arch::x86_64::*;
use std::cell::RefCell;

/// A strided view of a matrix: element `(i, j)` is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// How one kernel packs its operands and multiplies the panels. Packed
/// panels are 32-bit words: an f32, or a pair of bf16 along K.
pub(super) trait Format {
    /// Rows and columns of C per microkernel tile.
    const MR: usize;
    const NR: usize;
    /// Inner-dimension block, a multiple of [`Format::PER_WORD`]: one B
    /// micro-panel (`KC · NR` values) stays in L1.
    const KC: usize;
    /// Rows of A per packed block (in L2).
    const MC: usize;
    /// Words of packed B per column block (all of K), in L3.
    const B_BLOCK: usize;
    /// Inner-dimension values per packed word.
    const PER_WORD: usize;

    /// Packs `A[ic.., pc..]` (`mc × kc`) into `MR`-row panels of
    /// `kc.div_ceil(PER_WORD)` steps each, zero-padding the last panel.
    unsafe fn pack_a(dst: &mut [u32], a: View, ic: usize, mc: usize, pc: usize, kc: usize);
    /// Packs `B[pc.., jc..]` (`kc × nc`) into `NR`-column panels.
    unsafe fn pack_b(dst: &mut [u32], b: View, pc: usize, kc: usize, jc: usize, nc: usize);
    /// `acc = Σ a[p]ᵀ·b[p]` over `steps` packed steps, written into `t`.
    unsafe fn micro(steps: usize, a: *const u32, b: *const u32, t: Tile);
}

/// Values of C in one block that several K blocks accumulate into: 512 KiB,
/// half of a core's L2.
const C_BLOCK: usize = 1 << 17;

thread_local! {
    /// Each thread's packing buffers (A, B), kept between calls so that a
    /// training step does not allocate (and fault in) fresh pages per product.
    static PACKS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `C = α·C + β·A·B` on the calling thread in format `F`, `A` `m × k`, `B`
/// `k × n`, `C` row-major `m × n` with leading dimension `ldc`; `α = 0`
/// never reads `C`.
///
/// # Safety
/// Every element of the three matrices in range must be valid (and C's
/// writable and aliased by neither input); the CPU must have the
/// instructions `F` is compiled for.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm<F: Format>(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    a: View,
    b: View,
    c: *mut f32,
    ldc: usize,
) {
    PACKS.with(|packs| {
        let (pa, pb) = &mut *packs.borrow_mut();
        // All of B's inner dimension for a block of columns is packed once,
        // so that the K blocks can run innermost and each C block stays in
        // L2 while it accumulates (re-reading C from L3 per K block cost a
        // third of the rate at K = 1024).
        // K blocks of equal depth (384 is two of 192, not 256 and 128).
        let kc_step = k
            .div_ceil(k.div_ceil(F::KC).max(1))
            .next_multiple_of(F::PER_WORD);
        let words = k.div_ceil(F::PER_WORD);
        let mut nc_max = F::B_BLOCK / words.max(1);
        if k > F::KC {
            // The C block that accumulates over the K blocks stays in L2.
            nc_max = nc_max.min(C_BLOCK / F::MC);
        }
        let nc_max = nc_max
            .next_multiple_of(F::NR)
            .clamp(F::NR, n.next_multiple_of(F::NR));
        pa.resize(F::MC * F::KC / F::PER_WORD, 0);
        pb.resize(words * nc_max, 0);
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let stride = nc.next_multiple_of(F::NR);
            for pc in (0..k).step_by(kc_step) {
                let at = pc / F::PER_WORD * stride;
                F::pack_b(&mut pb[at..], b, pc, kc_step.min(k - pc), jc, nc);
            }
            for ic in (0..m).step_by(F::MC) {
                let mc = F::MC.min(m - ic);
                for pc in (0..k).step_by(kc_step) {
                    let kc = kc_step.min(k - pc);
                    let steps = kc.div_ceil(F::PER_WORD);
                    F::pack_a(pa, a, ic, mc, pc, kc);
                    // The first K block applies α to the old C; later ones add.
                    let keep = if pc == 0 { alpha } else { 1.0 };
                    let pb = pb[pc / F::PER_WORD * stride..].as_ptr();
                    for jr in (0..nc).step_by(F::NR) {
                        let cols = F::NR.min(nc - jr);
                        for ir in (0..mc).step_by(F::MR) {
                            F::micro(
                                steps,
                                pa.as_ptr().add(ir * steps),
                                pb.add(jr * steps),
                                Tile {
                                    ptr: c.add((ic + ir) * ldc + jc + jr),
                                    ldc,
                                    rows: F::MR.min(mc - ir),
                                    cols,
                                    keep,
                                    beta,
                                },
                            );
                        }
                    }
                }
            }
        }
    });
}

/// [`Format::pack_a`] for f32 values: `MR`-row panels stored column by
/// column (`MR` consecutive values per `p`). The loops follow A's contiguous
/// direction: striding across rows of a transposed operand 4 KiB apart
/// would evict itself from L1. This copy is a tenth of a weight-gradient
/// product's time, so it runs on raw pointers: a bounds check per value
/// cost as much as the copy.
#[inline(always)]
pub(super) unsafe fn pack_a_f32<const MR: usize>(
    dst: &mut [u32],
    a: View,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
) {
    for (panel, ir) in (0..mc).step_by(MR).enumerate() {
        let out = &mut dst[panel * MR * kc..(panel + 1) * MR * kc];
        let rows = MR.min(mc - ir);
        if rows < MR {
            out.fill(0);
        }
        let o = out.as_mut_ptr().cast::<f32>();
        // SAFETY (all three loops): p < kc and r < rows stay inside both the
        // panel (`MR · kc` values) and the block of A the caller names.
        let src = a.ptr.offset((ic + ir) as isize * a.rs + pc as isize * a.cs);
        if a.rs == 1 && rows == MR {
            // A transposed: the panel's MR values for each p are adjacent.
            for p in 0..kc {
                std::ptr::copy_nonoverlapping(src.offset(p as isize * a.cs), o.add(p * MR), MR);
            }
        } else if a.rs.abs() < a.cs.abs() {
            for p in 0..kc {
                for r in 0..rows {
                    *o.add(p * MR + r) = *src.offset(r as isize * a.rs + p as isize * a.cs);
                }
            }
        } else {
            for r in 0..rows {
                let row = src.offset(r as isize * a.rs);
                for p in 0..kc {
                    *o.add(p * MR + r) = *row.offset(p as isize * a.cs);
                }
            }
        }
    }
}

/// [`Format::pack_b`] for f32 values: `NR`-column panels stored row by row
/// (`NR` consecutive values per `p`), zero-padding the last.
#[inline(always)]
pub(super) unsafe fn pack_b_f32<const NR: usize>(
    dst: &mut [u32],
    b: View,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
) {
    for (panel, jr) in (0..nc).step_by(NR).enumerate() {
        let out = &mut dst[panel * NR * kc..(panel + 1) * NR * kc];
        let o = out.as_mut_ptr().cast::<f32>();
        let cols = NR.min(nc - jr);
        if cols < NR {
            out.fill(0);
        }
        let src = b.ptr.offset(pc as isize * b.rs + (jc + jr) as isize * b.cs);
        if b.cs == 1 {
            // Rows of B are contiguous: one copy per p.
            for p in 0..kc {
                let (from, to) = (src.offset(p as isize * b.rs), o.add(p * NR));
                if cols == NR {
                    // A constant length: inlined, not a call to memcpy.
                    std::ptr::copy_nonoverlapping(from, to, NR);
                } else {
                    std::ptr::copy_nonoverlapping(from, to, cols);
                }
            }
        } else {
            // B transposed: each stored row is one column of the panel.
            for j in 0..cols {
                let row = src.offset(j as isize * b.cs);
                for p in 0..kc {
                    *o.add(p * NR + j) = *row.offset(p as isize * b.rs);
                }
            }
        }
    }
}

/// Where one microkernel tile lands in C and how it combines with it:
/// `C = keep·C + beta·acc` (`keep = 0` overwrites without reading).
pub(super) struct Tile {
    pub ptr: *mut f32,
    pub ldc: usize,
    pub rows: usize,
    pub cols: usize,
    pub keep: f32,
    pub beta: f32,
}

impl Tile {
    /// Fetches the tile's `W` columns of the old C when it will be read
    /// (`keep` not zero): read after the products, and last written a whole
    /// sweep of C ago, it is in L3 or memory, and a dependent miss per row
    /// at the end would stall the tile; fetched first, the misses overlap
    /// the products.
    ///
    /// # Safety
    /// The tile's rows must lie inside C (prefetches do not fault, but the
    /// addresses are computed with `add`).
    #[inline(always)]
    pub(super) unsafe fn prefetch_old<const W: usize>(&self) {
        if self.keep == 0.0 {
            return;
        }
        for r in 0..self.rows {
            let row = self.ptr.add(r * self.ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.add(W * 4 - 1));
        }
    }

    /// Writes a partial tile at the matrix's edge from a stack copy of the
    /// accumulators, already times `beta`: only its `rows × cols` corner.
    ///
    /// # Safety
    /// The tile's `rows × cols` elements must be valid to write (and read,
    /// when `keep` is not zero).
    pub(super) unsafe fn store_edge<const W: usize>(&self, tmp: &[[f32; W]]) {
        for (r, vals) in tmp.iter().enumerate().take(self.rows) {
            let dst = self.ptr.add(r * self.ldc);
            for (j, v) in vals.iter().enumerate().take(self.cols) {
                let d = dst.add(j);
                *d = if self.keep == 0.0 {
                    *v
                } else {
                    self.keep * *d + *v
                };
            }
        }
    }
}
