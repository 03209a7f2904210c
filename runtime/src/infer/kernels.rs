//! The decoder's arithmetic on single token vectors: matrix–vector products
//! (compiled per instruction set, split over threads when large), the norms,
//! RoPE and the activations, all as `build_forward` defines them.

use crate::cpu::isa::Isa;
use rayon::prelude::*;

/// Rows per parallel task: below this much work a matrix–vector product
/// stays on one thread.
const ROWS_PER_TASK: usize = 64;
const PARALLEL_ABOVE: usize = 1 << 16;

/// `y = W x` for a row-major `[y.len(), x.len()]` matrix `w`.
pub fn matvec(w: &[f32], x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(w.len(), x.len() * y.len());
    let rows = isa_rows();
    if w.len() <= PARALLEL_ABOVE {
        rows(w, x, y);
    } else {
        y.par_chunks_mut(ROWS_PER_TASK)
            .zip(w.par_chunks(ROWS_PER_TASK * x.len()))
            .for_each(|(y, w)| rows(w, x, y));
    }
}

/// `a · b`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut y = [0.0];
    isa_rows()(a, b, &mut y);
    y[0]
}

/// `y[r] = w[r] · x` for every row `r` of `w`.
type Rows = fn(&[f32], &[f32], &mut [f32]);

/// The row kernel for the widest vector unit the CPU has, chosen once.
fn isa_rows() -> Rows {
    static CHOSEN: std::sync::OnceLock<Rows> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| match Isa::get() {
        // SAFETY (of the calls inside): the CPU has the features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => |w, x, y| unsafe { rows_avx512(w, x, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => |w, x, y| unsafe { rows_avx2(w, x, y) },
        Isa::Portable => rows_lanes::<8>,
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512(w: &[f32], x: &[f32], y: &mut [f32]) {
    rows_lanes::<32>(w, x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(w: &[f32], x: &[f32], y: &mut [f32]) {
    rows_lanes::<16>(w, x, y)
}

#[inline(always)]
fn rows_lanes<const L: usize>(w: &[f32], x: &[f32], y: &mut [f32]) {
    for (yo, row) in y.iter_mut().zip(w.chunks_exact(x.len().max(1))) {
        *yo = dot_lanes::<L>(row, x);
    }
}

/// `L` independent partial sums, which the compiler keeps in vector
/// registers (two or more vectors' worth, to hide the adds' latency).
#[inline(always)]
fn dot_lanes<const L: usize>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; L];
    let (ca, ra) = a.as_chunks::<L>();
    let (cb, rb) = b.as_chunks::<L>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..L {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

pub fn rmsnorm(x: &[f32], eps: f64, out: &mut [f32]) {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let r = (1.0 / (ms + eps).sqrt()) as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * r;
    }
}

pub fn layernorm(x: &[f32], eps: f64, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let r = 1.0 / (var + eps).sqrt();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = ((v as f64 - mean) * r) as f32;
    }
}

/// `x / ‖x‖` in place (nGPT's normalisation; no epsilon, as in training).
pub fn l2norm(x: &mut [f32]) {
    let inv = (1.0
        / x.iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt()) as f32;
    for v in x {
        *v *= inv;
    }
}

/// The tanh form of GELU, as the training graph computes it.
pub fn gelu(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    const K: f32 = 0.044715;
    0.5 * x * (1.0 + (C * (x + K * x * x * x)).tanh())
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// RoPE's rotations for every position of the context: `cos` and `sin` of
/// `pos · base^(−2j/head_dim)`, `[context, head_dim / 2]` each.
pub struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    pub fn new(context: usize, head_dim: usize, base: f64) -> Rope {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pos in 0..context {
            for j in 0..half {
                let theta = pos as f64 * base.powf(-2.0 * j as f64 / head_dim as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        Rope { half, cos, sin }
    }

    /// Rotates every head of `x` (`[heads, head_dim]`) to position `pos`:
    /// coordinate `j` pairs with `j + head_dim / 2`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let h = self.half;
        let (cos, sin) = (&self.cos[pos * h..][..h], &self.sin[pos * h..][..h]);
        for head in x.chunks_exact_mut(2 * h) {
            let (a, b) = head.split_at_mut(h);
            for j in 0..h {
                let (x0, x1) = (a[j], b[j]);
                a[j] = x0 * cos[j] - x1 * sin[j];
                b[j] = x1 * cos[j] + x0 * sin[j];
            }
        }
    }
}

/// Softmax of `scores` in place.
pub fn softmax(scores: &mut [f32]) {
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - m).exp();
        z += *s;
    }
    for s in scores {
        *s /= z;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum_at_every_length() {
        for n in [0, 1, 7, 8, 31, 32, 33, 100, 257] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn parallel_matvec_equals_the_serial_one() {
        let (rows, cols) = (300, 257); // above PARALLEL_ABOVE, ragged last task
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32).sin()).collect();
        let mut y = vec![0.0; rows];
        matvec(&w, &x, &mut y);
        for (r, &yr) in y.iter().enumerate() {
            assert_eq!(yr, dot(&w[r * cols..][..cols], &x));
        }
    }
}
