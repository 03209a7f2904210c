//! `gsc compile --emit=mlir|ptx` (a stage's loop kernels through MLIR) and
//! the PTX of `--emit=artifact --target cuda`.
//! Without the `mlir` feature, a clear error says how to get it.

use crate::cli::Target;
use gsc_compiler::kernel::KernelProgram;
use gsc_runtime::run::artifact::Artifact;
#[cfg(feature = "mlir")]
use gsc_runtime::run::artifact::PtxProgram;
use std::path::Path;

/// Prints the MLIR (or PTX) of `program`; false after printing an error.
#[cfg(feature = "mlir")]
pub fn print(program: &KernelProgram, ptx: bool, target: Target, chip: &str, header: &str) -> bool {
    let result = if ptx {
        gsc_mlir::CudaOptions::for_chip(chip)
            .and_then(|o| gsc_mlir::compile_ptx(program, &o))
            .map(|m| {
                let timings: Vec<String> = m
                    .timings
                    .0
                    .iter()
                    .map(|(p, t)| format!("{p} {:.0} ms", t.as_secs_f64() * 1e3))
                    .collect();
                format!(
                    "// {header}: {} kernels for {} ({})\n{}",
                    m.entries.len(),
                    m.chip,
                    timings.join(", "),
                    m.ptx
                )
            })
    } else {
        let t = match target {
            Target::Cpu => gsc_mlir::Target::Cpu,
            Target::Cuda => gsc_mlir::Target::Cuda,
        };
        gsc_mlir::kernel_mlir(program, t).map(|text| format!("// {header}\n{text}"))
    };
    match result {
        Ok(text) => {
            print!("{text}");
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// Adds PTX for `chips` to every stage of `artifact`; false after printing an error.
#[cfg(feature = "mlir")]
pub fn add_ptx(artifact: &mut Artifact, chips: &[String]) -> bool {
    match artifact.add_ptx(chips) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// Writes the PTX of `program` (named `name`) for each of `chips` into `dir`.
#[cfg(feature = "mlir")]
pub fn save_ptx(
    program: &KernelProgram,
    name: &str,
    chips: &[String],
    dir: &Path,
) -> Result<(), String> {
    for chip in chips {
        let options = gsc_mlir::CudaOptions::for_chip(chip).map_err(|e| e.to_string())?;
        let ptx = PtxProgram::compile(program, name, &options)
            .map_err(|e| format!("{name} for {chip}: {e}"))?;
        gsc_runtime::cuda::ptx::save(dir, &ptx)?;
    }
    Ok(())
}

#[cfg(not(feature = "mlir"))]
pub fn save_ptx(_: &KernelProgram, _: &str, _: &[String], _: &Path) -> Result<(), String> {
    Err(WITHOUT_MLIR.into())
}

#[cfg(not(feature = "mlir"))]
pub fn add_ptx(_: &mut Artifact, _: &[String]) -> bool {
    without_mlir()
}

#[cfg(not(feature = "mlir"))]
pub const WITHOUT_MLIR: &str =
    "this gsc was built without MLIR; build it with `cargo build --release \
     --features mlir` (needs LLVM/MLIR 22: see the README's set-up)";

#[cfg(not(feature = "mlir"))]
fn without_mlir() -> bool {
    eprintln!("error: {WITHOUT_MLIR}");
    false
}

#[cfg(not(feature = "mlir"))]
pub fn print(_: &KernelProgram, _: bool, _: Target, _: &str, _: &str) -> bool {
    without_mlir()
}
