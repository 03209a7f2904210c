//! `gsc bench`: train the reference workloads of performance.md (S and M) on
//! a CPU backend (Cranelift's or MLIR's loop kernels) for a fixed number of
//! steps after warm-up and print median ms/step, tokens/s, GFLOP/s, MFU and
//! peak RSS — one JSON line per workload,
//! the same fields as `bench/torch_bench.py`, so `bench/compare.sh` can put
//! the two side by side.

use crate::run::BackendKind;
use gsc_compiler::compile_stage;
use gsc_compiler::kernel::Storage;
use gsc_compiler::plan::{Arch, Precision, TrainConfig};
use gsc_runtime::cpu::isa::Isa;
use gsc_runtime::grow::ModelState;
use gsc_runtime::machine::{compute_threads, peak_rss_bytes, Machine};
use gsc_runtime::run::train::Switch;
use gsc_runtime::workloads::{batch_of, train_config, workload, WORKLOADS};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to bench: the options of `gsc bench` but the workloads.
#[derive(Clone, Debug)]
pub struct BenchArgs {
    pub arch: Arch,
    pub backend: BackendKind,
    pub precision: Precision,
    pub steps: usize,
    pub warmup: usize,
    pub peak_gflops: f64,
    /// A folder of PTX files for the GPU (see `gsc_runtime::cuda::ptx`).
    pub ptx: Option<PathBuf>,
}

/// Trains one workload and returns its JSON line.
pub fn bench_one(name: &str, args: &BenchArgs) -> Result<serde_json::Value, String> {
    let BenchArgs {
        arch,
        backend,
        precision,
        steps,
        warmup,
        peak_gflops,
        ..
    } = args.clone();
    let (model, batch) = workload_named(name, arch)?;
    let context = model.context;
    let train = TrainConfig {
        precision,
        ..train_config()
    };
    let t0 = Instant::now();
    let compiled = compile_stage(&model, &train, batch).map_err(|e| e.to_string())?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let ptx = match &args.ptx {
        Some(dir) => gsc_runtime::cuda::ptx::load_dir(dir)?,
        None => vec![],
    };
    let backend = backend.backend(ptx)?;
    let mut program = backend.load(&compiled.kernels).map_err(|e| e.to_string())?;
    let jit_ms = t1.elapsed().as_secs_f64() * 1e3;
    // A long `gsc run` switches to the faster code compiled beside the
    // first (MLIR's loop kernels where gsc is built with MLIR); the bench
    // measures the code such a run trains with.
    let t2 = Instant::now();
    if Switch::from_env() != Switch::Never && program.compile_beside() {
        program.switch_code().map_err(|e| e.to_string())?;
    }
    let switch_ms = t2.elapsed().as_secs_f64() * 1e3;
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
        let tokens: Vec<i32> = (0..batch * (context + 1))
            .map(|_| (rng.next_u64() % model.vocab as u64) as i32)
            .collect();
        let (inputs, targets): (Vec<i32>, Vec<i32>) = tokens
            .chunks(context + 1)
            .flat_map(|w| w[..context].iter().copied().zip(w[1..].iter().copied()))
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
    let tokens_per_s = (batch * context) as f64 / median;
    let fpt = model.flops_per_token();
    let gflops = fpt * tokens_per_s / 1e9;
    let peak_rss_mb = (peak_rss_bytes() as f64 / 1048576.0).round();
    // Measured after the steps, so that its buffers are not in their peak.
    let gemm_gflops = gsc_runtime::cpu::matmul::measured_peak_gflops();
    Ok(json!({
        "cpu": Machine::describe().cpu,
        "isa": Isa::get().name(),
        "threads": compute_threads(),
        "gemm_peak_gflops": gemm_gflops.round(),
        "model": name,
        "system": match backend.name() {
            "cpu" => "gsc".to_string(),
            other => format!("gsc ({other})"),
        },
        "arch": format!("{arch:?}").to_lowercase(),
        "precision": precision.name(),
        "layers": model.layers,
        "d_model": model.d_model,
        "heads": model.heads,
        "context": context,
        "batch": batch,
        "params": model.param_count(),
        "params_non_embedding": model.non_embedding_params(),
        "flops_per_token": fpt,
        "ms_per_step": (median * 1e5).round() / 100.0,
        "ms_per_step_min": (times[0] * 1e5).round() / 100.0,
        "tokens_per_s": tokens_per_s.round(),
        "gflops": (gflops * 10.0).round() / 10.0,
        "mfu": (gflops / peak_gflops * 1e4).round() / 1e4,
        "of_gemm_peak": (gflops / gemm_gflops * 1e4).round() / 1e4,
        "peak_rss_mb": peak_rss_mb,
        "compile_ms": compile_ms.round(),
        "jit_ms": jit_ms.round(),
        "loop_code": program.code(),
        "switch_ms": switch_ms.round(),
        "kernels": compiled.kernels.kernels.len(),
        "final_loss": loss,
        "steps": steps,
        "warmup": warmup,
    }))
}

/// The workload `name` and its batch, or an error naming the choices.
fn workload_named(
    name: &str,
    arch: Arch,
) -> Result<(gsc_compiler::plan::ModelConfig, usize), String> {
    let model = workload(name, arch)
        .ok_or_else(|| format!("unknown workload `{name}`: {}", WORKLOADS.join(", ")))?;
    Ok((model, batch_of(name)))
}

/// Writes the PTX of each workload's training step for `chips` into `dir`,
/// for a GPU bench by a gsc without MLIR (`--ptx DIR`); false after
/// printing an error.
pub fn emit_ptx(models: &[String], arch: Arch, dir: &Path, chips: &[String]) -> bool {
    let result = models.iter().try_for_each(|name| {
        let (model, batch) = workload_named(name, arch)?;
        let compiled = compile_stage(&model, &train_config(), batch).map_err(|e| e.to_string())?;
        crate::mlir::save_ptx(&compiled.kernels, name, chips, dir)
    });
    match result {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// Runs each workload in its own process, so each peak RSS is its own.
pub fn bench(models: &[String], args: &BenchArgs, single: bool) -> bool {
    let BenchArgs {
        arch,
        backend,
        steps,
        warmup,
        peak_gflops,
        ..
    } = args.clone();
    if single {
        return match bench_one(&models[0], args) {
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
                "--precision",
                args.precision.name(),
                "--steps",
                &steps.to_string(),
                "--warmup",
                &warmup.to_string(),
            ])
            .args(["--peak-gflops", &peak_gflops.to_string()])
            .args(
                args.ptx
                    .iter()
                    .flat_map(|p| [std::ffi::OsStr::new("--ptx"), p.as_os_str()]),
            )
            .arg(m)
            .status();
        matches!(status, Ok(s) if s.success())
    })
}
