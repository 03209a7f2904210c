//! bf16 products with f32 accumulation on x86-64 with AVX512_BF16 (Zen 4
//! and later, Cooper Lake and Sapphire Rapids and later): a format of
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
//!
//! The conversions round to nearest even, as [`bf16::round`] does; like
//! `vdpbf16ps` itself they treat subnormal inputs (below 1.2e-38) as zero,
//! which no trained weight or activation comes near.

use super::packed::{Format, Tile, View};
use gsc_compiler::kernel::bf16;
use std::arch::x86_64::*;

/// Rows of C per microkernel tile: 24 accumulators, 2 B vectors and a
/// broadcast fill 27 of the 32 zmm registers.
const MR: usize = 12;
/// Columns of C per microkernel tile (two 16-lane vectors).
const NR: usize = 32;

/// Whether this CPU can run the kernel.
pub fn supported() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512bf16")
}

/// The format's marker type.
pub(super) struct Bf16;

impl Format for Bf16 {
    const MR: usize = MR;
    const NR: usize = NR;
    /// One B micro-panel is `KC/2 · NR · 4` = 16 KiB, which stays in L1
    /// while the A panels stream past it.
    const KC: usize = 256;
    /// `MC · KC · 2` = 96 KiB (L2).
    const MC: usize = 192;
    /// 2 MiB of packed B.
    const B_BLOCK: usize = 1 << 19;
    const PER_WORD: usize = 2;

    unsafe fn pack_a(dst: &mut [u32], a: View, ic: usize, mc: usize, pc: usize, kc: usize) {
        pack_a(dst, a, ic, mc, pc, kc)
    }

    unsafe fn pack_b(dst: &mut [u32], b: View, pc: usize, kc: usize, jc: usize, nc: usize) {
        pack_b(dst, b, pc, kc, jc, nc)
    }

    unsafe fn micro(steps: usize, a: *const u32, b: *const u32, t: Tile) {
        micro(steps, a, b, t)
    }
}

/// Two values as one packed word: `lo` in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(bf16::bits(lo)) | u32::from(bf16::bits(hi)) << 16
}

/// `dst[i] = pair(lo[i], hi[i])` for `i < len ≤ 16`: two rows of the
/// stored matrix whose elements pair up column by column.
#[inline(always)]
unsafe fn interleave16(dst: *mut u32, lo: *const f32, hi: *const f32, len: usize) {
    let mask: __mmask16 = if len >= 16 { !0 } else { (1 << len) - 1 };
    let lo = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, lo));
    let hi = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, hi));
    let lo = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(lo));
    let hi = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(hi));
    let words = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
    _mm512_mask_storeu_epi32(dst.cast(), mask, words);
}

/// `dst[i] = pair(lo[i], hi[i])` for `i < len` (any length).
#[inline(always)]
unsafe fn interleave(dst: *mut u32, lo: *const f32, hi: *const f32, len: usize) {
    for i in (0..len).step_by(16) {
        interleave16(dst.add(i), lo.add(i), hi.add(i), (len - i).min(16));
    }
}

/// `dst[p·stride] = pair(row[2p], row[2p+1])` for `p < pairs`: one stored
/// row whose consecutive elements pair up, its pairs written `stride`
/// words apart (into a panel's column). 16 pairs are converted at a time,
/// then scattered by plain stores.
#[inline(always)]
unsafe fn pairs_of_row(dst: *mut u32, stride: usize, row: *const f32, pairs: usize) {
    let mut words = [0u32; 16];
    for p0 in (0..pairs).step_by(16) {
        let n = (pairs - p0).min(16);
        // 2n values: the low 16 through one mask, the rest through the other.
        let all = if n == 16 {
            u32::MAX
        } else {
            (1u32 << (2 * n)) - 1
        };
        let (m_lo, m_hi) = (all as __mmask16, (all >> 16) as __mmask16);
        let x = row.add(2 * p0);
        let lo = _mm512_maskz_loadu_ps(m_lo, x);
        let hi = _mm512_maskz_loadu_ps(m_hi, x.add(16));
        // 32 values to bf16 in order: word i holds values 2i and 2i+1.
        let both = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(
            words.as_mut_ptr().cast(),
            std::mem::transmute::<__m512bh, __m512i>(both),
        );
        for (i, &w) in words.iter().enumerate().take(n) {
            *dst.add((p0 + i) * stride) = w;
        }
    }
}

