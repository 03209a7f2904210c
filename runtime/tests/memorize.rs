//! A tiny model of each architecture, trained by the interpreter (f32) on one
//! fixed batch, memorises it: the loss goes close to zero.

mod common;
use common::*;
use gsc_compiler::init::init_params;
use gsc_compiler::plan::*;
use gsc_runtime::interp::train_step;

fn memorize(cfg: &ModelConfig, lr: f64, steps: usize) -> (f32, f32) {
    let st = stage(cfg, &train_config(lr, 0.0, Some(1.0)));
    let params = init_params(cfg, 3);
    let (tokens, targets) = batch(cfg, 9);
    let mut mem = memory::<f32>(&st.kernels, &params, &tokens, &targets);
    let mut first = None;
    let mut last = f32::NAN;
    for step in 1..=steps {
        last = train_step(&st.kernels, &mut mem, lr, step as u64).unwrap() as f32;
        first.get_or_insert(last);
    }
    (first.unwrap_or(f32::NAN), last)
}

#[test]
fn gpt_memorizes() {
    let cfg = tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true);
    let (first, last) = memorize(&cfg, 3e-2, 150);
    assert!(first > 1.5 && last < 0.05, "loss {first} → {last}");
}

#[test]
fn gpt_layernorm_swiglu_memorizes() {
    let cfg = tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Swiglu, false);
    let (first, last) = memorize(&cfg, 3e-2, 150);
    assert!(first > 1.5 && last < 0.05, "loss {first} → {last}");
}

#[test]
fn ngpt_memorizes() {
    let cfg = tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false);
    let (first, last) = memorize(&cfg, 3e-2, 150);
    assert!(first > 1.5 && last < 0.05, "loss {first} → {last}");
}
