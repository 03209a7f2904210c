//! A 16 × 16 f32 transpose in AVX-512 registers, for kernels that copy an
//! operand across its stored direction (attention's `Kᵀ` and `Vᵀ`): left
//! to the vectoriser, such copies become gathers.

use std::arch::x86_64::*;

/// Returns the transpose of the 16 × 16 block whose rows are `r`: lane `i`
/// of output `j` is lane `j` of input `i`. Three rounds of shuffles: pairs
/// of rows interleaved by 32 bits, then by 64, then 128-bit lanes.
///
/// # Safety
/// The CPU must have AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // u[4m + c] holds, in its 128-bit lane L, column 4L + c of rows 4m..4m+4.
    let mut u = [_mm512_setzero_ps(); 16];
    let pd = _mm512_castps_pd;
    for m in 0..4 {
        let (a, b, c, e) = (t[4 * m], t[4 * m + 1], t[4 * m + 2], t[4 * m + 3]);
        u[4 * m] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * m + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * m + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(e)));
        u[4 * m + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(e)));
    }
    // Lane L of u[c], u[4 + c], u[8 + c], u[12 + c] is column 4L + c.
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn transposes_a_block() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("transpose16: no AVX-512 on this CPU, not run");
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut out = [0.0f32; 256];
        // SAFETY: AVX-512F was checked; every load and store is 16 values
        // inside a 256-value array.
        unsafe {
            use std::arch::x86_64::*;
            let rows: [__m512; 16] =
                std::array::from_fn(|i| _mm512_loadu_ps(m.as_ptr().add(16 * i)));
            for (j, v) in super::transpose16(&rows).iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), *v);
            }
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * j + i], m[16 * i + j], "({i}, {j})");
            }
        }
    }
}
