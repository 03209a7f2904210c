//! f32 row-major matrix products on the CPU: a thin, checked wrapper over the
//! `gemm` crate (AVX-512 kernels through its `x86-v4` feature, rayon threads).
//!
//! One call computes `C = α·C + β·op(A)·op(B)` where `op` optionally
//! transposes a row-major operand in place (by strides, never by copying).
//! The two shapes a transformer needs are both one call:
//! - activations times a weight `[out, in]` (torch `Linear` layout):
//!   `Y[rows, out] = X[rows, in] · Wᵀ` is [`Gemm::new`]`(rows, out, in).trans_b()`;
//! - the weight gradient `dW[out, in] += dYᵀ · X` is
//!   [`Gemm::new`]`(out, in, rows).trans_a().accumulate()`.

use gemm::Parallelism;

/// The description of one product; build it with [`Gemm::new`] and the
/// chained setters, then call [`Gemm::run`].
///
/// `C` is `m × n`, `op(A)` is `m × k`, `op(B)` is `k × n`. Each matrix is
/// stored row-major with a leading dimension (distance between consecutive
/// stored rows) that defaults to its stored width; a larger one lets a call
/// read or write a column block of a wider matrix, such as one head's slice
/// of a `[tokens, heads·head_dim]` activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `A` is stored `k × m` and used transposed.
    pub trans_a: bool,
    /// `B` is stored `n × k` and used transposed.
    pub trans_b: bool,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// Factor on the old `C`; 0 means `C` is overwritten without being read
    /// (so uninitialised or NaN contents do not leak into the result).
    pub alpha: f32,
    /// Factor on the product.
    pub beta: f32,
    /// Worker threads: 1 runs on the calling thread, 0 means all of rayon's.
    pub threads: usize,
}

impl Gemm {
    /// `C = A·B` with contiguous operands, on all of rayon's threads.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            lda: k,
            ldb: n,
            ldc: n,
            alpha: 0.0,
            beta: 1.0,
            threads: 0,
        }
    }

    /// Use `Aᵀ`: `A` is stored `k × m` (resets `lda` to `m`).
    pub fn trans_a(mut self) -> Self {
        self.trans_a = true;
        self.lda = self.m;
        self
    }

    /// Use `Bᵀ`: `B` is stored `n × k` (resets `ldb` to `k`).
    pub fn trans_b(mut self) -> Self {
        self.trans_b = true;
        self.ldb = self.k;
        self
    }

    /// `C += β·op(A)·op(B)`.
    pub fn accumulate(mut self) -> Self {
        self.alpha = 1.0;
        self
    }

    pub fn scale(mut self, alpha: f32, beta: f32) -> Self {
        self.alpha = alpha;
        self.beta = beta;
        self
    }

    pub fn leading_dims(mut self, lda: usize, ldb: usize, ldc: usize) -> Self {
        self.lda = lda;
        self.ldb = ldb;
        self.ldc = ldc;
        self
    }

    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Floating-point operations of the product (2·m·n·k), for GFLOP/s.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Runs the product.
    ///
    /// # Panics
    /// If a slice is too short for its shape and leading dimension, or a
    /// leading dimension is narrower than its stored row. Shapes come from the
    /// compiled plan, so a mismatch is a bug in the caller, and the check is
    /// what keeps the unchecked kernel underneath sound.
    pub fn run(&self, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = (self.m, self.n, self.k);
        let (a_rows, a_cols) = if self.trans_a { (k, m) } else { (m, k) };
        let (b_rows, b_cols) = if self.trans_b { (n, k) } else { (k, n) };
        check_operand("A", a.len(), a_rows, a_cols, self.lda);
        check_operand("B", b.len(), b_rows, b_cols, self.ldb);
        check_operand("C", c.len(), m, n, self.ldc);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            // No product terms: only the α·C part remains.
            for row in c.chunks_mut(self.ldc).take(m) {
                for x in &mut row[..n] {
                    *x = if self.alpha == 0.0 {
                        0.0
                    } else {
                        self.alpha * *x
                    };
                }
            }
            return;
        }
        // Strides of op(A)[i, p] and op(B)[p, j] in elements: (row, column).
        let (a_rs, a_cs) = if self.trans_a {
            (1, self.lda)
        } else {
            (self.lda, 1)
        };
        let (b_rs, b_cs) = if self.trans_b {
            (1, self.ldb)
        } else {
            (self.ldb, 1)
        };
        let parallelism = match self.threads {
            1 => Parallelism::None,
            t => Parallelism::Rayon(t),
        };
        // SAFETY: check_operand proved every index (i, p), (p, j), (i, j) in
        // range lies inside its slice, and `c` is borrowed mutably, so the
        // destination aliases neither input.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                self.ldc as isize,
                self.alpha != 0.0,
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                self.alpha,
                self.beta,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

