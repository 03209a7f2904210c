//! The concrete shape of one stage's model: every dimension resolved to a number,
//! and the full list of parameter tensors derived from it.
//!
//! This is the contract between the front end and everything after it (graph
//! builder, growth, checkpoints), so it holds only plain data.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Pre-norm decoder with RoPE (growth.md, "gpt").
    Gpt,
    /// The normalised transformer (growth.md, "ngpt").
    Ngpt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Gelu,
    /// `down(silu(gate(x)) ⊙ up(x))`; nGPT always uses this form.
    Swiglu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    RmsNorm,
    LayerNorm,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab: usize,
    pub context: usize,
    pub d_model: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub ffn: usize,
    pub activation: Activation,
    /// Ignored for nGPT, which has no norm layers.
    pub norm: NormKind,
    /// Ignored for nGPT, whose head is always untied.
    pub tied: bool,
    pub rope_base: f64,
    /// RMSNorm / LayerNorm epsilon (gpt). Width growth scales it by d/d′, so
    /// that the grown norm equals the old one exactly (rms(Eh)² = rms(h)²·d/d′).
    pub norm_eps: f64,
    /// Standard deviation of the normal init of weight matrices (gpt); nGPT
    /// normalises its matrices after init, so only the direction matters there.
    pub init_std: f64,
}

/// What a parameter is, in the field's words: growth, weight decay and the
/// nGPT renormalisation all key on this, never on the name string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    TokenEmbedding,
    LmHead,
    Wq,
    Wk,
    Wv,
    Wo,
    /// Up projection (GELU MLP's only input matrix; SwiGLU's `u`).
    WUp,
    /// SwiGLU's gated branch (nGPT's `v`).
    WGate,
    WDown,
    NormGain,
    NormBias,
    /// nGPT learned vectors, stored as `p` with effective value `p · init / scale`.
    AlphaAttn,
    AlphaMlp,
    SQk,
    SU,
    SV,
    SZ,
}

/// Which vectors of a matrix nGPT keeps on the unit sphere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitNorm {
    /// Every row (a vector along the last axis) has norm 1.
    Rows,
    /// Every column (a vector along the first axis) has norm 1.
    Cols,
}

/// nGPT's stored-vs-effective scaling: effective = stored · init / scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaled {
    pub init: f64,
    pub scale: f64,
}

