//! Whole-model gradients from the compiled backward (interpreter, f64) against
//! central finite differences, and the kernels against the graph evaluator.

mod common;
use common::*;
use gsc_compiler::graph::{Gates, Input, Output};
use gsc_compiler::init::init_params;
use gsc_compiler::kernel::Storage;
use gsc_compiler::plan::*;
use gsc_runtime::interp::{eval_graph, run, Value};

fn check_grads(cfg: &ModelConfig) {
    check_grads_gated(cfg, Gates::default());
}

fn check_grads_gated(cfg: &ModelConfig, gates: Gates) {
    let st = gated_stage(cfg, &train_config(1e-2, 0.1, Some(1.0)), gates);
    let mut params = init_params(cfg, 7);
    // Perturb the scaled nGPT vectors off their init so that every path matters.
    for (p, spec) in params.iter_mut().zip(cfg.params()) {
        if spec.scaled.is_some()
            || spec.role == ParamRole::NormGain
            || spec.role == ParamRole::NormBias
        {
            for (i, x) in p.iter_mut().enumerate() {
                *x *= 1.0 + 0.1 * ((i % 5) as f64 - 2.0);
                *x += 0.01 * (i % 3) as f64;
            }
        }
    }
    let (tokens, targets) = batch(cfg, 3);
    let (l, g) = grads(&st, &params, &tokens, &targets);
    assert!((l - loss(&st, &params, &tokens, &targets)).abs() < 1e-12);
    if gates != Gates::default() {
        let ungated = stage(cfg, &train_config(1e-2, 0.1, Some(1.0)));
        let l_ungated = loss(&ungated, &params, &tokens, &targets);
        assert!(
            (l - l_ungated).abs() > 1e-6,
            "{gates:?}: the gates do not change the loss ({l} vs {l_ungated})"
        );
    }
    let fd = finite_diff(
        &params,
        |t, n| sample(n, 32, t as u64),
        |p| loss(&st, p, &tokens, &targets),
    );
    for (t, spec) in cfg.params().iter().enumerate() {
        let (idx, num): (Vec<usize>, Vec<f64>) = fd[t].iter().copied().unzip();
        let ana: Vec<f64> = idx.iter().map(|&i| g[t][i]).collect();
        let e = rel_err(&ana, &num);
        assert!(
            e < 1e-6,
            "{}: relative error {e:e}\n analytic {ana:?}\n numeric {num:?}",
            spec.name
        );
    }
}

#[test]
fn gpt_rmsnorm_gelu_tied_gradients() {
    check_grads(&tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true));
}

#[test]
fn gpt_layernorm_swiglu_untied_gradients() {
    check_grads(&tiny(
        Arch::Gpt,
        NormKind::LayerNorm,
        Activation::Swiglu,
        false,
    ));
}

#[test]
fn ngpt_gradients() {
    check_grads(&tiny(
        Arch::Ngpt,
        NormKind::RmsNorm,
        Activation::Swiglu,
        false,
    ));
}

#[test]
fn ngpt_gqa_gradients() {
    let mut cfg = tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false);
    cfg.heads = 4;
    cfg.kv_heads = 2;
    check_grads(&cfg);
}

/// Gated stages (units growing in by a ramp): the gradients w.r.t. the
/// parameters that feed and read the gated heads and FFN units carry the
/// gate, for gpt and nGPT, with and without grouped queries.
#[test]
fn gated_gradients() {
    let mut gqa = tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false);
    gqa.heads = 4;
    gqa.kv_heads = 2;
    let models = [
        tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true),
        tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Swiglu, false),
        tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false),
        gqa,
    ];
    for cfg in &models {
        for gates in GATES {
            check_grads_gated(cfg, gates);
        }
    }
}

#[test]
fn gated_kernels_match_graph() {
    for arch in [Arch::Gpt, Arch::Ngpt] {
        let cfg = tiny(arch, NormKind::RmsNorm, Activation::Swiglu, false);
        for gates in GATES {
            kernels_match_graph_gated(&cfg, gates);
        }
    }
}

/// Every output of one fused training step equals the graph evaluated op by op.
fn kernels_match_graph(cfg: &ModelConfig) {
    kernels_match_graph_gated(cfg, Gates::default());
}

