//! `build_forward`: one stage's model as a graph, for both architectures
//! (growth.md, "Architectures").

use super::ir::*;
use crate::plan::{Activation, Arch, Axis, ModelConfig, NormKind, ParamRole, StagePlan};

/// Which gates a stage's graph has (see [`crate::plan::Gate`]): inputs that
/// multiply every head's attention output before Wo (`heads`, `[heads]`) or
/// every FFN unit's activation before Wdown (`ffn`, `[ffn]`), in every layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gates {
    pub heads: bool,
    pub ffn: bool,
}

impl Gates {
    /// The gates of `stage`'s ramps.
    pub fn of(stage: &StagePlan) -> Gates {
        Gates {
            heads: stage.gate(Axis::Heads).is_some(),
            ffn: stage.gate(Axis::Ffn).is_some(),
        }
    }
}

/// The forward graph of `cfg` on `batch` sequences of `cfg.context` tokens.
/// Inputs: every parameter of `cfg.params()` in that order, then tokens and
/// targets; outputs: the mean cross-entropy loss and the logits.
pub fn build_forward(cfg: &ModelConfig, batch: usize) -> Result<Graph, GraphError> {
    build_forward_gated(cfg, batch, Gates::default())
}

/// [`build_forward`] with `gates`: after tokens and targets the graph has
/// the inputs `HeadGate` and/or `FfnGate`.
pub fn build_forward_gated(
    cfg: &ModelConfig,
    batch: usize,
    gates: Gates,
) -> Result<Graph, GraphError> {
    validate(cfg, batch)?;
    let mut b = Builder::new(cfg, batch);
    if gates.heads {
        let g = b.g.add_input(Input::HeadGate, vec![cfg.heads], DType::F32);
        // [heads, 1]: broadcasts over each head's head_dim values and the tokens.
        let shape = vec![cfg.heads, 1];
        b.head_gate = Some(b.g.add1(Op::Reshape { shape }, vec![g])?);
    }
    if gates.ffn {
        b.ffn_gate = Some(b.g.add_input(Input::FfnGate, vec![cfg.ffn], DType::F32));
    }
    let logits = match cfg.arch {
        Arch::Gpt => b.gpt()?,
        Arch::Ngpt => b.ngpt()?,
    };
    let targets = b.targets;
    let loss = b.g.add1(Op::CrossEntropy, vec![logits, targets])?;
    b.g.outputs = vec![(Output::Loss, loss), (Output::Logits, logits)];
    Ok(b.g)
}

fn validate(cfg: &ModelConfig, batch: usize) -> Result<(), GraphError> {
    let bad = |s: &str| Err(GraphError::Model(s.to_string()));
    let dims = [
        cfg.vocab,
        cfg.context,
        cfg.d_model,
        cfg.heads,
        cfg.kv_heads,
        cfg.head_dim,
        cfg.ffn,
        batch,
    ];
    if dims.contains(&0) {
        return bad("every dimension and the batch must be positive");
    }
    if !cfg.heads.is_multiple_of(cfg.kv_heads) {
        return bad("heads must be a multiple of kv_heads");
    }
    if !cfg.head_dim.is_multiple_of(2) {
        return bad("RoPE needs an even head_dim");
    }
    Ok(())
}

struct Builder<'a> {
    cfg: &'a ModelConfig,
    g: Graph,
    /// `params[i]` is the input tensor of `cfg.params()[i]`.
    params: Vec<TensorId>,
    roles: Vec<(ParamRole, Option<usize>, String)>,
    tokens: TensorId,
    targets: TensorId,
    n: usize,
    batch: usize,
    /// The head gate as `[heads, 1]`, if the stage has one.
    head_gate: Option<TensorId>,
    /// The FFN gate `[ffn]`, if the stage has one.
    ffn_gate: Option<TensorId>,
}

impl<'a> Builder<'a> {
    fn new(cfg: &'a ModelConfig, batch: usize) -> Self {
        let mut g = Graph::default();
        let specs = cfg.params();
        let params = specs
            .iter()
            .enumerate()
            .map(|(i, p)| g.add_input(Input::Param(i), p.shape.clone(), DType::F32))
            .collect();
        g.params = specs
            .iter()
            .map(|p| ParamInfo {
                name: p.name.clone(),
                shape: p.shape.clone(),
            })
            .collect();
        let n = batch * cfg.context;
        let tokens = g.add_input(Input::Tokens, vec![n], DType::I32);
        let targets = g.add_input(Input::Targets, vec![n], DType::I32);
        let roles = specs
            .iter()
            .map(|p| (p.role, p.layer, p.name.clone()))
            .collect();
        Builder {
            cfg,
            g,
            params,
            roles,
            tokens,
            targets,
            n,
            batch,
            head_gate: None,
            ffn_gate: None,
        }
    }

