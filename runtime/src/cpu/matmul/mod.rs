//! f32 row-major matrix products on the CPU: a checked front over the
//! `gemm` crate (AVX-512 through its `x86-v4` feature, and any CPU) and
//! gsc's packed kernels ([`packed`]: f32 on AVX2, bf16 pairs on
//! AVX512_BF16); threads split C into blocks.
//!
//! One call computes `C = α·C + β·op(A)·op(B)` where `op` optionally
//! transposes a row-major operand in place (by strides, never by copying).
//! The two shapes a transformer needs are both one call:
//! - activations times a weight `[out, in]` (torch `Linear` layout):
//!   `Y[rows, out] = X[rows, in] · Wᵀ` is [`Gemm::new`]`(rows, out, in).trans_b()`;
//! - the weight gradient `dW[out, in] += dYᵀ · X` is
//!   [`Gemm::new`]`(out, in, rows).trans_a().accumulate()`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod bf16;
#[cfg(target_arch = "x86_64")]
mod packed;

use gemm::Parallelism;
use gsc_compiler::kernel::bf16::round as bf16_round;
use rayon::prelude::*;

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
    /// The kernel to run; `None` picks [`Kernel::best`] for this CPU.
    pub kernel: Option<Kernel>,
    /// Round every operand value to bf16 first and sum the products in f32
    /// (see [`Gemm::bf16`]).
    pub bf16: bool,
}

/// The product kernels [`Gemm::run`] can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The `gemm` crate, on any CPU.
    Crate,
    /// gsc's packed AVX2 + FMA kernel; where the CPU lacks AVX2 or FMA,
    /// asking for it runs [`Kernel::Crate`].
    Packed,
    /// For bf16 products: gsc's packed AVX512_BF16 kernel, which rounds
    /// the operands as it packs them. For f32 products, or where the CPU
    /// lacks AVX512_BF16, asking for it runs [`Kernel::Crate`].
    DotBf16,
}

impl Kernel {
    /// The kernel for inner dimension `k` on this CPU: on AVX2 without
    /// AVX-512 the packed kernel when K is one block (on one thread 5-8 %
    /// faster than the crate on most S shapes; in the whole S step on two
    /// threads within noise of it), the crate's otherwise. `cargo bench
    /// --bench kernels` prints both per shape. `GSC_MATMUL=crate|packed`
    /// makes every product use one kernel, to compare them in a whole step.
    pub fn best(k: usize) -> Kernel {
        static FORCED: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
        let forced = FORCED.get_or_init(|| match std::env::var("GSC_MATMUL").as_deref() {
            Ok("crate") => Some(Kernel::Crate),
            Ok("packed") => Some(Kernel::Packed),
            _ => None,
        });
        if let Some(kernel) = *forced {
            return kernel;
        }
        Kernel::fastest_f32(k)
    }

