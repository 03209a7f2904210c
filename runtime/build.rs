//! Fingerprints the runtime's sources (see `gsc_runtime::VERSION`): the same
//! kernels lowered by two builds of the JIT may round differently.

#[path = "../compiler/src/fnv.rs"]
mod fnv;

fn main() {
    let h = fnv::sources("src");
    println!("cargo:rustc-env=GSC_RUNTIME_FINGERPRINT={h}");
}
