//! nGPT keeps every hidden state and every unit-norm weight vector on the
//! sphere: after init, through the forward pass, and after a compiled step.

mod common;
use common::*;
use gsc_compiler::graph::Input;
use gsc_compiler::init::init_params;
use gsc_compiler::kernel::Storage;
use gsc_compiler::plan::*;
use gsc_runtime::interp::{eval_graph, train_step, Value};

fn cfg() -> ModelConfig {
    tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false)
}

/// Norms of the unit vectors of a row-major matrix.
fn norms(w: &[f64], shape: &[usize], unit: UnitNorm) -> Vec<f64> {
    let (rows, cols) = (shape[0], shape[1]);
    match unit {
        UnitNorm::Rows => (0..rows)
            .map(|r| {
                (0..cols)
                    .map(|c| w[r * cols + c].powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect(),
        UnitNorm::Cols => (0..cols)
            .map(|c| {
                (0..rows)
                    .map(|r| w[r * cols + c].powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect(),
    }
}

fn assert_unit(params: &[Vec<f64>], cfg: &ModelConfig, when: &str) {
    let mut checked = 0;
    for (p, spec) in params.iter().zip(cfg.params()) {
        if let Some(unit) = spec.unit_norm {
            for n in norms(p, &spec.shape, unit) {
                assert!(
                    (n - 1.0).abs() < 1e-6,
                    "{when}: {} has a vector of norm {n}",
                    spec.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn unit_norm_after_init_and_after_compiled_steps() {
    let cfg = cfg();
    let st = stage(&cfg, &train_config(0.05, 0.0, Some(1.0)));
    let params = init_params(&cfg, 1);
    assert_unit(&params, &cfg, "init");
    let (tokens, targets) = batch(&cfg, 2);
    let mut mem = memory::<f64>(&st.kernels, &params, &tokens, &targets);
    for step in 1..=3 {
        train_step(&st.kernels, &mut mem, 0.05, step).unwrap();
        let now: Vec<Vec<f64>> = (0..params.len())
            .map(|i| mem.read(Storage::Param(i)).unwrap())
            .collect();
        assert_unit(&now, &cfg, &format!("after step {step}"));
        assert!(now != params, "the step must move the parameters");
    }
}

#[test]
fn hidden_states_on_the_sphere() {
    let cfg = cfg();
    let st = stage(&cfg, &train_config(0.05, 0.0, None));
    let params = init_params(&cfg, 4);
    let (tokens, targets) = batch(&cfg, 6);
    let vals = eval_graph::<f64>(&st.forward, |i| {
        Some(match i {
            Input::Param(k) => Value::F(params[k].clone()),
            Input::Tokens => Value::I(tokens.clone()),
            Input::Targets => Value::I(targets.clone()),
            _ => return None,
        })
    })
    .unwrap();
    let mut states = 0;
    for (t, tensor) in st.forward.tensors.iter().enumerate() {
        let Some(label) = &tensor.label else { continue };
        let d = cfg.d_model;
        for row in vals[t].floats().unwrap().chunks(d) {
            let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((n - 1.0).abs() < 1e-6, "{label} has a row of norm {n}");
        }
        states += 1;
    }
    assert_eq!(states, 1 + 2 * cfg.layers, "h0 and two states per layer");
}
