//! Fingerprints the compiler's sources, so that a kernel artifact compiled by
//! one build of the compiler is never reused by another that may lower the
//! same plan differently (see `gsc_compiler::VERSION`).

#[path = "src/fnv.rs"]
mod fnv;

fn main() {
    let h = fnv::sources("src");
    println!("cargo:rustc-env=GSC_COMPILER_FINGERPRINT={h}");
}