/// Packs `A[ic.., pc..]` (`mc × kc`) into `MR`-row panels of pairs,
/// zero-padding the last panel's rows and an odd last pair. A stored
/// either way round is read along its rows (see [`interleave`] and
/// [`pairs_of_row`]): one of its strides is 1, as in every [`super::Gemm`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_a(dst: &mut [u32], a: View, ic: usize, mc: usize, pc: usize, kc: usize) {
    let pairs = kc.div_ceil(2);
    let whole = kc / 2;
    for (panel, ir) in (0..mc).step_by(MR).enumerate() {
        let out = &mut dst[panel * MR * pairs..(panel + 1) * MR * pairs];
        let rows = MR.min(mc - ir);
        if rows < MR || whole < pairs {
            out.fill(0);
        }
        let o = out.as_mut_ptr();
        let src = a.ptr.offset((ic + ir) as isize * a.rs + pc as isize * a.cs);
        let at = |r: usize, p: usize| src.offset(r as isize * a.rs + p as isize * a.cs);
        if a.rs == 1 {
            // A transposed: stored rows 2p and 2p+1 pair up across the panel.
            for p in 0..whole {
                interleave16(o.add(p * MR), at(0, 2 * p), at(0, 2 * p + 1), rows);
            }
        } else {
            for r in 0..rows {
                pairs_of_row(o.add(r), MR, at(r, 0), whole);
            }
        }
        if whole < pairs {
            for r in 0..rows {
                *o.add(whole * MR + r) = pair(*at(r, kc - 1), 0.0);
            }
        }
    }
}

/// Packs `B[pc.., jc..]` (`kc × nc`) into `NR`-column panels of pairs,
/// zero-padding the last panel's columns and an odd last pair, reading B
/// along its stored rows as [`pack_a`] does.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_b(dst: &mut [u32], b: View, pc: usize, kc: usize, jc: usize, nc: usize) {
    let pairs = kc.div_ceil(2);
    let whole = kc / 2;
    for (panel, jr) in (0..nc).step_by(NR).enumerate() {
        let out = &mut dst[panel * NR * pairs..(panel + 1) * NR * pairs];
        let cols = NR.min(nc - jr);
        if cols < NR || whole < pairs {
            out.fill(0);
        }
        let o = out.as_mut_ptr();
        let src = b.ptr.offset(pc as isize * b.rs + (jc + jr) as isize * b.cs);
        let at = |p: usize, j: usize| src.offset(p as isize * b.rs + j as isize * b.cs);
        if b.cs == 1 {
            // Rows 2p and 2p+1 of B pair up across the panel.
            for p in 0..whole {
                interleave(o.add(p * NR), at(2 * p, 0), at(2 * p + 1, 0), cols);
            }
        } else {
            // B transposed: each stored row is one column of the panel.
            for j in 0..cols {
                pairs_of_row(o.add(j), NR, at(0, j), whole);
            }
        }
        if whole < pairs {
            for j in 0..cols {
                *o.add(whole * NR + j) = pair(*at(kc - 1, j), 0.0);
            }
        }
    }
}

/// The 12×32 microkernel: `acc = Σ_p a[p]ᵀ·b[p]` over `pairs` packed
/// pairs, then written into the tile.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro(pairs: usize, a: *const u32, b: *const u32, t: Tile) {
    t.prefetch_old::<NR>();
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
    store(&acc, t);
}

/// Writes a 12×32 tile of accumulators: `C = keep·C + beta·acc`, through a
/// stack copy where the tile hangs over the matrix's edge.
#[inline(always)]
unsafe fn store(acc: &[[__m512; 2]; MR], t: Tile) {
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
