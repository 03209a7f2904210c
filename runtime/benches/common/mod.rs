//! Shared by the step benches: a step program's buffers filled as a
//! training step would find them.

use gsc_compiler::kernel::{BufId, DType, KernelProgram, Storage};
use gsc_runtime::buffers::ProgramBuffers;
use gsc_runtime::rng::SplitMix64;

/// Buffers for `p`: small random parameters, random tokens below `vocab`,
/// learning rate 1e-3, everything else zero.
pub fn random_buffers(p: &KernelProgram, vocab: usize) -> ProgramBuffers {
    let mut bufs = ProgramBuffers::new(p).expect("buffers");
    let mut rng = SplitMix64::new(1);
    for (i, b) in p.buffers.iter().enumerate() {
        match (b.storage, b.dtype) {
            (Storage::Param(_), DType::F32) => {
                for x in bufs.f32_mut(BufId(i)).expect("f32").iter_mut() {
                    *x = rng.symmetric_f32() * 0.05;
                }
            }
            (Storage::Tokens | Storage::Targets, DType::I32) => {
                for x in bufs.i32_mut(BufId(i)).expect("i32").iter_mut() {
                    *x = rng.below(vocab as u64) as i32;
                }
            }
            _ => {}
        }
    }
    bufs.set_lr(1e-3).expect("lr");
    bufs
}
