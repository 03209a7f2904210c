//! Snapshots of the emit ladder (`ir`, `ir-grad`, `kernels`) for a tiny model
//! of each architecture.

mod common;
use common::*;
use gsc_compiler::plan::*;
use gsc_compiler::*;

fn stage(cfg: &ModelConfig) -> CompiledStage {
    compile_stage(cfg, &train(Some(1.0)), 2).expect("tiny model compiles")
}

#[test]
fn gpt_rmsnorm_gelu_tied() {
    let s = stage(&tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true));
    insta::assert_snapshot!("gpt_ir", render_ir(&s));
    insta::assert_snapshot!("gpt_ir_grad", render_ir_grad(&s));
    insta::assert_snapshot!("gpt_kernels", render_kernels(&s));
}

#[test]
fn ngpt() {
    let s = stage(&tiny(
        Arch::Ngpt,
        NormKind::RmsNorm,
        Activation::Swiglu,
        false,
    ));
    insta::assert_snapshot!("ngpt_ir", render_ir(&s));
    insta::assert_snapshot!("ngpt_ir_grad", render_ir_grad(&s));
    insta::assert_snapshot!("ngpt_kernels", render_kernels(&s));
}

#[test]
fn gpt_layernorm_swiglu_untied() {
    let s = stage(&tiny(
        Arch::Gpt,
        NormKind::LayerNorm,
        Activation::Swiglu,
        false,
    ));
    insta::assert_snapshot!("gpt_ln_swiglu_ir", render_ir(&s));
    insta::assert_snapshot!("gpt_ln_swiglu_kernels", render_kernels(&s));
}

/// A stage whose heads and FFN units grow in by a ramp: the gates are
/// inputs (`head_gate`, `ffn_gate`) multiplied into the attention output
/// and the FFN activation, and into their gradients.
#[test]
fn gated() {
    let gates = graph::Gates {
        heads: true,
        ffn: true,
    };
    for (name, cfg) in [
        (
            "gpt_gated",
            tiny(Arch::Gpt, NormKind::RmsNorm, Activation::Gelu, true),
        ),
        (
            "ngpt_gated",
            tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false),
        ),
    ] {
        let s = compile_stage_gated(&cfg, &train(Some(1.0)), 2, gates).expect("compiles");
        insta::assert_snapshot!(format!("{name}_ir"), render_ir(&s));
        insta::assert_snapshot!(format!("{name}_kernels"), render_kernels(&s));
    }
}