    /// Attention output `[n, heads, head_dim]` times the head gate, if any.
    fn gate_heads(&mut self, y: TensorId) -> Result<TensorId, GraphError> {
        match self.head_gate {
            Some(g) => self.bin(BinaryOp::Mul, y, g),
            None => Ok(y),
        }
    }

    /// FFN activation `[n, ffn]` times the FFN gate, if any.
    fn gate_ffn(&mut self, a: TensorId) -> Result<TensorId, GraphError> {
        match self.ffn_gate {
            Some(g) => self.bin(BinaryOp::Mul, a, g),
            None => Ok(a),
        }
    }

    /// The parameter with this role in `layer` whose name ends with `suffix`.
    fn param(
        &self,
        role: ParamRole,
        layer: Option<usize>,
        suffix: &str,
    ) -> Result<TensorId, GraphError> {
        self.roles
            .iter()
            .position(|(r, l, name)| *r == role && *l == layer && name.ends_with(suffix))
            .map(|i| self.params[i])
            .ok_or_else(|| {
                GraphError::Model(format!(
                    "no parameter {suffix} ({role:?}) in layer {layer:?}"
                ))
            })
    }

    /// `x · Wᵀ` for a `[out, in]` weight.
    fn linear(&mut self, x: TensorId, w: TensorId) -> Result<TensorId, GraphError> {
        self.g.add1(
            Op::MatMul {
                ta: false,
                tb: true,
            },
            vec![x, w],
        )
    }

    fn bin(&mut self, op: BinaryOp, a: TensorId, b: TensorId) -> Result<TensorId, GraphError> {
        self.g.add1(Op::Binary(op), vec![a, b])
    }

    fn heads(&mut self, x: TensorId, heads: usize) -> Result<TensorId, GraphError> {
        let shape = vec![self.n, heads, self.cfg.head_dim];
        self.g.add1(Op::Reshape { shape }, vec![x])
    }

    fn flat(&mut self, x: TensorId, width: usize) -> Result<TensorId, GraphError> {
        self.g.add1(
            Op::Reshape {
                shape: vec![self.n, width],
            },
            vec![x],
        )
    }

    fn rope(&mut self, x: TensorId) -> Result<TensorId, GraphError> {
        let r = Rope {
            seq: self.cfg.context,
            base: self.cfg.rope_base,
            inverse: false,
        };
        self.g.add1(Op::Rope(r), vec![x])
    }

    fn attention(
        &mut self,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        scale: f64,
    ) -> Result<TensorId, GraphError> {
        let a = Attn {
            batch: self.batch,
            seq: self.cfg.context,
            heads: self.cfg.heads,
            kv_heads: self.cfg.kv_heads,
            head_dim: self.cfg.head_dim,
            scale,
        };
        self.g.add1(Op::Attention(a), vec![q, k, v])
    }

    /// gpt's pre-norm: `norm(x) · gain (+ bias)`.
    fn norm(
        &mut self,
        x: TensorId,
        layer: Option<usize>,
        prefix: &str,
    ) -> Result<TensorId, GraphError> {
        let gain = self.param(ParamRole::NormGain, layer, &format!("{prefix}.gain"))?;
        let (op, bias) = match self.cfg.norm {
            NormKind::RmsNorm => (
                Op::RmsNorm {
                    eps: self.cfg.norm_eps,
                },
                None,
            ),
            NormKind::LayerNorm => (
                Op::LayerNorm {
                    eps: self.cfg.norm_eps,
                },
                Some(self.param(ParamRole::NormBias, layer, &format!("{prefix}.bias"))?),
            ),
        };
        let xn = self.g.add1(op, vec![x])?;
        let y = self.bin(BinaryOp::Mul, xn, gain)?;
        match bias {
            Some(b) => self.bin(BinaryOp::Add, y, b),
            None => Ok(y),
        }
    }

