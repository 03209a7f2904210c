//! The kernel IR's row-major products as cuBLAS's column-major ones. A
//! row-major `[r, c]` matrix is the column-major `[c, r]` one, so
//! `out = op(a)·op(b)` (row-major) is `outᵀ = op(b)ᵀ·op(a)ᵀ` (column-major):
//! cuBLAS is called with the operands swapped, `m` and `n` swapped, and
//! each operand transposed exactly when the kernel IR says so.

/// The arguments of one `cublasSgemmStridedBatched` call, operands named
/// as cuBLAS names them (`first` is cuBLAS's A: the kernel IR's `b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmCall {
    pub trans_first: bool,
    pub trans_second: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ld_first: usize,
    pub ld_second: usize,
    pub ld_out: usize,
    pub stride_first: usize,
    pub stride_second: usize,
    pub stride_out: usize,
    pub batch: usize,
}

/// The cuBLAS call of the kernel IR's `MatMul { m, n, k, ta, tb, batch }`:
/// cuBLAS's A is the IR's `b`, its B the IR's `a`.
pub fn gemm_call(m: usize, n: usize, k: usize, ta: bool, tb: bool, batch: usize) -> GemmCall {
    GemmCall {
        // `b` is row-major [k, n] (column-major [n, k]: ld n) or, when
        // transposed, [n, k] (column-major [k, n]: ld k).
        trans_first: tb,
        trans_second: ta,
        m: n,
        n: m,
        k,
        ld_first: if tb { k } else { n },
        ld_second: if ta { m } else { k },
        ld_out: n,
        stride_first: k * n,
        stride_second: m * k,
        stride_out: m * n,
        batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::library::matmul;

    /// cuBLAS's `gemm` as documented: column-major, `C = op(A)·op(B)`,
    /// `op(A)` `[m, k]`, element (i, j) of a matrix with leading dimension
    /// `ld` at `i + j·ld`.
    fn column_major_gemm(c: &GemmCall, a: &[f64], b: &[f64], out: &mut [f64]) {
        for batch in 0..c.batch {
            let (a, b) = (&a[batch * c.stride_first..], &b[batch * c.stride_second..]);
            let out = &mut out[batch * c.stride_out..];
            for i in 0..c.m {
                for j in 0..c.n {
                    let mut acc = 0.0;
                    for p in 0..c.k {
                        let x = if c.trans_first {
                            a[p + i * c.ld_first]
                        } else {
                            a[i + p * c.ld_first]
                        };
                        let y = if c.trans_second {
                            b[j + p * c.ld_second]
                        } else {
                            b[p + j * c.ld_second]
                        };
                        acc += x * y;
                    }
                    out[i + j * c.ld_out] = acc;
                }
            }
        }
    }

    #[test]
    fn every_transpose_and_batch_matches_the_row_major_product() {
        let (m, n, k, batch) = (5, 3, 4, 2);
        let a: Vec<f64> = (0..batch * m * k)
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        let b: Vec<f64> = (0..batch * k * n)
            .map(|i| (i as f64 * 0.91).cos())
            .collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut want = vec![0.0; batch * m * n];
            for i in 0..batch {
                matmul(
                    &a[i * m * k..][..m * k],
                    &b[i * k * n..][..k * n],
                    &mut want[i * m * n..][..m * n],
                    m,
                    n,
                    k,
                    ta,
                    tb,
                );
            }
            let mut got = vec![0.0; batch * m * n];
            column_major_gemm(&gemm_call(m, n, k, ta, tb, batch), &b, &a, &mut got);
            assert_eq!(got, want, "ta={ta} tb={tb}");
        }
    }
}
