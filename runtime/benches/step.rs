//! Whole training steps of model S (gpt: 4 layers, d_model 256, 4 heads,
//! ffn 1024, ctx 256, batch 16, vocab 256) on the CPU backend: JIT compile
//! time, ms per step, tokens/s, MFU, and where the time goes by kernel kind
//! and by loop kernel. `cargo bench -p gsc-runtime --bench step`.
//!
//! Environment: `GSC_BENCH_ARCH=ngpt` for nGPT, `GSC_BENCH_NORM=rms` for
//! RMSNorm (default LayerNorm, the GPT-2-style PyTorch peer's),
//! `GSC_BENCH_STEPS` timed steps (default 10), `GSC_BENCH_LAYERS`,
//! `GSC_BENCH_D` to change the size (`GSC_BENCH_D=384 GSC_BENCH_LAYERS=6`
//! is M), `GSC_BENCH_LOOPS=mlir` (built with `--features mlir`) for MLIR's
//! loop kernels, `GSC_BENCH_SHOW=k12,k40` to print
//! kernels' IR, `GSC_BENCH_TOP=N` to list the N slowest kernels. Per-kernel
//! wall times include waits for a core another process holds; `bench/profile.sh`
//! gives on-CPU shares instead.

mod common;

use gsc_compiler::kernel::Kernel;
use gsc_compiler::plan::*;
use gsc_runtime::cpu::{CpuBackend, KernelKind};
use std::time::Instant;

/// Both cores of the reference machine (performance.md).
const PEAK_FLOPS: f64 = 548e9;

