//! The f32 format of [`super::packed`] for x86-64 with AVX-512: a 12×32
//! register tile (24 zmm accumulators, two B vectors and a broadcast fill
//! 27 of the 32 registers), and the tile store it shares with the bf16
//! kernel, whose tile is the same.

use super::packed::{pack_a_f32, pack_b_f32, Format, Tile, View};
use std::arch::x86_64::*;

/// Rows of C per microkernel tile.
pub(super) const MR: usize = 12;
/// Columns of C per microkernel tile (two 16-lane vectors).
pub(super) const NR: usize = 32;

/// Whether this CPU can run the kernel.
pub fn supported() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// The format's marker type.
pub(super) struct Avx512;

impl Format for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    /// One B micro-panel is `KC · NR · 4` = 16 KiB, half of L1.
    const KC: usize = 128;
    /// `MC · KC · 4` = 96 KiB (L2).
    const MC: usize = 192;
    /// 4 MiB of packed B.
    const B_BLOCK: usize = 1 << 20;
    const PER_WORD: usize = 1;

    unsafe fn pack_a(dst: &mut [u32], a: View, ic: usize, mc: usize, pc: usize, kc: usize) {
        pack_a_f32::<MR>(dst, a, ic, mc, pc, kc)
    }

    unsafe fn pack_b(dst: &mut [u32], b: View, pc: usize, kc: usize, jc: usize, nc: usize) {
        pack_b_f32::<NR>(dst, b, pc, kc, jc, nc)
    }

    unsafe fn micro(steps: usize, a: *const u32, b: *const u32, t: Tile) {
        micro(steps, a.cast(), b.cast(), t)
    }
}

/// The 12×32 microkernel: `acc = Σ_p a[p]ᵀ·b[p]` over packed panels, then
/// written into the tile. The broadcast of A folds into each FMA's memory
/// operand (`{1to16}`).
#[target_feature(enable = "avx512f")]
unsafe fn micro(kc: usize, a: *const f32, b: *const f32, t: Tile) {
    t.prefetch_old::<NR>();
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(p * MR + r));
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
        }
    }
    store(&acc, t);
}

/// Writes a 12×32 tile of accumulators: `C = keep·C + beta·acc`, through a
/// stack copy where the tile hangs over the matrix's edge.
#[inline(always)]
pub(super) unsafe fn store(acc: &[[__m512; 2]; MR], t: Tile) {
    let beta = _mm512_set1_ps(t.beta);
    if t.rows == MR && t.cols == NR {
        let keep = _mm512_set1_ps(t.keep);
        for (r, row) in acc.iter().enumerate() {
            let dst = t.ptr.add(r * t.ldc);
            for (h, v) in row.iter().enumerate() {
                let d = dst.add(16 * h);
                let out = if t.keep == 0.0 {
                    _mm512_mul_ps(beta, *v)
                } else {
                    _mm512_fmadd_ps(beta, *v, _mm512_mul_ps(keep, _mm512_loadu_ps(d)))
                };
                _mm512_storeu_ps(d, out);
            }
        }
        return;
    }
    let mut tmp = [[0.0f32; NR]; MR];
    for (r, row) in acc.iter().enumerate() {
        _mm512_storeu_ps(tmp[r].as_mut_ptr(), _mm512_mul_ps(beta, row[0]));
        _mm512_storeu_ps(tmp[r].as_mut_ptr().add(16), _mm512_mul_ps(beta, row[1]));
    }
    t.store_edge(&tmp);
}
