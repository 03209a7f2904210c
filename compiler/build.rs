//! Fingerprints the compiler's sources, so that a kernel artifact compiled by
//! one build of the compiler is never reused by another that may lower the
//! same plan differently (see `gsc_compiler::VERSION`).

#[path = "src/fnv.rs"]
mod fnv;

fn main() {
    // The kernel IR crate decides the arena plan and what backends see.
    let h = fnv::hash_parts([
        fnv::sources("src").as_bytes(),
        fnv::sources("kernel-ir/src").as_bytes(),
    ]);
    println!("cargo:rustc-env=GSC_COMPILER_FINGERPRINT={h}");
}
