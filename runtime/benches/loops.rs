//! Cranelift against MLIR on every loop kernel of a training step, measured
//! in one process: the same step program of model S (gpt or nGPT) runs on
//! two CPU executors that differ only in who compiled their loop kernels,
//! alternating step by step, and the per-kernel wall times are summed by
//! kernel name. Library kernels (matmul, attention) are the same code in
//! both and are left out. `cargo bench -p gsc-runtime --features mlir
//! --bench loops`; `GSC_BENCH_ARCH=ngpt`, `GSC_BENCH_STEPS` (default 8).

mod common;

use gsc_compiler::kernel::Kernel;
use gsc_compiler::plan::*;
use gsc_runtime::cpu::mlir::MlirLoops;
use gsc_runtime::cpu::CpuBackend;
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let arch = match std::env::var("GSC_BENCH_ARCH").as_deref() {
        Ok("ngpt") => Arch::Ngpt,
        _ => Arch::Gpt,
    };
    let model = gsc_runtime::workloads::workload("S", arch).expect("S is a workload");
    let train = gsc_runtime::workloads::train_config();
    let stage = gsc_compiler::compile_stage(&model, &train, 16).expect("S compiles");
    let p = &stage.kernels;
    let mut cranelift = CpuBackend::new(p).expect("cranelift");
    let mut mlir = CpuBackend::with_code(p, MlirLoops::codegen).expect("mlir");
    println!(
        "model S {arch:?}: {} loop kernels; compile: cranelift {:.0} ms, mlir {:.0} ms",
        p.kernels
            .iter()
            .filter(|k| matches!(k, Kernel::Loop(_)))
            .count(),
        cranelift.compile_time().as_secs_f64() * 1e3,
        mlir.compile_time().as_secs_f64() * 1e3
    );
    // Where MLIR's compile time goes, phase by phase.
    let code = gsc_mlir::compile_cpu(p).expect("mlir");
    let phases: Vec<String> = code
        .timings
        .0
        .iter()
        .map(|(name, t)| format!("{name} {:.0} ms", t.as_secs_f64() * 1e3))
        .collect();
    println!("mlir phases: {}", phases.join(", "));
    let mut bufs = [
        common::random_buffers(p, model.vocab),
        common::random_buffers(p, model.vocab),
    ];
    let steps: usize = std::env::var("GSC_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mut step_ms = [vec![], vec![]];
    for step in 0..steps + 1 {
        for (i, backend) in [&mut cranelift, &mut mlir].into_iter().enumerate() {
            if step == 1 {
                backend.reset_profile();
            }
            bufs[i].set_step(step as f32 + 1.0).expect("step");
            let t = Instant::now();
            backend.execute(&mut bufs[i]).expect("runs");
            if step >= 1 {
                step_ms[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let loss: Vec<f32> = bufs.iter().map(|b| b.loss().unwrap_or(f32::NAN)).collect();
    // Per kernel name: (cranelift ms, mlir ms, count), per step.
    let mut by_name: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for (i, k) in p.kernels.iter().enumerate() {
        let Kernel::Loop(l) = k else { continue };
        let e = by_name.entry(l.name.clone()).or_default();
        e.0 += cranelift.profile().per_kernel[i].as_secs_f64() * 1e3 / steps as f64;
        e.1 += mlir.profile().per_kernel[i].as_secs_f64() * 1e3 / steps as f64;
        e.2 += 1;
    }
    let mut rows: Vec<_> = by_name.into_iter().collect();
    rows.sort_by(|a, b| (b.1 .0 + b.1 .1).total_cmp(&(a.1 .0 + a.1 .1)));
    println!(
        "{:<44} {:>3} {:>10} {:>10} {:>8}",
        "loop kernel (ms per step)", "n", "cranelift", "mlir", "mlir ×"
    );
    let (mut tc, mut tm) = (0.0, 0.0);
    for (name, (c, m, n)) in &rows {
        tc += c;
        tm += m;
        println!("{name:<44} {n:>3} {c:>10.2} {m:>10.2} {:>8.2}", c / m);
    }
    println!(
        "{:<44} {:>3} {tc:>10.2} {tm:>10.2} {:>8.2}",
        "all loop kernels",
        "",
        tc / tm
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (sc, sm) = (median(&mut step_ms[0]), median(&mut step_ms[1]));
    println!(
        "whole step (median of {steps}): cranelift {sc:.1} ms, mlir {sm:.1} ms ({:.2}×); loss {} vs {}",
        sc / sm,
        loss[0],
        loss[1]
    );
}
