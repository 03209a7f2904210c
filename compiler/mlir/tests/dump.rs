//! `GSC_MLIR_DUMP=DIR` writes the module before and after every phase, the
//! pipeline in the first line, and `mlir-opt` replays a phase from them.
//! (Its own test binary: the variable is read by every compilation of the
//! process.)

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{tiny, train};
use gsc_compiler::plan::{Activation, Arch, NormKind};

#[test]
fn every_phase_is_dumped_and_replays_with_mlir_opt() {
    let dir = std::env::temp_dir().join(format!("gsc-mlir-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("GSC_MLIR_DUMP", &dir);
    let model = tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true);
    let stage = gsc_compiler::compile_stage(&model, &train(Some(1.0)), 2).expect("compiles");
    gsc_mlir::compile_cpu(&stage.forward_kernels).expect("lowers for the host");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the dump directory exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // One set per compile thread (`partK-` when the machine has several).
    let part = names
        .first()
        .and_then(|n| n.split_once("01-parse"))
        .map(|(p, _)| p.to_string())
        .expect("a parse dump");
    let phases = [
        "01-parse.before.mlir",
        "02-canonicalize.after.mlir",
        "02-canonicalize.before.mlir",
        "03-lower-to-llvm.after.mlir",
        "03-lower-to-llvm.before.mlir",
    ];
    let parts = names.len() / phases.len();
    assert!(
        parts >= 1 && names.len() == parts * phases.len(),
        "{names:?}"
    );
    for p in 0..parts {
        let prefix = if parts == 1 {
            String::new()
        } else {
            format!("part{p}-")
        };
        for ph in phases {
            assert!(
                names.contains(&format!("{prefix}{ph}")),
                "{prefix}{ph} in {names:?}"
            );
        }
    }
    let before =
        std::fs::read_to_string(dir.join(format!("{part}03-lower-to-llvm.before.mlir"))).unwrap();
    let pipeline = before
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("// pipeline: "))
        .expect("the pipeline heads the file");
    assert!(pipeline.contains("finalize-memref-to-llvm"), "{pipeline}");
    let mlir_opt = std::path::Path::new("/usr/lib/llvm-22/bin/mlir-opt");
    if mlir_opt.exists() {
        let out = std::process::Command::new(mlir_opt)
            .arg(format!("--pass-pipeline={pipeline}"))
            .arg(dir.join(format!("{part}03-lower-to-llvm.before.mlir")))
            .output()
            .expect("mlir-opt runs");
        assert!(
            out.status.success(),
            "mlir-opt replays the phase: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("llvm.func"));
    } else {
        eprintln!("mlir-opt not installed (mlir-22-tools): the replay is not checked");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