fn kernels_match_graph_gated(cfg: &ModelConfig, gates: Gates) {
    let st = gated_stage(cfg, &train_config(1e-2, 0.1, Some(0.5)), gates);
    let params = init_params(cfg, 11);
    let (tokens, targets) = batch(cfg, 5);
    let moments: Vec<Vec<f64>> = params
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .map(|(i, _)| 0.01 * (i % 7) as f64)
                .collect()
        })
        .collect();
    let vals = eval_graph::<f64>(&st.with_grad, |i| {
        Some(match i {
            Input::Param(k) => Value::F(params[k].clone()),
            Input::AdamM(k) => Value::F(moments[k].iter().map(|x| x - 0.02).collect()),
            Input::AdamV(k) => Value::F(moments[k].clone()),
            Input::Tokens => Value::I(tokens.clone()),
            Input::Targets => Value::I(targets.clone()),
            Input::Lr => Value::F(vec![0.01]),
            Input::Step => Value::F(vec![3.0]),
            Input::HeadGate => Value::F(gate_values(cfg.heads)),
            Input::FfnGate => Value::F(gate_values(cfg.ffn)),
            // The fused step computes its gradients.
            Input::Grad(_) => return None,
        })
    })
    .expect("graph evaluates");
    let mut mem = memory::<f64>(&st.kernels, &params, &tokens, &targets);
    for (k, mo) in moments.iter().enumerate() {
        let m: Vec<f64> = mo.iter().map(|x| x - 0.02).collect();
        mem.write(Storage::AdamM(k), &m).unwrap();
        mem.write(Storage::AdamV(k), mo).unwrap();
    }
    mem.write(Storage::Lr, &[0.01]).unwrap();
    mem.write(Storage::Step, &[3.0]).unwrap();
    run(&st.kernels, &mut mem).expect("kernels run");
    for (o, t) in &st.with_grad.outputs {
        let storage = match *o {
            Output::Loss => Storage::Loss,
            Output::Logits => Storage::Logits,
            Output::GradNorm => Storage::GradNorm,
            Output::Grad(i) => Storage::Grad(i),
            Output::Param(i) => Storage::Param(i),
            Output::AdamM(i) => Storage::AdamM(i),
            Output::AdamV(i) => Storage::AdamV(i),
        };
        let want = vals[t.0].floats().unwrap();
        let got = mem.read(storage).unwrap();
        let e = rel_err(&got, want);
        // Adam divides by √v, which amplifies rounding where gradients are tiny.
        assert!(e < 1e-9, "{o:?}: kernels and graph differ by {e:e}");
    }
}

#[test]
fn gpt_kernels_match_graph() {
    kernels_match_graph(&tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true));
    kernels_match_graph(&tiny(
        Arch::Gpt,
        NormKind::LayerNorm,
        Activation::Swiglu,
        false,
    ));
}

#[test]
fn ngpt_kernels_match_graph() {
    kernels_match_graph(&tiny(
        Arch::Ngpt,
        NormKind::RmsNorm,
        Activation::Swiglu,
        false,
    ));
}

/// Odd shapes: one head, grouped heads, head_dim 2, context 1, ffn not a
/// multiple of anything, three layers; kernels still equal the graph.
#[test]
fn odd_shapes_match_graph() {
    let shapes = [
        (1, 1, 2, 1, 3, 5),
        (4, 1, 2, 3, 1, 7),
        (3, 3, 4, 2, 2, 3),
        (2, 2, 6, 5, 3, 9),
    ];
    for (heads, kv_heads, head_dim, context, layers, ffn) in shapes {
        for arch in [Arch::Gpt, Arch::Ngpt] {
            let cfg = ModelConfig {
                heads,
                kv_heads,
                head_dim,
                context,
                layers,
                ffn,
                d_model: 6,
                vocab: 5,
                ..tiny(arch, NormKind::LayerNorm, Activation::Swiglu, true)
            };
            kernels_match_graph(&cfg);
        }
    }
}

/// The step's `GradNorm` output is the norm of its gradients (before
/// clipping), with clipping on and off.
#[test]
fn grad_norm_is_the_norm_of_the_gradients() {
    let cfg = tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true);
    let params = init_params(&cfg, 5);
    let (tokens, targets) = batch(&cfg, 2);
    for clip in [None, Some(0.5)] {
        let st = stage(&cfg, &train_config(1e-2, 0.1, clip));
        let mut mem = memory::<f64>(&st.kernels, &params, &tokens, &targets);
        mem.write(Storage::Lr, &[0.01]).unwrap();
        mem.write(Storage::Step, &[1.0]).unwrap();
        run(&st.kernels, &mut mem).expect("kernels run");
        let squares: f64 = (0..params.len())
            .flat_map(|i| mem.read(Storage::Grad(i)).unwrap())
            .map(|g| g * g)
            .sum();
        let (got, want) = (mem.read(Storage::GradNorm).unwrap()[0], squares.sqrt());
        assert!(
            (got - want).abs() <= 1e-12 * want && want > 0.0,
            "clip {clip:?}: grad_norm {got}, want {want}"
        );
    }
}
