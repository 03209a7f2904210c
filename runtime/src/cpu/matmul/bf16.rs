//! bf16 products with f32 accumulation on x86-64 with AVX512_BF16 (Zen 4
//! and later, Cooper Lake and Sapphire Rapids and later): the blocking of
//! [`super::packed`], with the operands rounded to bf16 as they are packed
//! and a 12×32 microkernel of `vdpbf16ps`, which multiplies two pairs of
//! bf16 per f32 lane and adds both products to the lane: twice the
//! multiply-adds of an f32 FMA per instruction, from half the bytes.
//!
//! Packed layouts hold pairs of consecutive inner-dimension values in one
//! 32-bit word, low half first, as `vdpbf16ps` reads them: a B panel is
//! `[kc/2][NR]` words (the pair `(B[2p, j], B[2p+1, j])` at `p·NR + j`),
//! an A panel `[kc/2][MR]` (the pair `(A[i, 2p], A[i, 2p+1])`, broadcast to
//! every lane). An odd inner dimension pads its last pair with zero.

use super::packed::{Tile, View};
use gsc_compiler::kernel::bf16;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of C per microkernel tile: 24 accumulators, 2 B vectors and a
/// broadcast fill 27 of the 32 zmm registers.
const MR: usize = 12;
/// Columns of C per microkernel tile (two 16-lane vectors).
const NR: usize = 32;
/// Inner-dimension block (even): one B micro-panel is `KC/2 · NR · 4` =
/// 16 KiB, which stays in L1 while the A panels stream past it.
const KC: usize = 256;
/// Rows of A per packed block: `MC · KC · 2` = 96 KiB (L2).
const MC: usize = 192;
/// Words of packed B per column block (all of K): 2 MiB, in L3.
const B_BLOCK: usize = 1 << 19;

/// Whether this CPU can run the kernel.
pub fn supported() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
}

thread_local! {
    /// Each thread's packing buffers (A, B), kept between calls.
    static PACKS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `C = α·C + β·A·B` on the calling thread with A and B rounded to bf16,
/// `A` `m × k`, `B` `k × n`, `C` row-major `m × n` with leading dimension
/// `ldc`; `α = 0` never reads `C`.
///
/// # Safety
/// As [`super::packed::sgemm`], and the CPU must have AVX512_BF16
/// ([`supported`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
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
        let k2 = k.next_multiple_of(2);
        let nc_max = (2 * B_BLOCK / k2.max(2))
            .next_multiple_of(NR)
            .clamp(NR, n.next_multiple_of(NR));
        pa.resize(MC * KC / 2, 0);
        pb.resize(k2 / 2 * nc_max, 0);
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let stride = nc.next_multiple_of(NR);
            for pc in (0..k).step_by(KC) {
                pack_b(&mut pb[pc / 2 * stride..], b, pc, KC.min(k - pc), jc, nc);
            }
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let pairs = kc.div_ceil(2);
                    pack_a(pa, a, ic, mc, pc, kc);
                    let keep = if pc == 0 { alpha } else { 1.0 };
                    let pb = pb[pc / 2 * stride..].as_ptr();
                    for jr in (0..nc).step_by(NR) {
                        let cols = NR.min(nc - jr);
                        for ir in (0..mc).step_by(MR) {
                            micro(
                                pairs,
                                pa.as_ptr().add(ir * pairs),
                                pb.add(jr * pairs),
                                Tile {
                                    ptr: c.add((ic + ir) * ldc + jc + jr),
                                    ldc,
                                    rows: MR.min(mc - ir),
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

/// Two values as one packed word: `lo` in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(bf16::bits(lo)) | u32::from(bf16::bits(hi)) << 16
}

/// Packs `A[ic.., pc..]` (`mc × kc`) into `MR`-row panels of pairs,
/// zero-padding the last panel's rows and an odd last pair. Each branch
/// reads A along its contiguous direction, so the rounding vectorises.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_a(dst: &mut [u32], a: View, ic: usize, mc: usize, pc: usize, kc: usize) {
    let pairs = kc.div_ceil(2);
    let whole = kc / 2;
    for (panel, ir) in (0..mc).step_by(MR).enumerate() {
        let out = &mut dst[panel * MR * pairs..(panel + 1) * MR * pairs];
        let rows = MR.min(mc - ir);
        if rows < MR || whole < pairs {
            out.fill(0);
        }
        let src = a.ptr.offset((ic + ir) as isize * a.rs + pc as isize * a.cs);
        let at = |r: usize, p: usize| *src.offset(r as isize * a.rs + p as isize * a.cs);
        if a.rs == 1 {
            // A transposed: rows 2p and 2p+1 of the stored matrix give the
            // panel's MR words for p.
            for p in 0..whole {
                for (r, o) in out[p * MR..][..rows].iter_mut().enumerate() {
                    *o = pair(at(r, 2 * p), at(r, 2 * p + 1));
                }
            }
        } else {
            for r in 0..rows {
                for p in 0..whole {
                    out[p * MR + r] = pair(at(r, 2 * p), at(r, 2 * p + 1));
                }
            }
        }
        if whole < pairs {
            for r in 0..rows {
                out[whole * MR + r] = pair(at(r, kc - 1), 0.0);
            }
        }
    }
}

/// Packs `B[pc.., jc..]` (`kc × nc`) into `NR`-column panels of pairs,
/// zero-padding the last panel's columns and an odd last pair.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_b(dst: &mut [u32], b: View, pc: usize, kc: usize, jc: usize, nc: usize) {
    let pairs = kc.div_ceil(2);
    let whole = kc / 2;
    for (panel, jr) in (0..nc).step_by(NR).enumerate() {
        let out = &mut dst[panel * NR * pairs..(panel + 1) * NR * pairs];
        let cols = NR.min(nc - jr);
        if cols < NR || whole < pairs {
            out.fill(0);
        }
        let at = |p: usize, j: usize| b.at(pc + p, jc + jr + j);
        if b.cs == 1 {
            // Rows of B contiguous: two rows make NR words, lane by lane.
            for p in 0..whole {
                for (j, o) in out[p * NR..][..cols].iter_mut().enumerate() {
                    *o = pair(at(2 * p, j), at(2 * p + 1, j));
                }
            }
        } else {
            for j in 0..cols {
                for p in 0..whole {
                    out[p * NR + j] = pair(at(2 * p, j), at(2 * p + 1, j));
                }
            }
        }
        if whole < pairs {
            for j in 0..cols {
                out[whole * NR + j] = pair(at(kc - 1, j), 0.0);
            }
        }
    }
}

/// The 12×32 microkernel: `acc = Σ_p a[p]ᵀ·b[p]` over `pairs` packed
/// pairs, then written into the tile.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro(pairs: usize, a: *const u32, b: *const u32, t: Tile) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..pairs {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
        for (r, row) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(p * MR + r) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], av, b0);
            row[1] = _mm512_dpbf16_ps(row[1], av, b1);
        }
    }
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