fn check_operand(name: &str, len: usize, rows: usize, cols: usize, ld: usize) {
    assert!(
        ld >= cols,
        "matmul: {name} leading dimension {ld} < its {cols} stored columns"
    );
    let need = if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    };
    assert!(
        len >= need,
        "matmul: {name} holds {len} values, {rows}×{cols} with leading dimension {ld} needs {need}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, random_vec};

    /// The obviously right product, in f64.
    fn naive(g: &Gemm, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
        let mut out = c.to_vec();
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0.0f64;
                for p in 0..g.k {
                    let av = if g.trans_a {
                        a[p * g.lda + i]
                    } else {
                        a[i * g.lda + p]
                    };
                    let bv = if g.trans_b {
                        b[j * g.ldb + p]
                    } else {
                        b[p * g.ldb + j]
                    };
                    s += av as f64 * bv as f64;
                }
                let old = if g.alpha == 0.0 {
                    0.0
                } else {
                    g.alpha as f64 * c[i * g.ldc + j] as f64
                };
                out[i * g.ldc + j] = (old + g.beta as f64 * s) as f32;
            }
        }
        out
    }

    fn check(g: Gemm, seed: u64) {
        let a_len = if g.trans_a { g.k * g.lda } else { g.m * g.lda };
        let b_len = if g.trans_b { g.n * g.ldb } else { g.k * g.ldb };
        let a = random_vec(a_len, seed);
        let b = random_vec(b_len, seed + 1);
        let mut c = random_vec(g.m * g.ldc, seed + 2);
        let want = naive(&g, &a, &b, &c);
        g.run(&a, &b, &mut c);
        assert_close(&c, &want, 1e-4, &format!("{g:?}"));
    }

    #[test]
    fn every_transpose_and_scale_matches_the_naive_loop() {
        let mut seed = 1;
        for (m, n, k) in [
            (1, 1, 1),
            (7, 5, 3),
            (33, 17, 65),
            (64, 96, 80),
            (130, 70, 257),
        ] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for (alpha, beta) in [(0.0, 1.0), (1.0, 1.0), (0.5, -2.0)] {
                        for threads in [1, 2] {
                            let mut g = Gemm::new(m, n, k).scale(alpha, beta).threads(threads);
                            if ta {
                                g = g.trans_a();
                            }
                            if tb {
                                g = g.trans_b();
                            }
                            check(g, seed);
                            seed += 3;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn leading_dimensions_select_a_column_block() {
        // One head's slice (columns 8..24) of [tokens, 32] activations.
        let g = Gemm::new(10, 12, 16).trans_b().leading_dims(32, 32, 20);
        check(g, 99);
    }

    #[test]
    fn overwrite_ignores_nan_in_the_destination() {
        let g = Gemm::new(3, 4, 5);
        let a = random_vec(15, 1);
        let b = random_vec(20, 2);
        let mut c = vec![f32::NAN; 12];
        g.run(&a, &b, &mut c);
        assert!(c.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn empty_inner_dimension_scales_the_destination() {
        let mut c = vec![2.0f32; 6];
        Gemm::new(2, 3, 0).scale(0.5, 1.0).run(&[], &[], &mut c);
        assert_eq!(c, vec![1.0; 6]);
    }

    #[test]
    #[should_panic(expected = "B holds 5 values")]
    fn short_operand_is_refused() {
        Gemm::new(2, 3, 2).run(&[0.0; 4], &[0.0; 5], &mut [0.0; 6]);
    }
}