    /// [`Kernel::best`] for a bf16 product: the AVX512_BF16 kernel where
    /// the CPU has it; elsewhere the f32 kernel on rounded copies of the
    /// operands (the same numbers, at f32 speed).
    pub fn best_bf16(k: usize) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if bf16::supported() {
            return Kernel::DotBf16;
        }
        Kernel::best(k)
    }

    fn fastest_f32(k: usize) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if k <= avx2::KC && avx2::supported() && !std::is_x86_feature_detected!("avx512f") {
            return Kernel::Packed;
        }
        let _ = k;
        Kernel::Crate
    }
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
            kernel: None,
            bf16: false,
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

    /// Rounds each value of A and B to the nearest bf16 before it is
    /// multiplied; the products and their sums stay f32. The kernel-IR
    /// meaning of a `bf16` product, whichever kernel runs it.
    pub fn bf16(mut self) -> Self {
        self.bf16 = true;
        self
    }

    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = Some(kernel);
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
        let kernel = self.chosen_kernel();
        if self.bf16 && kernel != Kernel::DotBf16 {
            // No bf16 instructions here: the f32 kernel on rounded copies.
            let round = |x: &[f32]| x.iter().map(|&v| bf16_round(v)).collect::<Vec<_>>();
            let plain = Gemm {
                bf16: false,
                kernel: Some(kernel),
                ..*self
            };
            return plain.run(&round(a), &round(b), c);
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
        let parts = match self.threads {
            0 => rayon::current_num_threads(),
            t => t,
        };
        let ptrs = Operands {
            a: a.as_ptr(),
            b: b.as_ptr(),
            c: c.as_mut_ptr(),
        };
        // Each thread runs its own single-threaded product on a block of
        // C's rows (or columns, when C is wide): on small inner dimensions
        // this beats the crate's own splitting, which synchronises its
        // threads once per packed block.
        let split_rows = m >= n;
        let extent = if split_rows { m } else { n };
        let blocks = block_bounds(extent, parts);
        let one = |(lo, hi): (usize, usize)| {
            let ptrs = &ptrs; // the whole struct (Sync), not its raw fields
            let (rows, cols, a_off, b_off, c_off) = if split_rows {
                (hi - lo, n, lo * a_rs, 0, lo * self.ldc)
            } else {
                (m, hi - lo, 0, lo * b_cs, lo)
            };
            // SAFETY: check_operand proved every index (i, p), (p, j), (i, j)
            // in range lies inside its slice; the blocks are disjoint row (or
            // column) ranges of C, so no two threads write the same element,
            // and `c` is borrowed mutably, so it aliases neither input.
            unsafe {
                let (a, b, c) = (ptrs.a.add(a_off), ptrs.b.add(b_off), ptrs.c.add(c_off));
                #[cfg(target_arch = "x86_64")]
                if kernel != Kernel::Crate {
                    let view = |ptr, rs, cs| packed::View {
                        ptr,
                        rs: rs as isize,
                        cs: cs as isize,
                    };
                    let run = match kernel {
                        Kernel::Packed => packed::gemm::<avx2::Avx2>,
                        _ => packed::gemm::<bf16::Bf16>,
                    };
                    run(
                        rows,
                        cols,
                        k,
                        self.alpha,
                        self.beta,
                        view(a, a_rs, a_cs),
                        view(b, b_rs, b_cs),
                        c,
                        self.ldc,
                    );
                    return;
                }
                gemm::gemm(
                    rows,
                    cols,
                    k,
                    c,
                    1,
                    self.ldc as isize,
                    self.alpha != 0.0,
                    a,
                    a_cs as isize,
                    a_rs as isize,
                    b,
                    b_cs as isize,
                    b_rs as isize,
                    self.alpha,
                    self.beta,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        };
        if blocks.len() == 1 {
            one(blocks[0]);
        } else {
            blocks.into_par_iter().for_each(one);
        }
    }
}

impl Gemm {
    /// The kernel [`Gemm::run`] uses: the one asked for (or the best for
    /// this CPU) where the CPU and the product's precision allow it, the
    /// crate's otherwise.
    fn chosen_kernel(&self) -> Kernel {
        let want = self.kernel.unwrap_or_else(|| {
            if self.bf16 {
                Kernel::best_bf16(self.k)
            } else {
                Kernel::best(self.k)
            }
        });
        match want {
            #[cfg(target_arch = "x86_64")]
            Kernel::Packed if avx2::supported() => Kernel::Packed,
            #[cfg(target_arch = "x86_64")]
            Kernel::DotBf16 if self.bf16 && bf16::supported() => Kernel::DotBf16,
            _ => Kernel::Crate,
        }
    }
}

/// The three operands' base pointers, shared by the threads of one product.
#[derive(Clone, Copy)]
struct Operands {
    a: *const f32,
    b: *const f32,
    c: *mut f32,
}

// SAFETY: the threads of one product only read A and B and write disjoint
// blocks of C (see `Gemm::run`).
unsafe impl Send for Operands {}
unsafe impl Sync for Operands {}

/// Splits `0..extent` into at most `parts` contiguous blocks, each a multiple
/// of 48 elements (of both kernels' register-tile sides) but the last, and
/// never so small that a block is all overhead.
fn block_bounds(extent: usize, parts: usize) -> Vec<(usize, usize)> {
    const ALIGN: usize = 48;
    const MIN_BLOCK: usize = 64;
    let parts = parts.clamp(1, extent.div_ceil(MIN_BLOCK).max(1));
    let step = extent.div_ceil(parts).div_ceil(ALIGN) * ALIGN;
    (0..extent)
        .step_by(step.max(1))
        .map(|lo| (lo, (lo + step).min(extent)))
        .collect()
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

/// This machine's f32 matmul rate on all of rayon's threads, in GFLOP/s:
/// the best of a few products of two 1024 × 1024 matrices by the kernel
/// the training step would pick. Benchmarks print it beside their MFU, so
/// numbers from machines of different speeds are never confused.
pub fn measured_peak_gflops() -> f64 {
    const N: usize = 1024;
    let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; N * N];
    let gemm = Gemm::new(N, N, N).kernel(Kernel::best(N));
    let mut best = f64::INFINITY;
    for _ in 0..8 {
        let t = std::time::Instant::now();
        gemm.run(&a, &b, &mut c);
        best = best.min(t.elapsed().as_secs_f64());
    }
    gemm.flops() / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, random_vec};

    /// The obviously right product, in f64 (of the rounded operands, for
    /// a bf16 product).
    fn naive(g: &Gemm, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
        let round = |x: f32| if g.bf16 { bf16_round(x) } else { x };
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
                    s += round(av) as f64 * round(bv) as f64;
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

    /// [`check`] of `g` with each operand stored either way round.
    fn check_every_transpose(g: Gemm, seed: &mut u64) {
        for ta in [false, true] {
            for tb in [false, true] {
                let mut g = g;
                if ta {
                    g = g.trans_a();
                }
                if tb {
                    g = g.trans_b();
                }
                check(g, *seed);
                *seed += 3;
            }
        }
    }

    const KERNELS_AND_THREADS: [(usize, Kernel); 4] = [
        (1, Kernel::Crate),
        (2, Kernel::Crate),
        (1, Kernel::Packed),
        (2, Kernel::Packed),
    ];

    #[test]
    fn every_transpose_and_scale_matches_the_naive_loop() {
        let mut seed = 1;
        let scales = [(0.0, 1.0), (1.0, 1.0), (0.5, -2.0)];
        for (m, n, k, scales) in [
            (1, 1, 1, &scales[..]),
            (7, 5, 3, &scales),
            (33, 17, 65, &scales),
            (64, 96, 80, &scales),
            (130, 70, 257, &scales),
            // Several K, M and N blocks of the packed kernels, with edges.
            (301, 2100, 530, &scales[2..]),
        ] {
            for &(alpha, beta) in scales {
                for (threads, kernel) in KERNELS_AND_THREADS {
                    let g = Gemm::new(m, n, k)
                        .scale(alpha, beta)
                        .threads(threads)
                        .kernel(kernel);
                    check_every_transpose(g, &mut seed);
                }
            }
        }
    }

    /// bf16 products on every kernel that runs them here (AVX512_BF16 where
    /// the CPU has it, rounded copies through the f32 kernels everywhere),
    /// against the f64 product of the rounded operands.
    #[test]
    fn bf16_products_match_the_naive_loop_of_rounded_operands() {
        let dot = bf16::supported();
        eprintln!(
            "bf16 products: AVX512_BF16 kernel {}",
            if dot { "tested" } else { "not on this CPU" }
        );
        let mut seed = 7;
        let every_kernel = [
            (1, Kernel::DotBf16),
            (2, Kernel::DotBf16),
            (2, Kernel::Crate),
            (1, Kernel::Packed),
        ];
        let scales = [(0.0, 1.0), (1.0, 1.0), (0.5, -2.0)];
        for (m, n, k, kernels, scales) in [
            (1, 1, 1, &every_kernel[..], &scales[..]),
            (7, 5, 3, &every_kernel, &scales),
            (13, 33, 2, &every_kernel, &scales),
            // 8 and 24 pairs: a last group of 8 converts exactly one vector.
            (14, 35, 16, &every_kernel, &scales),
            (5, 40, 49, &every_kernel, &scales),
            (33, 17, 65, &every_kernel, &scales),
            (130, 70, 257, &every_kernel, &scales),
            // Several K, M and N blocks of the bf16 kernel, with edges.
            (211, 2100, 531, &every_kernel[..1], &scales[2..]),
        ] {
            for &(alpha, beta) in scales {
                for &(threads, kernel) in kernels {
                    let g = Gemm::new(m, n, k)
                        .scale(alpha, beta)
                        .threads(threads)
                        .kernel(kernel)
                        .bf16();
                    check_every_transpose(g, &mut seed);
                }
            }
        }
    }

    /// Rounding matters: the same product in f32 differs from the bf16 one
    /// by about bf16's precision, so the test above could tell them apart.
    #[test]
    fn bf16_products_differ_from_f32_ones() {
        let (m, n, k) = (16, 32, 64);
        let a = random_vec(m * k, 3);
        let b = random_vec(k * n, 4);
        let (mut c32, mut c16) = (vec![0.0; m * n], vec![0.0; m * n]);
        Gemm::new(m, n, k).run(&a, &b, &mut c32);
        Gemm::new(m, n, k).bf16().run(&a, &b, &mut c16);
        let worst = c32
            .iter()
            .zip(&c16)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst > 1e-3, "bf16 and f32 agree to {worst}");
    }

    #[test]
    fn leading_dimensions_select_a_column_block() {
        // One head's slice (columns 8..24) of [tokens, 32] activations.
        for (threads, kernel) in KERNELS_AND_THREADS {
            let g = Gemm::new(10, 12, 16)
                .trans_b()
                .leading_dims(32, 32, 20)
                .threads(threads)
                .kernel(kernel);
            check(g, 99);
        }
    }

    #[test]
    fn overwrite_ignores_nan_in_the_destination() {
        for (threads, kernel) in KERNELS_AND_THREADS {
            let g = Gemm::new(7, 20, 5).threads(threads).kernel(kernel);
            let a = random_vec(35, 1);
            let b = random_vec(100, 2);
            let mut c = vec![f32::NAN; 140];
            g.run(&a, &b, &mut c);
            assert!(c.iter().all(|x| x.is_finite()), "{kernel:?}");
        }
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