    fn gpt(&mut self) -> Result<TensorId, GraphError> {
        let cfg = self.cfg;
        let emb = self.param(ParamRole::TokenEmbedding, None, "tok_emb")?;
        let mut h = self.g.add1(Op::Embedding, vec![emb, self.tokens])?;
        self.g.set_label(h, "h0");
        for l in 0..cfg.layers {
            let at = Some(l);
            let x = self.norm(h, at, "attn_norm")?;
            let wq = self.param(ParamRole::Wq, at, "wq")?;
            let wk = self.param(ParamRole::Wk, at, "wk")?;
            let wv = self.param(ParamRole::Wv, at, "wv")?;
            let wo = self.param(ParamRole::Wo, at, "wo")?;
            let q = self.linear(x, wq)?;
            let k = self.linear(x, wk)?;
            let v = self.linear(x, wv)?;
            let q = self.heads(q, cfg.heads)?;
            let k = self.heads(k, cfg.kv_heads)?;
            let v = self.heads(v, cfg.kv_heads)?;
            let q = self.rope(q)?;
            let k = self.rope(k)?;
            let y = self.attention(q, k, v, 1.0 / (cfg.head_dim as f64).sqrt())?;
            let y = self.gate_heads(y)?;
            let y = self.flat(y, cfg.q_dim())?;
            let o = self.linear(y, wo)?;
            h = self.bin(BinaryOp::Add, h, o)?;
            self.g.set_label(h, format!("layers.{l}.h_attn"));

            let x = self.norm(h, at, "mlp_norm")?;
            let up = self.param(ParamRole::WUp, at, "w_up")?;
            let down = self.param(ParamRole::WDown, at, "w_down")?;
            let a = match cfg.activation {
                Activation::Gelu => {
                    let u = self.linear(x, up)?;
                    self.g.add1(Op::Unary(UnaryOp::Gelu), vec![u])?
                }
                Activation::Swiglu => {
                    let gate = self.param(ParamRole::WGate, at, "w_gate")?;
                    let u = self.linear(x, up)?;
                    let gt = self.linear(x, gate)?;
                    let s = self.g.add1(Op::Unary(UnaryOp::Silu), vec![gt])?;
                    self.bin(BinaryOp::Mul, s, u)?
                }
            };
            let a = self.gate_ffn(a)?;
            let m = self.linear(a, down)?;
            h = self.bin(BinaryOp::Add, h, m)?;
            self.g.set_label(h, format!("layers.{l}.h_mlp"));
        }
        let x = self.norm(h, None, "final_norm")?;
        let head = if cfg.head_untied() {
            self.param(ParamRole::LmHead, None, "lm_head")?
        } else {
            emb
        };
        self.linear(x, head)
    }

    /// A stored nGPT vector times its constant factor: the effective value
    /// (`stored · init / scale`, times `extra`).
    fn effective(&mut self, p: TensorId, factor: f64) -> Result<TensorId, GraphError> {
        if factor == 1.0 {
            return Ok(p);
        }
        let c = self.g.constant(factor);
        self.bin(BinaryOp::Mul, p, c)
    }

    fn scaled_factor(&self, role: ParamRole, layer: Option<usize>) -> Result<f64, GraphError> {
        self.cfg
            .params()
            .into_iter()
            .find(|p| p.role == role && p.layer == layer)
            .and_then(|p| p.scaled)
            .map(|s| s.factor())
            .ok_or_else(|| GraphError::Model(format!("{role:?} is not a scaled vector")))
    }

    /// `Norm(h + α ⊙ (Norm(x) − h))`, nGPT's step along the sphere.
    fn sphere_step(
        &mut self,
        h: TensorId,
        x: TensorId,
        alpha: TensorId,
    ) -> Result<TensorId, GraphError> {
        let xn = self.g.add1(Op::L2Norm { axis: 1 }, vec![x])?;
        let diff = self.bin(BinaryOp::Sub, xn, h)?;
        let step = self.bin(BinaryOp::Mul, alpha, diff)?;
        let moved = self.bin(BinaryOp::Add, h, step)?;
        self.g.add1(Op::L2Norm { axis: 1 }, vec![moved])
    }