/// Floating-point operations of a product kernel (2·batch·m·n·k); 0 for others.
fn matmul_flops(k: &Kernel) -> f64 {
    match k {
        Kernel::MatMul { batch, m, n, k, .. } => 2.0 * (batch * m * n * k) as f64,
        _ => 0.0,
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let ngpt = std::env::var("GSC_BENCH_ARCH").is_ok_and(|v| v == "ngpt");
    let rms = std::env::var("GSC_BENCH_NORM").is_ok_and(|v| v == "rms");
    let d_model: usize = env_or("GSC_BENCH_D", 256);
    let base = gsc_runtime::workloads::workload("S", if ngpt { Arch::Ngpt } else { Arch::Gpt })
        .expect("S is a workload");
    let model = ModelConfig {
        d_model,
        heads: d_model / 64,
        kv_heads: d_model / 64,
        head_dim: 64,
        layers: env_or("GSC_BENCH_LAYERS", 4),
        ffn: 4 * d_model,
        activation: if ngpt {
            Activation::Swiglu
        } else {
            Activation::Gelu
        },
        norm: if rms {
            NormKind::RmsNorm
        } else {
            NormKind::LayerNorm
        },
        ..base
    };
    let batch = 16;
    let train = gsc_runtime::workloads::train_config();
    let t = Instant::now();
    let stage = match gsc_compiler::compile_stage(&model, &train, batch) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("compile_stage: {e}");
            std::process::exit(1);
        }
    };
    let lower_time = t.elapsed();
    let p = &stage.kernels;
    // GSC_BENCH_LOOPS=mlir (in a build with the feature): MLIR's loop
    // kernels, which a long `gsc run` stage switches to.
    #[cfg(feature = "mlir")]
    let built = if std::env::var("GSC_BENCH_LOOPS").is_ok_and(|v| v == "mlir") {
        CpuBackend::with_code(p, gsc_runtime::cpu::mlir::MlirLoops::codegen)
    } else {
        CpuBackend::new(p)
    };
    #[cfg(not(feature = "mlir"))]
    let built = CpuBackend::new(p);
    let mut backend = match built {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let count = |kind| {
        p.kernels
            .iter()
            .filter(|k| KernelKind::of(k) == kind)
            .count()
    };
    println!(
        "model {:?} {:?} layers {} d {} heads {} ffn {} ctx {} batch {} vocab {}: {:.2} M params, {:.1} MFLOP/token",
        model.arch,
        model.norm,
        model.layers,
        model.d_model,
        model.heads,
        model.ffn,
        model.context,
        batch,
        model.vocab,
        model.param_count() as f64 / 1e6,
        model.flops_per_token() / 1e6
    );
    println!(
        "{} kernels ({} loops, {} matmuls), arena {:.1} MiB; graph→kernels {:.1} ms, JIT compile {:.1} ms",
        p.kernels.len(),
        count(KernelKind::Loop),
        count(KernelKind::MatMul),
        p.arena_len as f64 * 4.0 / (1 << 20) as f64,
        lower_time.as_secs_f64() * 1e3,
        backend.compile_time().as_secs_f64() * 1e3
    );

    let mut bufs = common::random_buffers(p, model.vocab);
    // The machine is shared: a standalone product of the step's largest
    // shape says what GEMM reaches right now, beside the step's numbers.
    {
        let (m, n, k) = (batch * model.context, model.ffn, model.d_model);
        let (a, b, mut c) = (vec![0.5f32; m * k], vec![0.25f32; k * n], vec![0f32; m * n]);
        let g = gsc_runtime::cpu::matmul::Gemm::new(m, n, k).trans_b();
        g.run(&a, &b, &mut c);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            g.run(&a, &b, &mut c);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "standalone gemm {m}×{n}×{k}: {:.0} GFLOP/s now",
            g.flops() / best / 1e9
        );
    }
    let steps: usize = env_or("GSC_BENCH_STEPS", 10);
    let mut times = vec![];
    for step in 0..steps + 2 {
        bufs.set_step(step as f32 + 1.0).expect("step");
        if step == 2 {
            backend.reset_profile();
        }
        let t = Instant::now();
        if let Err(e) = backend.execute(&mut bufs) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        if step >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (batch * model.context) as f64;
    let tps = tokens / median;
    println!(
        "step: median {:.1} ms (min {:.1}, max {:.1}) over {steps} steps, {:.0} tokens/s, MFU {:.1} %, loss {:.4}",
        median * 1e3,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        tps,
        100.0 * tps * model.flops_per_token() / PEAK_FLOPS,
        bufs.loss().unwrap_or(f32::NAN)
    );
    let prof = backend.profile();
    let runs = prof.runs.max(1) as f64;
    let total: f64 = prof.per_kernel.iter().map(|d| d.as_secs_f64()).sum::<f64>() / runs;
    println!(
        "per kind (mean per step; loop kernels by {}):",
        backend.loop_code()
    );
    let product_flops: f64 = p.kernels.iter().map(matmul_flops).sum();
    for (kind, d) in prof.per_kind(p) {
        let ms = d.as_secs_f64() / runs * 1e3;
        let rate = if kind == KernelKind::MatMul {
            format!(", {:.0} GFLOP/s", product_flops / (ms / 1e3) / 1e9)
        } else {
            String::new()
        };
        println!(
            "  {:<14} {:>8.2} ms {:>5.1} %{rate}",
            kind.name(),
            ms,
            100.0 * ms / 1e3 / total
        );
    }
    let mut all: Vec<(f64, usize)> = (0..p.kernels.len())
        .map(|i| (prof.per_kernel[i].as_secs_f64() / runs * 1e3, i))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("slowest kernels:");
    for (ms, i) in all.iter().take(env_or("GSC_BENCH_TOP", 8)) {
        let kernel = &p.kernels[*i];
        let what = match kernel {
            Kernel::MatMul {
                m,
                n,
                k,
                ta,
                tb,
                batch,
                ..
            } => {
                let gf = matmul_flops(kernel) / (ms / 1e3) / 1e9;
                format!("matmul {batch}×{m}×{n}×{k} ta={ta} tb={tb}: {gf:.0} GFLOP/s")
            }
            k => k.name().to_string(),
        };
        println!("  k{i:<4} {ms:>7.3} ms  {what}");
    }
    // GSC_BENCH_SHOW=k12,k40: print those kernels' IR.
    if let Ok(show) = std::env::var("GSC_BENCH_SHOW") {
        for name in show.split(',') {
            if let Some(k) = name
                .trim_start_matches('k')
                .parse::<usize>()
                .ok()
                .and_then(|i| p.kernels.get(i))
            {
                println!("{}", gsc_compiler::kernel::render_kernel(k));
            }
        }
    }
    let mut loops: Vec<(f64, usize)> = p
        .kernels
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, Kernel::Loop(_)))
        .map(|(i, _)| (prof.per_kernel[i].as_secs_f64() / runs * 1e3, i))
        .collect();
    loops.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("slowest loop kernels:");
    for (ms, i) in loops.iter().take(12) {
        println!("  k{i:<4} {ms:>7.3} ms  {}", p.kernels[*i].name());
    }
}
