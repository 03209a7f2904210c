//! The CUDA backend's command line (feature `cuda`) where there is no GPU:
//! every path that needs the device ends in an error naming what is
//! missing, never a panic, before a run directory is created.

#![cfg(feature = "cuda")]

use std::process::Command;

/// Whether this machine has an NVIDIA driver (then these tests do not apply).
fn has_driver() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
        || std::path::Path::new("/proc/driver/nvidia").exists()
}

#[test]
fn without_a_driver_every_gpu_path_is_a_clear_error() {
    if has_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let runs = std::env::temp_dir().join(format!("gsc-cuda-cli-{}", std::process::id()));
    for args in [
        &[
            "run",
            "examples/smoke.gs",
            "--backend",
            "cuda",
            "--runs-dir",
        ][..],
        &[
            "bench",
            "S",
            "--backend",
            "cuda",
            "--single",
            "--steps",
            "1",
        ],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_gsc"))
            .args(args)
            .args(args.contains(&"--runs-dir").then_some(&runs))
            .output()
            .expect("gsc runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("no CUDA driver"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&runs);
}