    fn ngpt(&mut self) -> Result<TensorId, GraphError> {
        let cfg = self.cfg;
        let d = cfg.d_model;
        let emb = self.param(ParamRole::TokenEmbedding, None, "tok_emb")?;
        // Rows of tok_emb are unit vectors: h0 is on the sphere already.
        let mut h = self.g.add1(Op::Embedding, vec![emb, self.tokens])?;
        self.g.set_label(h, "h0");
        for l in 0..cfg.layers {
            let at = Some(l);
            let wq = self.param(ParamRole::Wq, at, "wq")?;
            let wk = self.param(ParamRole::Wk, at, "wk")?;
            let wv = self.param(ParamRole::Wv, at, "wv")?;
            let wo = self.param(ParamRole::Wo, at, "wo")?;
            let q = self.linear(h, wq)?;
            let k = self.linear(h, wk)?;
            let v = self.linear(h, wv)?;
            let q = self.heads(q, cfg.heads)?;
            let k = self.heads(k, cfg.kv_heads)?;
            let v = self.heads(v, cfg.kv_heads)?;
            let q = self.rope(q)?;
            let k = self.rope(k)?;
            let q = self.g.add1(Op::L2Norm { axis: 2 }, vec![q])?;
            let k = self.g.add1(Op::L2Norm { axis: 2 }, vec![k])?;
            let sqk_p = self.param(ParamRole::SQk, at, "s_qk")?;
            let sqk_p = self.g.add1(
                Op::Reshape {
                    shape: vec![cfg.heads, cfg.head_dim],
                },
                vec![sqk_p],
            )?;
            let sqk = self.effective(sqk_p, self.scaled_factor(ParamRole::SQk, at)?)?;
            let (q, k) = if cfg.kv_heads == cfg.heads {
                (
                    self.bin(BinaryOp::Mul, q, sqk)?,
                    self.bin(BinaryOp::Mul, k, sqk)?,
                )
            } else {
                // With GQA a kv head serves several query heads, each with its
                // own s_qk: q·k sees s_qk twice, so both factors go on q.
                let s2 = self.bin(BinaryOp::Mul, sqk, sqk)?;
                (self.bin(BinaryOp::Mul, q, s2)?, k)
            };
            let y = self.attention(q, k, v, (cfg.head_dim as f64).sqrt())?;
            let y = self.gate_heads(y)?;
            let y = self.flat(y, cfg.q_dim())?;
            let o = self.linear(y, wo)?;
            let alpha_p = self.param(ParamRole::AlphaAttn, at, "attn.alpha")?;
            let alpha = self.effective(alpha_p, self.scaled_factor(ParamRole::AlphaAttn, at)?)?;
            h = self.sphere_step(h, o, alpha)?;
            self.g.set_label(h, format!("layers.{l}.h_attn"));

            let up = self.param(ParamRole::WUp, at, "w_up")?;
            let gate = self.param(ParamRole::WGate, at, "w_gate")?;
            let down = self.param(ParamRole::WDown, at, "w_down")?;
            let su_p = self.param(ParamRole::SU, at, "s_u")?;
            let sv_p = self.param(ParamRole::SV, at, "s_v")?;
            let u = self.linear(h, up)?;
            let v = self.linear(h, gate)?;
            let su = self.effective(su_p, self.scaled_factor(ParamRole::SU, at)?)?;
            let sv_factor = self.scaled_factor(ParamRole::SV, at)? * (d as f64).sqrt();
            let sv = self.effective(sv_p, sv_factor)?;
            let u = self.bin(BinaryOp::Mul, u, su)?;
            let v = self.bin(BinaryOp::Mul, v, sv)?;
            let act = self.g.add1(Op::Unary(UnaryOp::Silu), vec![v])?;
            let x = self.bin(BinaryOp::Mul, u, act)?;
            let x = self.gate_ffn(x)?;
            let m = self.linear(x, down)?;
            let alpha_p = self.param(ParamRole::AlphaMlp, at, "mlp.alpha")?;
            let alpha = self.effective(alpha_p, self.scaled_factor(ParamRole::AlphaMlp, at)?)?;
            h = self.sphere_step(h, m, alpha)?;
            self.g.set_label(h, format!("layers.{l}.h_mlp"));
        }
        let head = self.param(ParamRole::LmHead, None, "lm_head")?;
        let z = self.linear(h, head)?;
        let sz_p = self.param(ParamRole::SZ, None, "s_z")?;
        let sz = self.effective(sz_p, self.scaled_factor(ParamRole::SZ, None)?)?;
        self.bin(BinaryOp::Mul, z, sz)
    }
}
