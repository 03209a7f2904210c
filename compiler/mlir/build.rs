//! Records the version of the LLVM/MLIR that gsc-mlir links (the one
//! mlir-sys finds through `MLIR_SYS_220_PREFIX`), to key stored PTX by it.

fn main() {
    println!("cargo:rerun-if-env-changed=MLIR_SYS_220_PREFIX");
    let prefix = std::env::var("MLIR_SYS_220_PREFIX").unwrap_or_else(|_| "/usr/lib/llvm-22".into());
    let version = std::process::Command::new(format!("{prefix}/bin/llvm-config"))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "22".into());
    println!("cargo:rustc-env=GSC_LLVM_VERSION={version}");
}
