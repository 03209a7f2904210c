//! Library kernels written as loop kernels (`gsc_kernel_ir::library`, what
//! the PTX carries for the embedding gradient) compute what the library
//! kernel computes: the interpreter runs both, and with the `mlir` feature
//! the MLIR backend runs the loop form through the same MLIR lowering the
//! GPU code takes.

use gsc_compiler::kernel::library::embedding_bwd_as_loops;
use gsc_compiler::kernel::*;
use gsc_runtime::backend::Backend;
use gsc_runtime::interp::InterpBackend;

fn embedding_bwd_program(tokens: usize, vocab: usize, dim: usize) -> KernelProgram {
    let buffer = |name: &str, dtype, len, storage| Buffer {
        name: String::from(name),
        dtype,
        len,
        storage,
    };
    KernelProgram {
        buffers: vec![
            buffer("ids", DType::I32, tokens, Storage::Tokens),
            buffer("dy", DType::F32, tokens * dim, Storage::Param(0)),
            buffer("out", DType::F32, vocab * dim, Storage::Grad(0)),
        ],
        kernels: vec![Kernel::EmbeddingBwd {
            ids: BufId(0),
            dy: BufId(1),
            out: BufId(2),
            vocab,
            dim,
        }],
        arena_len: 0,
    }
}

fn run(backend: &dyn Backend, p: &KernelProgram, ids: &[i32], dy: &[f32]) -> Vec<f32> {
    let mut prog = backend.load(p).unwrap_or_else(|e| panic!("{e}"));
    prog.write_ints(Storage::Tokens, ids).unwrap();
    prog.write(Storage::Param(0), dy).unwrap();
    prog.run().unwrap();
    prog.read(Storage::Grad(0)).unwrap()
}

fn check(backend: &dyn Backend) {
    // Repeated ids (rows summed), unused rows (zero), odd sizes.
    for (tokens, vocab, dim) in [(37, 11, 5), (8, 3, 16), (1, 1, 1)] {
        let p = embedding_bwd_program(tokens, vocab, dim);
        let looped = embedding_bwd_as_loops(&p);
        assert!(matches!(looped.kernels[0], Kernel::Loop(_)));
        let ids: Vec<i32> = (0..tokens)
            .map(|n| ((n * 7) % vocab.max(1)) as i32)
            .collect();
        let dy: Vec<f32> = (0..tokens * dim).map(|i| (i % 13) as f32 - 6.0).collect();
        let want = run(&InterpBackend::<f64>::default(), &p, &ids, &dy);
        let got = run(backend, &looped, &ids, &dy);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{} {tokens}×{vocab}×{dim} element {i}: {g} against {w}",
                backend.name()
            );
        }
    }
}

#[test]
fn the_embedding_gradient_as_a_loop_matches_the_library_kernel() {
    check(&InterpBackend::<f64>::default());
}

#[cfg(feature = "mlir")]
#[test]
fn the_embedding_gradient_loop_through_mlir_matches() {
    check(&gsc_runtime::backend::Mlir);
}
