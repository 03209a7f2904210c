//! The seeded initialisation of both architectures.

mod common;
use common::*;
use gsc_compiler::init::init_params;
use gsc_compiler::plan::*;

fn std_of(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

#[test]
fn gpt_init_is_seeded_and_scaled_like_gpt2() {
    let mut cfg = tiny(Arch::Gpt, NormKind::LayerNorm, Activation::Gelu, false);
    cfg.d_model = 64;
    cfg.ffn = 256;
    cfg.heads = 4;
    cfg.kv_heads = 4;
    cfg.head_dim = 16;
    cfg.layers = 2;
    cfg.init_std = 0.02;
    let a = init_params(&cfg, 5);
    assert_eq!(a, init_params(&cfg, 5));
    assert_ne!(a, init_params(&cfg, 6));
    for (p, spec) in a.iter().zip(cfg.params()) {
        assert_eq!(p.len(), spec.numel(), "{}", spec.name);
        match spec.role {
            ParamRole::NormGain => assert!(p.iter().all(|&x| x == 1.0)),
            ParamRole::NormBias => assert!(p.iter().all(|&x| x == 0.0)),
            ParamRole::Wo | ParamRole::WDown => {
                let want = 0.02 / 2.0;
                assert!(
                    (std_of(p) - want).abs() < 0.15 * want,
                    "{}: std {}",
                    spec.name,
                    std_of(p)
                );
            }
            _ => assert!(
                (std_of(p) - 0.02).abs() < 0.15 * 0.02,
                "{}: std {}",
                spec.name,
                std_of(p)
            ),
        }
    }
}

#[test]
fn ngpt_init_is_unit_norm_with_effective_scales_at_init() {
    let cfg = tiny(Arch::Ngpt, NormKind::RmsNorm, Activation::Swiglu, false);
    for (p, spec) in init_params(&cfg, 1).iter().zip(cfg.params()) {
        if let Some(s) = spec.scaled {
            assert!(
                p.iter().all(|&x| (x * s.factor() - s.init).abs() < 1e-12),
                "{}",
                spec.name
            );
        }
        if let Some(unit) = spec.unit_norm {
            let (r, c) = (spec.shape[0], spec.shape[1]);
            let (count, len) = match unit {
                UnitNorm::Rows => (r, c),
                UnitNorm::Cols => (c, r),
            };
            for v in 0..count {
                let n: f64 = (0..len)
                    .map(|k| {
                        let i = match unit {
                            UnitNorm::Rows => v * c + k,
                            UnitNorm::Cols => k * c + v,
                        };
                        p[i] * p[i]
                    })
                    .sum::<f64>()
                    .sqrt();
                assert!(
                    (n - 1.0).abs() < 1e-12,
                    "{} vector {v} has norm {n}",
                    spec.name
                );
            }
        }
    }
}
