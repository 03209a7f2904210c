//! Growth preserves the function: for both architectures and every exact
//! method, the grown model's logits equal the old model's (f64, reference
//! interpreter), on a model whose every parameter was perturbed away from
//! its initial value (so gains, gates and scales are not trivially 1 or 0).

use gsc_compiler::check_source;
use gsc_compiler::kernel::Storage;
use gsc_compiler::plan::{ModelConfig, StagePlan};
use gsc_runtime::grow::{grow, ModelState};
use gsc_runtime::interp::{run, Memory};
use std::path::Path;

/// Plans `model { … }` grown by `steps`, returning (first stage, second stage).
fn plan(arch: &str, model: &str, steps: &str) -> (StagePlan, StagePlan) {
    let src = format!(
        "data d {{ text = \"small.txt\" }}\nmodel m = {arch} {{ vocab = tokenizer {model} }}\n\
         train {{ optimizer = adamw(lr = 1e-3, weight_decay = 0) batch = 2 sequences }}\n\
         grow m {{\n stage a: train 1 step\n {steps}\n stage b: train 1 step\n}}\n"
    );
    let checked = check_source("t.gs", &src, Path::new("../tests/fixtures"), &[]);
    assert!(
        !checked.report.has_errors(),
        "{}",
        checked.report.render(false)
    );
    let plan = checked.plan.unwrap();
    let stages = &plan.runs[0].stages;
    (stages[0].clone(), stages[1].clone())
}

/// A trained-looking state: every parameter moved off its init, nGPT's unit
/// vectors renormalised.
fn perturbed(cfg: &ModelConfig, seed: u64) -> ModelState {
    let mut s = ModelState::init(cfg, seed);
    let mut rng = gsc_compiler::init::rng::SplitMix64::new(seed ^ 0x5eed);
    for (p, spec) in s.params.iter_mut().zip(cfg.params()) {
        for x in p.iter_mut() {
            *x = *x * (1.0 + 0.3 * rng.normal()) + 0.05 * rng.normal();
        }
        if let Some(unit) = spec.unit_norm {
            gsc_compiler::init::normalize(p, &spec.shape, unit);
        }
    }
    s
}

fn logits(stage: &StagePlan, cfg: &ModelConfig, st: &ModelState, tokens: &[i32]) -> Vec<f64> {
    let batch = tokens.len() / cfg.context;
    let compiled = gsc_compiler::compile_stage(cfg, &stage.train, batch).unwrap();
    let prog = compiled.forward_kernels;
    let mut mem = Memory::<f64>::new(&prog);
    for (i, p) in st.params.iter().enumerate() {
        mem.write(Storage::Param(i), p).unwrap();
    }
    mem.write_ints(Storage::Tokens, tokens).unwrap();
    mem.write_ints(Storage::Targets, tokens).unwrap();
    run(&prog, &mut mem).unwrap();
    mem.read(Storage::Logits).unwrap()
}

fn tokens(n: usize) -> Vec<i32> {
    (0..n).map(|i| ((i * 37 + 11) % 200) as i32).collect()
}

/// Grows `first`'s model into `second`'s and compares logits at `first`'s context.
fn assert_preserved(arch: &str, model: &str, steps: &str) {
    let (a, b) = plan(arch, model, steps);
    let before = perturbed(&a.model, 7);
    let mut after = before.clone();
    for (k, g) in b.growth.iter().enumerate() {
        assert!(g.exact, "{steps}: the plan says this step is not exact");
        after = grow(&after, g, 99 + k as u64).unwrap_or_else(|e| panic!("{steps}: {e}"));
    }
    assert_eq!(
        after.config, b.model,
        "{steps}: grown model differs from the plan's"
    );
    let ctx = a.model.context;
    let t = tokens(2 * ctx);
    let l0 = logits(&a, &a.model, &before, &t);
    let mut at_old_ctx = after.config.clone();
    at_old_ctx.context = ctx;
    let l1 = logits(&b, &at_old_ctx, &after, &t);
    let worst = l0
        .iter()
        .zip(&l1)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-9,
        "{arch} {model} | {steps}: max |Δ logits| = {worst:e}"
    );
    // The moments have the grown shapes too.
    for (i, spec) in after.config.params().iter().enumerate() {
        assert_eq!(after.params[i].len(), spec.numel(), "{}", spec.name);
        assert_eq!(after.m[i].len(), spec.numel());
        assert_eq!(after.v[i].len(), spec.numel());
    }
}

