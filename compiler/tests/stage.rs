//! compile_stage on real sizes, the graph's interface, the buffer plan and
//! the kernel IR's serialisation.

mod common;
use common::*;
use gsc_compiler::graph::{Input, Op};
use gsc_compiler::kernel::{KernelProgram, Storage};
use gsc_compiler::plan::*;
use gsc_compiler::*;

/// performance.md's model S.
fn model_s(arch: Arch) -> ModelConfig {
    ModelConfig {
        vocab: 256,
        context: 256,
        d_model: 256,
        heads: 4,
        kv_heads: 4,
        head_dim: 64,
        layers: 4,
        ffn: 1024,
        ..tiny(arch, NormKind::RmsNorm, Activation::Gelu, true)
    }
}

#[test]
fn compiles_model_s_of_both_architectures() {
    for arch in [Arch::Gpt, Arch::Ngpt] {
        let t = std::time::Instant::now();
        let s = compile_stage(&model_s(arch), &train(Some(1.0)), 16).expect("model S compiles");
        eprintln!(
            "{arch:?}: {} kernels, peak {} bytes (arena {}), compiled in {:?}",
            s.kernels.kernels.len(),
            s.kernels.peak_bytes(),
            s.kernels.arena_len * 4,
            t.elapsed()
        );
        check_plan(&s.kernels);
    }
}

/// Arena buffers whose lifetimes overlap never share memory.
fn check_plan(p: &KernelProgram) {
    gsc_compiler::kernel::validate(p).expect("compiled programs are well formed");
    let mut span = vec![None; p.buffers.len()];
    for (i, k) in p.kernels.iter().enumerate() {
        for b in k.reads().into_iter().chain(k.writes()) {
            let s: &mut Option<(usize, usize)> = &mut span[b.0];
            *s = Some(s.map_or((i, i), |(f, _)| (f, i)));
        }
    }
    for (a, ba) in p.buffers.iter().enumerate() {
        for (b, bb) in p.buffers.iter().enumerate().skip(a + 1) {
            let (Storage::Arena { offset: oa }, Storage::Arena { offset: ob }) =
                (ba.storage, bb.storage)
            else {
                continue;
            };
            let (Some((fa, la)), Some((fb, lb))) = (span[a], span[b]) else {
                continue;
            };
            let time = fa <= lb && fb <= la;
            let space = oa < ob + bb.len && ob < oa + ba.len;
            assert!(!(time && space), "{} and {} overlap", ba.name, bb.name);
            assert!(oa + ba.len <= p.arena_len && ob + bb.len <= p.arena_len);
        }
    }
}

#[test]
fn parameter_inputs_are_the_plan_params_in_order() {
    for cfg in [
        tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Swiglu, false),
        tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false),
    ] {
        let s = compile_stage(&cfg, &train(None), 2).unwrap();
        let specs = cfg.params();
        let inputs: Vec<usize> = s
            .forward
            .nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Input(Input::Param(i)) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(inputs, (0..specs.len()).collect::<Vec<_>>());
        for (i, spec) in specs.iter().enumerate() {
            let t = s.forward.input(Input::Param(i)).unwrap();
            assert_eq!(s.forward.shape(t), spec.shape.as_slice());
            assert_eq!(s.forward.params[i].name, spec.name);
            let b = s.kernels.buffer(Storage::Param(i)).unwrap();
            assert_eq!(s.kernels.buffers[b.0].len, spec.numel());
            assert!(s.kernels.buffer(Storage::Grad(i)).is_some());
            assert!(s.kernels.buffer(Storage::AdamM(i)).is_some());
        }
        check_plan(&s.kernels);
        check_plan(&s.forward_kernels);
    }
}

#[test]
fn kernel_ir_round_trips_through_json() {
    let s = compile_stage(
        &tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false),
        &train(Some(1.0)),
        2,
    )
    .unwrap();
    let json = serde_json::to_string(&s.kernels).unwrap();
    let back: KernelProgram = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s.kernels);
}

#[test]
fn invalid_models_are_errors_not_panics() {
    let mut cfg = tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true);
    cfg.kv_heads = 3;
    assert!(compile_stage(&cfg, &train(None), 2).is_err());
    let mut cfg = tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Gelu, true);
    cfg.head_dim = 3;
    assert!(compile_stage(&cfg, &train(None), 2).is_err());
    let cfg = tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true);
    assert!(compile_stage(&cfg, &train(None), 0).is_err());
}

#[test]
fn validation_rejects_damaged_programs() {
    use gsc_compiler::kernel::{validate, BufId, Kernel};
    let s = compile_stage(
        &tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true),
        &train(None),
        2,
    )
    .unwrap();
    let mut bad = s.kernels.clone();
    let missing = BufId(bad.buffers.len());
    for k in &mut bad.kernels {
        if let Kernel::MatMul { b, .. } = k {
            *b = missing;
            break;
        }
    }
    assert!(validate(&bad).is_err());
    let mut bad = s.kernels.clone();
    if let Some(Kernel::Loop(l)) = bad.kernels.first_mut() {
        l.num_vars = 0;
    }
    assert!(validate(&bad).is_err());
    let mut bad = s.kernels;
    bad.arena_len = 1;
    assert!(validate(&bad).is_err());
}
