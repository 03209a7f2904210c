//! GFLOP/s of the CPU building blocks on the reference models' shapes
//! (S: d 256, 4 heads; M: d 384, 6 heads; 16 × 256 tokens per step), on one
//! thread and on all of them. Run with `cargo bench -p gsc-runtime`.
//!
//! `GSC_BENCH_SHAPE=dW` times only the products whose label contains `dW`;
//! `GSC_BENCH_THREADS=1` only on one thread.
//!
//! Medians of several timed repetitions after a warm-up; the machine is
//! shared, so read ratios, not absolute numbers, from a noisy run.

use gsc_runtime::cpu::attention::{attention_backward, attention_forward, AttentionShape};
use gsc_runtime::cpu::matmul::{Gemm, Kernel};
use std::time::Instant;

/// Peak f32 FLOP/s of one core, measured: a loop of independent FMAs at the
/// widest vectors the CPU has. Assuming a figure misleads: Zen 4 splits a
/// 512-bit FMA over both of its 256-bit units, Zen 5 runs two per cycle.
fn peak_per_core() -> f64 {
    static PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PEAK.get_or_init(|| {
        let rounds = 20_000_000u64;
        let start = thread_cpu_ns();
        let t = Instant::now();
        // SAFETY: each loop runs only where the CPU has its instructions.
        let (flops_per_round, sink) = unsafe {
            if is_x86_feature_detected!("avx512f") {
                (12.0 * 32.0, fma_loop_avx512(rounds))
            } else {
                (12.0 * 16.0, fma_loop_avx2(rounds))
            }
        };
        std::hint::black_box(sink);
        let secs = match (start, thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
            _ => t.elapsed().as_secs_f64(),
        };
        flops_per_round * rounds as f64 / secs
    })
}

/// Twelve independent FMA chains, enough to cover the latency of two units.
macro_rules! fma_loop {
    ($name:ident, $feature:literal, $set1:ident, $fmadd:ident, $reduce:expr) => {
        #[target_feature(enable = $feature)]
        unsafe fn $name(rounds: u64) -> f32 {
            use std::arch::x86_64::*;
            let (x, y) = ($set1(0.999_999), $set1(1e-7));
            let mut acc = [$set1(1.0); 12];
            for _ in 0..rounds {
                for a in acc.iter_mut() {
                    *a = $fmadd(*a, x, y);
                }
            }
            acc.iter().map(|&a| $reduce(a)).sum()
        }
    };
}
fma_loop!(
    fma_loop_avx512,
    "avx512f",
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    |a| _mm512_reduce_add_ps(a)
);
fma_loop!(
    fma_loop_avx2,
    "avx2,fma",
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    |a| _mm256_cvtss_f32(a)
);

/// The core clock, from a chain of dependent integer adds (one per cycle)
/// timed on CPU time: /proc/cpuinfo's nominal figure is often far off.
fn clock_hz() -> f64 {
    // Eight dependent adds per iteration, so the loop's own instructions
    // run alongside the chain instead of adding to it.
    let rounds: u64 = 50_000_000;
    let start = thread_cpu_ns();
    let t = Instant::now();
    let mut x = 0u64;
    for _ in 0..rounds {
        // SAFETY: register adds only; no memory is touched.
        unsafe {
            std::arch::asm!(
                "add {0}, 1", "add {0}, 1", "add {0}, 1", "add {0}, 1",
                "add {0}, 1", "add {0}, 1", "add {0}, 1", "add {0}, 1",
                inout(reg) x,
                options(nomem, nostack),
            )
        };
    }
    std::hint::black_box(x);
    let secs = match (start, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
        _ => t.elapsed().as_secs_f64(),
    };
    8.0 * rounds as f64 / secs
}

const TOKENS: usize = 16 * 256;

/// Nanoseconds this thread has spent on a CPU (Linux), which unlike wall
/// time does not grow while other processes hold the cores.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Median wall seconds of `reps` runs after a warm-up, and the median
/// on-CPU seconds of the calling thread (meaningful for one-thread runs).
fn median_secs(reps: usize, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f();
    let mut wall = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (t, c) = (Instant::now(), thread_cpu_ns());
        f();
        wall.push(t.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c, thread_cpu_ns()) {
            cpu.push((c1 - c0) as f64 * 1e-9);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let cpu = (cpu.len() == reps).then(|| median(cpu));
    (median(wall), cpu)
}

/// "wall ms, GFLOP/s, % of peak", plus the same on CPU time for one thread.
fn rates(flops: f64, threads: usize, (wall, cpu): (f64, Option<f64>)) -> String {
    let peak = peak_per_core() * threads as f64;
    let one = |secs: f64| {
        let rate = flops / secs;
        format!(
            "{:>8.3} ms {:>7.1} GFLOP/s {:>5.1} %",
            secs * 1e3,
            rate / 1e9,
            100.0 * rate / peak
        )
    };
    match cpu.filter(|_| threads == 1) {
        Some(cpu) => format!("{} | on-CPU {}", one(wall), one(cpu)),
        None => one(wall),
    }
}

fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(f)
}

