//! `gsc bench`: train the reference workloads of performance.md (S and M) on
//! a CPU backend (Cranelift's or MLIR's loop kernels) for a fixed number of
//! steps after warm-up and print median ms/step, tokens/s, GFLOP/s, MFU and
//! peak RSS — one JSON line per workload,
//! the same fields as `bench/torch_bench.py`, so `bench/compare.sh` can put
//! the two side by side.

use crate::run::BackendKind;
use gsc_compiler::compile_stage;
use gsc_compiler::kernel::Storage;
use gsc_compiler::plan::Arch;
use gsc_runtime::grow::ModelState;
use gsc_runtime::machine::peak_rss_bytes;
use gsc_runtime::workloads::{train_config, workload, BATCH, CONTEXT};
use serde_json::json;
use std::time::Instant;

/// Trains one workload and returns its JSON line.
pub fn bench_one(
    name: &str,
    arch: Arch,
    backend: BackendKind,
    steps: usize,
    warmup: usize,
    peak_gflops: f64,
) -> Result<serde_json::Value, String> {
    let model = workload(name, arch).ok_or_else(|| format!("unknown workload `{name}`: S or M"))?;
    let train = train_config();
    let t0 = Instant::now();
    let compiled = compile_stage(&model, &train, BATCH).map_err(|e| e.to_string())?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let backend = backend.backend()?;
    let mut program = backend.load(&compiled.kernels).map_err(|e| e.to_string())?;
    let jit_ms = t1.elapsed().as_secs_f64() * 1e3;
    let state = ModelState::init(&model, 1);
    for (i, p) in state.params.iter().enumerate() {
        let p: Vec<f32> = p.iter().map(|&x| x as f32).collect();
        program
            .write(Storage::Param(i), &p)
            .map_err(|e| e.to_string())?;
    }
    let mut rng = gsc_compiler::init::rng::SplitMix64::new(7);
    let mut times = Vec::with_capacity(steps);
    let mut loss = 0.0;
    for step in 0..warmup + steps {
        let tokens: Vec<i32> = (0..BATCH * (CONTEXT + 1))
            .map(|_| (rng.next_u64() % 256) as i32)
            .collect();
        let (inputs, targets): (Vec<i32>, Vec<i32>) = tokens
            .chunks(CONTEXT + 1)
            .flat_map(|w| w[..CONTEXT].iter().copied().zip(w[1..].iter().copied()))
            .unzip();
        let start = Instant::now();
        program
            .write_ints(Storage::Tokens, &inputs)
            .map_err(|e| e.to_string())?;
        program
            .write_ints(Storage::Targets, &targets)
            .map_err(|e| e.to_string())?;
        program
            .write(Storage::Lr, &[train.optimizer.lr as f32])
            .map_err(|e| e.to_string())?;
        program
            .write(Storage::Step, &[(step + 1) as f32])
            .map_err(|e| e.to_string())?;
        program.run().map_err(|e| e.to_string())?;
        loss = program.read(Storage::Loss).map_err(|e| e.to_string())?[0];
        if step >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens_per_s = (BATCH * CONTEXT) as f64 / median;
    let fpt = model.flops_per_token();
    let gflops = fpt * tokens_per_s / 1e9;
    Ok(json!({
        "model": name,
        "system": match backend.name() {
            "cpu" => "gsc".to_string(),
            other => format!("gsc ({other})"),
        },
        "arch": format!("{arch:?}").to_lowercase(),
        "layers": model.layers,
        "d_model": model.d_model,
        "heads": model.heads,
        "params": model.param_count(),
        "params_non_embedding": model.non_embedding_params(),
        "flops_per_token": fpt,
        "ms_per_step": (median * 1e5).round() / 100.0,
        "ms_per_step_min": (times[0] * 1e5).round() / 100.0,
        "tokens_per_s": tokens_per_s.round(),
        "gflops": (gflops * 10.0).round() / 10.0,
        "mfu": (gflops / peak_gflops * 1e4).round() / 1e4,
        "peak_rss_mb": (peak_rss_bytes() as f64 / 1048576.0).round(),
        "compile_ms": compile_ms.round(),
        "jit_ms": jit_ms.round(),
        "kernels": compiled.kernels.kernels.len(),
        "final_loss": loss,
        "steps": steps,
        "warmup": warmup,
    }))
}

/// Runs each workload in its own process, so each peak RSS is its own.
pub fn bench(
    models: &[String],
    arch: Arch,
    backend: BackendKind,
    steps: usize,
    warmup: usize,
    peak_gflops: f64,
    single: bool,
) -> bool {
    if single {
        return match bench_one(&models[0], arch, backend, steps, warmup, peak_gflops) {
            Ok(line) => {
                println!("{line}");
                true
            }
            Err(e) => {
                eprintln!("error: {e}");
                false
            }
        };
    }
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("error: cannot find the gsc executable to run each workload");
        return false;
    };
    let arch_name = format!("{arch:?}").to_lowercase();
    models.iter().all(|m| {
        let status = std::process::Command::new(&exe)
            .args([
                "bench",
                "--single",
                "--arch",
                &arch_name,
                "--backend",
                &backend.name(),
                "--steps",
                &steps.to_string(),
                "--warmup",
                &warmup.to_string(),
            ])
            .args(["--peak-gflops", &peak_gflops.to_string(), m])
            .status();
        matches!(status, Ok(s) if s.success())
    })
}