impl Scaled {
    pub fn factor(&self) -> f64 {
        self.init / self.scale
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Dotted path, e.g. `layers.2.attn.wq`; the key in checkpoints.
    pub name: String,
    pub role: ParamRole,
    /// Block index for per-layer parameters.
    pub layer: Option<usize>,
    /// Row-major shape; matrices are `[out, in]` like `torch.nn.Linear.weight`.
    pub shape: Vec<usize>,
    pub weight_decay: bool,
    pub unit_norm: Option<UnitNorm>,
    pub scaled: Option<Scaled>,
    /// Counted in N of `6·N + 12·L·d·ctx` (everything but the embedding and the head).
    pub non_embedding: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl ModelConfig {
    /// This model with `axis` grown to `size`: multi-head attention stays
    /// multi-head (K/V heads follow the query heads). The norm epsilon is
    /// kept, which is what whole copies of the residual stream (HyperCloning,
    /// `copy`) need: they keep every mean and variance. See [`Self::grown_by`].
    pub fn grown(&self, axis: super::Axis, size: usize) -> ModelConfig {
        let mut m = self.clone();
        axis.set(&mut m, size);
        if axis == super::Axis::Heads && self.kv_heads == self.heads {
            m.kv_heads = size;
        }
        m
    }

    /// This model grown by `method`: as [`Self::grown`], and where the method
    /// shrinks the residual stream's mean square (the isometric map and
    /// zero-extension of `d_model`: ms(Eh) = ms(h)·d/d′), the norm epsilon
    /// shrinks with it, so that the norms see the same `ms + eps` up to that
    /// factor, which their gains absorb.
    pub fn grown_by(&self, axis: super::Axis, size: usize, method: &super::Method) -> ModelConfig {
        let mut m = self.grown(axis, size);
        let shrinks = matches!(
            method,
            super::Method::Isometric { .. } | super::Method::Zero
        );
        if axis == super::Axis::DModel && shrinks {
            m.norm_eps = self.norm_eps * self.d_model as f64 / size as f64;
        }
        m
    }

    /// Width of the attention's inner space (q), which need not equal d_model
    /// once heads have grown on their own.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    pub fn head_untied(&self) -> bool {
        self.arch == Arch::Ngpt || !self.tied
    }

    pub fn gated_mlp(&self) -> bool {
        self.arch == Arch::Ngpt || self.activation == Activation::Swiglu
    }

    /// Every parameter tensor, in a fixed order (the checkpoint and buffer order).
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        let d = self.d_model;
        let ngpt = self.arch == Arch::Ngpt;
        let matrix = |name: String, role, layer, shape: Vec<usize>, unit| ParamSpec {
            name,
            role,
            layer,
            shape,
            weight_decay: !ngpt,
            unit_norm: if ngpt { Some(unit) } else { None },
            scaled: None,
            non_embedding: true,
        };
        let inv_sqrt_d = 1.0 / (d as f64).sqrt();
        let vector = |name: String, role, layer, len: usize, scaled: Option<Scaled>| ParamSpec {
            name,
            role,
            layer,
            shape: vec![len],
            weight_decay: false,
            unit_norm: None,
            scaled,
            non_embedding: true,
        };
        let mut emb = matrix(
            "tok_emb".into(),
            ParamRole::TokenEmbedding,
            None,
            vec![self.vocab, d],
            UnitNorm::Rows,
        );
        emb.non_embedding = false;
        out.push(emb);
        for l in 0..self.layers {
            let p = |s: &str| format!("layers.{l}.{s}");
            let layer = Some(l);
            if !ngpt {
                out.push(vector(
                    p("attn_norm.gain"),
                    ParamRole::NormGain,
                    layer,
                    d,
                    None,
                ));
                if self.norm == NormKind::LayerNorm {
                    out.push(vector(
                        p("attn_norm.bias"),
                        ParamRole::NormBias,
                        layer,
                        d,
                        None,
                    ));
                }
            }
            let q = self.q_dim();
            let kv = self.kv_dim();
            out.push(matrix(
                p("attn.wq"),
                ParamRole::Wq,
                layer,
                vec![q, d],
                UnitNorm::Rows,
            ));
            out.push(matrix(
                p("attn.wk"),
                ParamRole::Wk,
                layer,
                vec![kv, d],
                UnitNorm::Rows,
            ));
            out.push(matrix(
                p("attn.wv"),
                ParamRole::Wv,
                layer,
                vec![kv, d],
                UnitNorm::Rows,
            ));
            out.push(matrix(
                p("attn.wo"),
                ParamRole::Wo,
                layer,
                vec![d, q],
                UnitNorm::Cols,
            ));
            if ngpt {
                out.push(vector(
                    p("attn.s_qk"),
                    ParamRole::SQk,
                    layer,
                    q,
                    Some(Scaled {
                        init: 1.0,
                        scale: inv_sqrt_d,
                    }),
                ));
                out.push(vector(
                    p("attn.alpha"),
                    ParamRole::AlphaAttn,
                    layer,
                    d,
                    Some(Scaled {
                        init: 0.05,
                        scale: inv_sqrt_d,
                    }),
                ));
            } else {
                out.push(vector(
                    p("mlp_norm.gain"),
                    ParamRole::NormGain,
                    layer,
                    d,
                    None,
                ));
                if self.norm == NormKind::LayerNorm {
                    out.push(vector(
                        p("mlp_norm.bias"),
                        ParamRole::NormBias,
                        layer,
                        d,
                        None,
                    ));
                }
            }
            let f = self.ffn;
            out.push(matrix(
                p("mlp.w_up"),
                ParamRole::WUp,
                layer,
                vec![f, d],
                UnitNorm::Rows,
            ));
            if self.gated_mlp() {
                out.push(matrix(
                    p("mlp.w_gate"),
                    ParamRole::WGate,
                    layer,
                    vec![f, d],
                    UnitNorm::Rows,
                ));
            }
            out.push(matrix(
                p("mlp.w_down"),
                ParamRole::WDown,
                layer,
                vec![d, f],
                UnitNorm::Cols,
            ));
            if ngpt {
                out.push(vector(
                    p("mlp.s_u"),
                    ParamRole::SU,
                    layer,
                    f,
                    Some(Scaled {
                        init: 1.0,
                        scale: 1.0,
                    }),
                ));
                out.push(vector(
                    p("mlp.s_v"),
                    ParamRole::SV,
                    layer,
                    f,
                    Some(Scaled {
                        init: 1.0,
                        scale: 1.0,
                    }),
                ));
                out.push(vector(
                    p("mlp.alpha"),
                    ParamRole::AlphaMlp,
                    layer,
                    d,
                    Some(Scaled {
                        init: 0.05,
                        scale: inv_sqrt_d,
                    }),
                ));
            }
        }
        if !ngpt {
            out.push(vector(
                "final_norm.gain".into(),
                ParamRole::NormGain,
                None,
                d,
                None,
            ));
            if self.norm == NormKind::LayerNorm {
                out.push(vector(
                    "final_norm.bias".into(),
                    ParamRole::NormBias,
                    None,
                    d,
                    None,
                ));
            }
        }
        if self.head_untied() {
            let mut head = matrix(
                "lm_head".into(),
                ParamRole::LmHead,
                None,
                vec![self.vocab, d],
                UnitNorm::Rows,
            );
            head.non_embedding = false;
            out.push(head);
        }
        if ngpt {
            out.push(vector(
                "s_z".into(),
                ParamRole::SZ,
                None,
                self.vocab,
                Some(Scaled {
                    init: 1.0,
                    scale: inv_sqrt_d,
                }),
            ));
        }
        out
    }

    pub fn param_count(&self) -> usize {
        self.params().iter().map(ParamSpec::numel).sum()
    }

    pub fn non_embedding_params(&self) -> usize {
        self.params()
            .iter()
            .filter(|p| p.non_embedding)
            .map(ParamSpec::numel)
            .sum()
    }

    /// PaLM's count, used everywhere in gsc (performance.md):
    /// 6·N_non-embedding + 12·layers·d_model·context.
    pub fn flops_per_token(&self) -> f64 {
        6.0 * self.non_embedding_params() as f64
            + 12.0 * (self.layers * self.d_model * self.context) as f64
    }
}
