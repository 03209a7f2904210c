//! Growth preserves the function: for both architectures and every exact
//! method, the grown model's logits equal the old model's — to 1e-10 in the
//! reference interpreter (f64) and to f32 rounding on the CPU backend — on a
//! model whose every parameter was perturbed away from its initial value (so
//! gains, gates and scales are not trivially 1 or 0). The named cases pin
//! each method down; a property test draws shapes, norms, tying and steps at
//! random. The moment policies (`map`, `zero_new`, `asymmetric`, `reset`)
//! are checked entry by entry.

use gsc_compiler::check_source;
use gsc_compiler::graph::Gates;
use gsc_compiler::kernel::{KernelProgram, Storage};
use gsc_compiler::plan::{Axis, ModelConfig, StagePlan};
use gsc_runtime::backend::{Backend, Cpu};
use gsc_runtime::grow::{grow, ModelState};
use gsc_runtime::interp::{run, Memory};
use proptest::prelude::*;
use std::path::Path;

/// The plan of `src` (data from tests/fixtures), which must check cleanly.
fn checked_plan(src: &str) -> gsc_compiler::plan::Plan {
    let checked = check_source("t.gs", src, Path::new("../tests/fixtures"), &[]);
    assert!(
        !checked.report.has_errors(),
        "{}",
        checked.report.render(false)
    );
    checked.plan.unwrap()
}