const GPT: &str = "context = 8 d_model = 16 heads = 2 layers = 2 ffn = 32";

#[test]
fn gpt_residual_width() {
    for steps in [
        "grow d_model * 1.25",
        "grow d_model * 1.25 by isometric(split = uneven)",
        "grow d_model to 23 by isometric(split = uneven)",
        "grow d_model * 3.5 by isometric(split = uneven)",
        "grow d_model * 1.25 by isometric(split = uneven), noise = 0.05",
        "grow d_model * 2 by copy",
        "grow d_model + 5 by zero",
    ] {
        assert_preserved("gpt", GPT, steps);
        assert_preserved(
            "gpt",
            &format!("{GPT} activation = swiglu tied = false"),
            steps,
        );
    }
}

#[test]
fn gpt_layernorm_doubling() {
    let m = format!("{GPT} norm = layernorm");
    assert_preserved("gpt", &m, "grow d_model * 2 by copy");
    assert_preserved("gpt", &m, "grow d_model * 3 by isometric");
}

#[test]
fn gpt_ffn_heads_layers_context() {
    for steps in [
        "grow ffn * 1.25 by copy",
        "grow ffn to 57 by copy",
        "grow ffn + 8 by zero",
        "grow heads + 1 by zero",
        "grow heads * 2 by copy",
        "grow layers + 1 at [0] by identity",
        "grow layers + 2 at [1, 3] by identity",
        "grow context to 16",
        "grow d_model * 1.25 by isometric(split = uneven)\n grow ffn * 1.5 by copy\n grow heads + 1\n grow layers + 1 at [1]",
    ] {
        assert_preserved("gpt", GPT, steps);
    }
}

#[test]
fn gpt_grouped_query_attention() {
    let m = "context = 8 d_model = 16 heads = 4 head_dim = 4 kv_heads = 2 layers = 1 ffn = 32";
    assert_preserved("gpt", m, "grow heads + 2 by zero");
    assert_preserved("gpt", m, "grow heads * 2 by copy");
    assert_preserved("gpt", m, "grow kv_heads * 2 by copy");
}

const NGPT: &str = "context = 8 d_model = 16 heads = 2 layers = 2 ffn = 32";

#[test]
fn ngpt_every_exact_step() {
    for steps in [
        "grow d_model * 1.25 by isometric(split = uneven)",
        "grow d_model to 21",
        "grow d_model * 2 by copy",
        "grow d_model + 4 by zero",
        "grow ffn * 1.25 by copy",
        "grow ffn + 8 by zero",
        "grow heads * 2 by copy",
        "grow layers + 1 at [1] by identity",
        "grow context to 16",
    ] {
        assert_preserved("ngpt", NGPT, steps);
    }
}

#[test]
fn context_growth_keeps_old_positions() {
    let (a, b) = plan("gpt", GPT, "grow context to 16");
    let st = perturbed(&a.model, 3);
    let grown = grow(&st, &b.growth[0], 1).unwrap();
    let short = tokens(8);
    let long: Vec<i32> = short
        .iter()
        .copied()
        .chain(tokens(8).iter().map(|t| (t + 5) % 200))
        .collect();
    let l_short = logits(&a, &a.model, &st, &short);
    let l_long = logits(&b, &grown.config, &grown, &long);
    // Causal attention: the first 8 positions see the same tokens.
    let worst = l_short
        .iter()
        .zip(&l_long[..l_short.len()])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-9, "{worst:e}");
}

#[test]
fn stacking_is_not_exact_and_moments_follow_the_map() {
    let (a, b) = plan("gpt", GPT, "grow layers + 1 at [2] by stack");
    assert!(!b.growth[0].exact);
    let mut st = perturbed(&a.model, 5);
    for m in st.m.iter_mut() {
        m.iter_mut().for_each(|x| *x = 1.0);
    }
    let grown = grow(&st, &b.growth[0], 1).unwrap();
    // The stacked block copies block 1's weights, with fresh moments.
    let names: Vec<String> = grown
        .config
        .params()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let at = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert_eq!(
        grown.params[at("layers.2.attn.wq")],
        grown.params[at("layers.1.attn.wq")]
    );
    assert!(grown.m[at("layers.2.attn.wq")].iter().all(|x| *x == 0.0));
    assert!(grown.m[at("layers.1.attn.wq")].iter().all(|x| *x == 1.0));
}