fn filled(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Times the product with each kernel, the crate's first (the peer).
fn bench_gemm(label: &str, g: Gemm, threads: usize) {
    // GSC_BENCH_SHAPE=part of a label (`dW`, `up`) times only those shapes.
    if std::env::var("GSC_BENCH_SHAPE").is_ok_and(|s| !label.contains(&s)) {
        return;
    }
    let (a_len, b_len) = (g.m * g.k, g.k * g.n);
    let (a, b, mut c) = (filled(a_len), filled(b_len), filled(g.m * g.n));
    // The f32 kernels, then the bf16 product on the kernel it picks here
    // (AVX512_BF16, or the f32 one on rounded copies), and on the crate's
    // f32 kernel with rounded copies (what CPUs without AVX512_BF16 run).
    let bf16 = g.bf16();
    for (what, g) in [
        ("Crate", g.kernel(Kernel::Crate)),
        ("Packed", g.kernel(Kernel::Packed)),
        ("bf16", bf16),
        ("bf16/f32", bf16.kernel(Kernel::Crate)),
    ] {
        let g = g.threads(threads);
        let times = on_threads(threads, || median_secs(15, || g.run(&a, &b, &mut c)));
        println!(
            "  {label:<22} {:>5}×{:<5}×{:<5} {threads}T {what:<8} {}",
            g.m,
            g.n,
            g.k,
            rates(g.flops(), threads, times)
        );
    }
}

fn bench_attention(s: AttentionShape, threads: usize) {
    let (q, k, v, d_o) = (
        filled(s.q_len()),
        filled(s.kv_len()),
        filled(s.kv_len()),
        filled(s.q_len()),
    );
    let mut o = vec![0.0; s.q_len()];
    let mut lse = vec![0.0; s.lse_len()];
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; s.q_len()],
        vec![0.0; s.kv_len()],
        vec![0.0; s.kv_len()],
    );
    let (fwd, bwd) = on_threads(threads, || {
        let fwd = median_secs(15, || attention_forward(&s, &q, &k, &v, &mut o, &mut lse));
        let bwd = median_secs(15, || {
            attention_backward(&s, &q, &k, &v, &o, &lse, &d_o, &mut dq, &mut dk, &mut dv)
        });
        (fwd, bwd)
    });
    for (what, times, flops) in [
        ("forward", fwd, s.forward_flops()),
        ("backward", bwd, s.backward_flops()),
    ] {
        println!(
            "  attention {what:<8} {}×{} {threads}T {}",
            s.heads,
            s.head_dim,
            rates(flops, threads, times)
        );
    }
}

fn main() {
    // `cargo bench -p gsc-runtime -- matmul|attention` runs only that part.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    let clock = clock_hz();
    println!(
        "peak {:.0} GFLOP/s per core ({}, measured clock {:.2} GHz)",
        peak_per_core() / 1e9,
        if is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else {
            "AVX2"
        },
        clock / 1e9
    );
    for (name, d, heads) in [("S", 256, 4), ("M", 384, 6)] {
        println!("model {name}: d {d}, {heads} heads, {TOKENS} tokens");
        let ffn = 4 * d;
        // GSC_BENCH_THREADS=N measures only on N threads.
        let counts = match std::env::var("GSC_BENCH_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
        {
            Some(t) => vec![t],
            None => vec![1, 2],
        };
        for threads in counts {
            let shapes = [
                ("qkv  X·Wᵀ", Gemm::new(TOKENS, 3 * d, d).trans_b()),
                ("proj X·Wᵀ", Gemm::new(TOKENS, d, d).trans_b()),
                ("up   X·Wᵀ", Gemm::new(TOKENS, ffn, d).trans_b()),
                ("down X·Wᵀ", Gemm::new(TOKENS, d, ffn).trans_b()),
                ("head X·Eᵀ (vocab 256)", Gemm::new(TOKENS, 256, d).trans_b()),
                ("up   dX = dY·W", Gemm::new(TOKENS, d, ffn)),
                ("down dX = dY·W", Gemm::new(TOKENS, ffn, d)),
                (
                    "up   dW += dYᵀ·X",
                    Gemm::new(ffn, d, TOKENS).trans_a().accumulate(),
                ),
                (
                    "down dW += dYᵀ·X",
                    Gemm::new(d, ffn, TOKENS).trans_a().accumulate(),
                ),
                (
                    "qkv  dW += dYᵀ·X",
                    Gemm::new(3 * d, d, TOKENS).trans_a().accumulate(),
                ),
                (
                    "proj dW += dYᵀ·X",
                    Gemm::new(d, d, TOKENS).trans_a().accumulate(),
                ),
            ];
            if wants("matmul") {
                for (label, g) in shapes {
                    bench_gemm(label, g, threads);
                }
            }
            let s = AttentionShape {
                batch: 16,
                seq: 256,
                heads,
                kv_heads: heads,
                head_dim: d / heads,
                scale: 1.0 / ((d / heads) as f32).sqrt(),
            };
            if wants("attention") {
                bench_attention(s, threads);
            }
        }
    }
}