/// Plans `model { … }` grown by `steps`, returning (first stage, second stage).
fn plan(arch: &str, model: &str, steps: &str) -> (StagePlan, StagePlan) {
    let src = format!(
        "data d {{ text = \"small.txt\" }}\nmodel m = {arch} {{ vocab = tokenizer {model} }}\n\
         train {{ optimizer = adamw(lr = 1e-3, weight_decay = 0) batch = 2 sequences }}\n\
         grow m {{\n stage a: train 1 step\n {steps}\n stage b: train 1 step\n}}\n"
    );
    let plan = checked_plan(&src);
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

/// The gate buffers of `stage` (units growing in by a ramp) with the new
/// units at `ramp`.
fn gate_values(stage: &StagePlan, ramp: f64) -> Vec<(Storage, Vec<f64>)> {
    stage
        .gates
        .iter()
        .map(|g| {
            let s = match g.axis {
                Axis::Heads => Storage::HeadGate,
                _ => Storage::FfnGate,
            };
            (s, g.values(ramp))
        })
        .collect()
}

fn compile(stage: &StagePlan, cfg: &ModelConfig, batch: usize) -> KernelProgram {
    gsc_compiler::compile_stage_gated(cfg, &stage.train, batch, Gates::of(stage))
        .unwrap()
        .forward_kernels
}

/// The forward pass's logits in the interpreter (f64), the gates of
/// `stage`'s ramps (if any) at 0: where they start.
fn logits(stage: &StagePlan, cfg: &ModelConfig, st: &ModelState, tokens: &[i32]) -> Vec<f64> {
    logits_at(stage, cfg, st, tokens, 0.0)
}

fn logits_at(
    stage: &StagePlan,
    cfg: &ModelConfig,
    st: &ModelState,
    tokens: &[i32],
    ramp: f64,
) -> Vec<f64> {
    let prog = compile(stage, cfg, tokens.len() / cfg.context);
    let mut mem = Memory::<f64>::new(&prog);
    for (i, p) in st.params.iter().enumerate() {
        mem.write(Storage::Param(i), p).unwrap();
    }
    for (s, v) in gate_values(stage, ramp) {
        mem.write(s, &v).unwrap();
    }
    mem.write_ints(Storage::Tokens, tokens).unwrap();
    mem.write_ints(Storage::Targets, tokens).unwrap();
    run(&prog, &mut mem).unwrap();
    mem.read(Storage::Logits).unwrap()
}

/// The same forward pass on the CPU backend (f32, JIT-compiled loops).
fn cpu_logits(stage: &StagePlan, cfg: &ModelConfig, st: &ModelState, tokens: &[i32]) -> Vec<f32> {
    let prog = compile(stage, cfg, tokens.len() / cfg.context);
    let mut p = Cpu.load(&prog).unwrap();
    let f32s = |w: &[f64]| -> Vec<f32> { w.iter().map(|&x| x as f32).collect() };
    for (i, w) in st.params.iter().enumerate() {
        p.write(Storage::Param(i), &f32s(w)).unwrap();
    }
    for (s, v) in gate_values(stage, 0.0) {
        p.write(s, &f32s(&v)).unwrap();
    }
    p.write_ints(Storage::Tokens, tokens).unwrap();
    p.write_ints(Storage::Targets, tokens).unwrap();
    p.run().unwrap();
    p.read(Storage::Logits).unwrap()
}

fn tokens(n: usize) -> Vec<i32> {
    (0..n).map(|i| ((i * 37 + 11) % 200) as i32).collect()
}

/// Grows `first`'s model into `second`'s and compares logits at `first`'s context.
fn assert_preserved(arch: &str, model: &str, steps: &str) {
    let (a, b) = plan(arch, model, steps);
    assert_stages_preserved(&a, &b, &format!("{arch} {model} | {steps}"));
}

/// Grows stage `a`'s model into stage `b`'s by `b`'s growth steps and
/// compares the logits, in f64 and on the CPU backend.
fn assert_stages_preserved(a: &StagePlan, b: &StagePlan, what: &str) {
    let before = perturbed(&a.model, 7);
    let mut after = before.clone();
    for (k, g) in b.growth.iter().enumerate() {
        assert!(g.exact, "{what}: the plan says this step is not exact");
        after = grow(&after, g, 99 + k as u64).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    assert_eq!(
        after.config, b.model,
        "{what}: grown model differs from the plan's"
    );
    let ctx = a.model.context;
    let t = tokens(2 * ctx);
    let l0 = logits(a, &a.model, &before, &t);
    let mut at_old_ctx = after.config.clone();
    at_old_ctx.context = ctx;
    let l1 = logits(b, &at_old_ctx, &after, &t);
    let worst = l0
        .iter()
        .zip(&l1)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-10, "{what}: max |Δ logits| = {worst:e}");
    // f32: both passes round differently (the grown one sums more terms), so
    // the bound is relative to the logits' size.
    let c0 = cpu_logits(a, &a.model, &before, &t);
    let c1 = cpu_logits(b, &at_old_ctx, &after, &t);
    let scale = c0.iter().fold(1f32, |m, x| m.max(x.abs()));
    let worst = c0
        .iter()
        .zip(&c1)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 2e-5 * scale,
        "{what}: cpu max |Δ logits| = {worst:e} (logits up to {scale})"
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

/// HyperCloning (`copy` on d_model) with either norm, tied or not, by ×2
/// and ×3, with every moment policy and symmetry-breaking noise.
#[test]
fn gpt_hypercloning() {
    for norm in ["rmsnorm", "layernorm"] {
        for tied in [true, false] {
            let m = format!("{GPT} norm = {norm} tied = {tied}");
            for steps in [
                "grow d_model * 2 by copy",
                "grow d_model * 3 by copy, optimizer = asymmetric, lr_scale = 0.5",
                "grow d_model * 2 by copy, noise = 0.05, optimizer = zero_new",
                "grow d_model * 2 by copy\n grow heads * 2 by copy\n grow ffn * 2 by copy",
            ] {
                assert_preserved("gpt", &m, steps);
            }
        }
    }
}

#[test]
fn gpt_layernorm_doubling() {
    let m = format!("{GPT} norm = layernorm");
    assert_preserved("gpt", &m, "grow d_model * 3 by isometric");
}

/// The built-in `doubling(…)` baseline plans `copy` on every width: its
/// growth is exact with either norm, tied or not, and for nGPT.
#[test]
fn doubling_baselines() {
    let models = [
        ("gpt", format!("{GPT} norm = rmsnorm tied = true")),
        ("gpt", format!("{GPT} norm = layernorm tied = true")),
        ("gpt", format!("{GPT} norm = layernorm tied = false")),
        ("gpt", format!("{GPT} activation = swiglu tied = false")),
        ("ngpt", NGPT.to_string()),
    ];
    for (arch, model) in models {
        let src = format!(
            "data d {{ text = \"small.txt\" }}\nmodel m = {arch} {{ vocab = tokenizer {model} }}\n\
             train {{ optimizer = adamw(lr = 1e-3, weight_decay = 0) batch = 2 sequences }}\n\
             grow m {{ stage a: train 4 steps }}\ncompare d = doubling(m, same steps)\n"
        );
        let plan = checked_plan(&src);
        let stages = &plan.runs[1].stages;
        assert_stages_preserved(&stages[0], &stages[1], &format!("doubling {arch} {model}"));
    }
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
        "grow d_model * 2 by isometric",
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

/// `ramp` (Masked Structural Growth) on heads and FFN units, alone, together
/// and among other steps, with grouped queries, gpt and nGPT: with the gates
/// at 0 the grown model is the old one, though the new units' weights are
/// fresh on both sides.
#[test]
fn ramps_are_exact_at_their_start() {
    let gqa = "context = 8 d_model = 16 heads = 4 head_dim = 4 kv_heads = 2 layers = 1 ffn = 32";
    for arch in ["gpt", "ngpt"] {
        let base = if arch == "gpt" { GPT } else { NGPT };
        for (model, steps) in [
            (base, "grow heads + 1 by ramp(1 step)"),
            (base, "grow ffn + 8 by ramp(1 step)"),
            (base, "grow ffn * 1.5 by ramp(1 step)\n grow heads + 1 by ramp(1 step)"),
            (
                base,
                "grow d_model * 1.25 by isometric(split = uneven)\n grow heads + 1 by ramp(1 step)\n                  grow ffn * 1.5 by ramp(1 step)\n grow layers + 1 at [1]",
            ),
            (gqa, "grow heads + 2 by ramp(1 step)"),
            (gqa, "grow heads + 4 by ramp(1 step)\n grow kv_heads * 2 by copy"),
        ] {
            assert_preserved(arch, model, steps);
        }
    }
}

/// The gates are live: with the new units fully on, fresh weights on both
/// sides change the function (so it is the gate, not a zero weight, that
/// kept it at the start).
#[test]
fn ramped_units_change_the_function_once_on() {
    for (arch, model) in [("gpt", GPT), ("ngpt", NGPT)] {
        for steps in [
            "grow heads + 1 by ramp(1 step)",
            "grow ffn + 8 by ramp(1 step)",
        ] {
            let (a, b) = plan(arch, model, steps);
            assert_eq!(b.gates.len(), 1, "{arch} {steps}");
            let st = perturbed(&a.model, 3);
            let grown = grow(&st, &b.growth[0], 1).unwrap();
            let t = tokens(2 * a.model.context);
            let l0 = logits(&b, &grown.config, &grown, &t);
            let l1 = logits_at(&b, &grown.config, &grown, &t, 1.0);
            let moved = l0
                .iter()
                .zip(&l1)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                moved > 1e-3,
                "{arch} {steps}: the gate changes nothing ({moved:e})"
            );
        }
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

/// A model, its growth steps, and the moment policy, drawn at random: every
/// combination the plan declares exact.
fn exact_case() -> impl Strategy<Value = (String, String, String)> {
    (
        (0usize..2, 0usize..2, any::<bool>(), any::<bool>()),
        (1usize..4, 1usize..3, 1usize..3, 4usize..20),
        (0usize..9, 1usize..12, 0usize..4, 0usize..3),
    )
        .prop_map(|(model, shape, step)| build_case(model, shape, step))
}

fn build_case(
    (arch, norm, tied, swiglu): (usize, usize, bool, bool),
    (width, heads, layers, ffn): (usize, usize, usize, usize),
    (kind, amount, policy, extra): (usize, usize, usize, usize),
) -> (String, String, String) {
    let ngpt = arch == 1;
    let layernorm = !ngpt && norm == 1;
    let d = 4 * width * heads;
    let mut model =
        format!("context = 4 d_model = {d} heads = {heads} layers = {layers} ffn = {ffn}");
    if !ngpt {
        let norm = if layernorm { "layernorm" } else { "rmsnorm" };
        let act = if swiglu { "swiglu" } else { "gelu" };
        model += &format!(" norm = {norm} tied = {tied} activation = {act}");
    }
    let factor = 2 + amount % 2;
    let step = match kind {
        // LayerNorm keeps its statistics only under whole, even copies.
        0 if layernorm => format!("grow d_model * {factor} by isometric"),
        0 => format!("grow d_model + {amount} by isometric(split = uneven)"),
        1 if ngpt => format!("grow d_model + {amount}"),
        1 => format!("grow d_model * {factor} by copy"),
        2 if layernorm => format!("grow d_model * {factor} by copy, noise = 0.03"),
        2 => format!("grow d_model + {amount} by zero"),
        3 => format!("grow ffn + {amount} by copy"),
        4 => format!("grow ffn + {amount} by zero"),
        5 if ngpt => "grow heads * 2 by copy".to_string(),
        5 => format!("grow heads + {} by zero", 1 + amount % 2),
        6 => format!("grow layers + 1 at [{}] by identity", amount % (layers + 1)),
        7 => "grow context to 8".to_string(),
        _ if ngpt => format!("grow d_model + {amount}\n grow ffn * 2 by copy"),
        _ => {
            format!("grow d_model * {factor} by copy\n grow heads * 2 by copy")
                + "\n grow ffn * 2 by copy"
        }
    };
    let options = [
        "",
        ", optimizer = zero_new",
        ", optimizer = asymmetric, lr_scale = 0.7",
        ", optimizer = reset",
    ][policy];
    let options = if extra == 0 { "" } else { options };
    let arch = if ngpt { "ngpt" } else { "gpt" };
    (arch.to_string(), model, format!("{step}{options}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_exact_step_keeps_the_logits((arch, model, steps) in exact_case()) {
        assert_preserved(&arch, &model, &steps);
    }
}

/// The state of `steps` applied to a perturbed model whose moments are all
/// `m` = 1 and `v` = 1, so that each entry shows the factor it was mapped by.
fn grown_moments(model: &str, steps: &str) -> (ModelState, ModelState) {
    let (a, b) = plan("gpt", model, steps);
    let mut st = perturbed(&a.model, 5);
    st.m.iter_mut()
        .for_each(|m| m.iter_mut().for_each(|x| *x = 1.0));
    st.v.iter_mut()
        .for_each(|v| v.iter_mut().for_each(|x| *x = 1.0));
    let mut after = st.clone();
    for (k, g) in b.growth.iter().enumerate() {
        after = grow(&after, g, k as u64).unwrap();
    }
    assert_eq!(after.config, b.model);
    (st, after)
}

fn at(st: &ModelState, name: &str) -> usize {
    st.config
        .params()
        .iter()
        .position(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// HyperCloning: writers copied, readers divided by n, and their moments
/// follow (m by the factor, v by its square); norm gains and eps unchanged,
/// except the final gain of a tied model, divided by n.
#[test]
fn hypercloning_maps_weights_and_moments() {
    for tied in [false, true] {
        let (st, g) = grown_moments(
            &format!("{GPT} norm = layernorm tied = {tied}"),
            "grow d_model * 2 by copy",
        );
        let d = 16;
        assert_eq!(g.config.norm_eps, st.config.norm_eps);
        let wq = at(&g, "layers.0.attn.wq");
        for r in 0..4 {
            for c in 0..2 * d {
                let old = st.params[wq][r * d + c % d];
                assert_eq!(g.params[wq][r * 2 * d + c], old / 2.0);
                assert_eq!(g.m[wq][r * 2 * d + c], 0.5);
                assert_eq!(g.v[wq][r * 2 * d + c], 0.25);
            }
        }
        let wo = at(&g, "layers.0.attn.wo");
        let q = st.config.q_dim();
        for r in 0..2 * d {
            for c in 0..q {
                assert_eq!(g.params[wo][r * q + c], st.params[wo][(r % d) * q + c]);
                assert_eq!(g.m[wo][r * q + c], 1.0);
                assert_eq!(g.v[wo][r * q + c], 1.0);
            }
        }
        let gain = at(&g, "layers.1.mlp_norm.gain");
        assert_eq!(g.params[gain][d + 3], st.params[gain][3]);
        let last = at(&g, "final_norm.gain");
        let n = if tied { 2.0 } else { 1.0 };
        assert_eq!(g.params[last][d + 3], st.params[last][3] / n);
        assert_eq!(g.v[last][3], 1.0 / (n * n));
    }
}

/// `asymmetric` zeroes the moments of every added coordinate — copies too —
/// and keeps each original's mapped moments; `zero_new` zeroes every entry
/// past the old size. They agree where copies are appended (d_model, ffn)
/// and differ where each head's copies sit next to it (heads by copy).
#[test]
fn asymmetric_and_zero_new_moments() {
    let d = 16;
    for policy in ["asymmetric", "zero_new"] {
        let (_, g) = grown_moments(
            GPT,
            &format!("grow d_model * 2 by copy, optimizer = {policy}"),
        );
        let wq = at(&g, "layers.0.attn.wq");
        for c in 0..2 * d {
            let want = if c < d { 0.5 } else { 0.0 };
            assert_eq!(g.m[wq][c], want, "{policy} column {c}");
            assert_eq!(g.v[wq][c], want * want, "{policy} column {c}");
        }
        let gain = at(&g, "layers.0.attn_norm.gain");
        assert_eq!(g.m[gain][..d], vec![1.0; d][..]);
        assert_eq!(g.m[gain][d..], vec![0.0; d][..]);
    }
    // Heads ×2 by copy: [h0, h0′, h1, h1′], 8 rows of Wq each.
    let rows = |policy: &str| {
        let (_, g) = grown_moments(
            GPT,
            &format!("grow heads * 2 by copy, optimizer = {policy}"),
        );
        let wq = at(&g, "layers.0.attn.wq");
        (0..4)
            .map(|h| g.m[wq][h * 8 * d] != 0.0)
            .collect::<Vec<bool>>()
    };
    assert_eq!(rows("asymmetric"), [true, false, true, false]);
    assert_eq!(rows("zero_new"), [true, true, false, false]);
    assert_eq!(rows("map"), [true, true, true, true]);
}

/// `reset` zeroes every moment, the old blocks' too when layers grow.
#[test]
fn reset_clears_every_moment() {
    for steps in [
        "grow d_model * 2 by copy, optimizer = reset",
        "grow layers + 1 at [1], optimizer = reset",
    ] {
        let (_, g) = grown_moments(GPT, steps);
        assert!(
            g.m.iter().chain(&g.v).all(|m| m.iter().all(|x| *x == 0.0)),
            "{steps}"
        );
    }
}
