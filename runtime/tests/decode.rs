//! The KV-cache decoder (`gsc generate`) against the reference interpreter:
//! token by token it must give the logits the training graph gives for the
//! whole sequence, in every architecture variant.

mod common;

use common::tiny;
use gsc_compiler::graph::{build_forward, Input, Output};
use gsc_compiler::init::{init_params, rng::SplitMix64};
use gsc_compiler::plan::*;
use gsc_runtime::infer::{Decoder, InferError, Model};
use gsc_runtime::interp::{eval_graph, Value};

/// Every shape option the decoder branches on: norms, activations, tying,
/// grouped-query attention, nGPT with and without it.
fn variants() -> Vec<ModelConfig> {
    let mut out = Vec::new();
    for norm in [NormKind::RmsNorm, NormKind::LayerNorm] {
        for act in [Activation::Gelu, Activation::Swiglu] {
            for tied in [true, false] {
                out.push(tiny(Arch::Gpt, norm, act, tied));
            }
        }
    }
    out.push(ModelConfig {
        heads: 4,
        kv_heads: 2,
        head_dim: 2,
        ..tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Swiglu, false)
    });
    let ngpt = tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false);
    out.push(ngpt.clone());
    out.push(ModelConfig {
        heads: 4,
        kv_heads: 1,
        head_dim: 2,
        ..ngpt
    });
    out.into_iter()
        .map(|c| ModelConfig { context: 6, ..c })
        .collect()
}

/// The init moved off its special values (unit gains, zero biases, nGPT's
/// constant scalings), so that every parameter shows in the logits.
fn params(cfg: &ModelConfig) -> Vec<Vec<f64>> {
    let mut rng = SplitMix64::new(11);
    let mut p = init_params(cfg, 3);
    for (t, spec) in p.iter_mut().zip(cfg.params()) {
        let jitter = if spec.shape.len() == 1 { 0.3 } else { 0.02 };
        for x in t.iter_mut() {
            *x += jitter * rng.normal() * x.abs().max(0.5);
        }
    }
    p
}

/// The reference interpreter's logits `[context, vocab]` for one sequence.
fn reference(cfg: &ModelConfig, params: &[Vec<f64>], tokens: &[u32]) -> Vec<f64> {
    let g = build_forward(cfg, 1).expect("the variant builds");
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let vals = eval_graph::<f64>(&g, |i| match i {
        Input::Param(k) => Some(Value::F(params[k].clone())),
        Input::Tokens | Input::Targets => Some(Value::I(ids.clone())),
        _ => None,
    })
    .expect("the graph evaluates");
    let (_, logits) = g
        .outputs
        .iter()
        .find(|(o, _)| *o == Output::Logits)
        .unwrap();
    vals[logits.0].floats().expect("logits are floats").to_vec()
}

#[test]
fn decoding_token_by_token_gives_the_training_graphs_logits() {
    for cfg in variants() {
        let p = params(&cfg);
        let p32: Vec<Vec<f32>> = p
            .iter()
            .map(|t| t.iter().map(|&x| x as f32).collect())
            .collect();
        let model = Model::from_params(cfg.clone(), &p32);
        let tokens: Vec<u32> = (0..cfg.context as u32)
            .map(|i| (i * 7 + 3) % cfg.vocab as u32)
            .collect();
        let want = reference(&cfg, &p, &tokens);
        let mut dec = Decoder::new(&model);
        for (pos, &t) in tokens.iter().enumerate() {
            let got = dec.step(t).expect("in range");
            let want = &want[pos * cfg.vocab..][..cfg.vocab];
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{:?} {:?} {:?} tied {} kv {}: position {pos}, logit {i}: {g} vs {w}",
                    cfg.arch,
                    cfg.norm,
                    cfg.activation,
                    cfg.tied,
                    cfg.kv_heads
                );
            }
        }
        assert!(matches!(dec.step(0), Err(InferError::Full { context: 6 })));
        dec.clear();
        assert!(matches!(
            dec.step(cfg.vocab as u32),
            Err(InferError::Token { .. })
        ));
    }
}
