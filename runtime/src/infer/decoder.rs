//! One sequence decoded token by token: each step runs the new token through
//! every block against the keys and values cached for the earlier ones.

use super::kernels::{dot, gelu, l2norm, layernorm, matvec, rmsnorm, silu, softmax, Rope};
use super::weights::{Model, Norm};
use super::InferError;
use gsc_compiler::plan::{Activation, Arch, NormKind};

/// A model's decoding state for one sequence: the KV cache and the buffers
/// one step works in.
pub struct Decoder<'m> {
    model: &'m Model,
    rope: Rope,
    /// Positions filled in the cache.
    len: usize,
    /// Per layer, `[context, kv_heads, head_dim]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    s: Scratch,
}

/// Activations of the token in flight.
struct Scratch {
    h: Vec<f32>,
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    out: Vec<f32>,
    up: Vec<f32>,
    gate: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
}

impl<'m> Decoder<'m> {
    pub fn new(model: &'m Model) -> Decoder<'m> {
        let c = &model.cfg;
        let cache = vec![0.0; c.context * c.kv_dim()];
        Decoder {
            model,
            rope: Rope::new(c.context, c.head_dim, c.rope_base),
            len: 0,
            keys: vec![cache.clone(); c.layers],
            values: vec![cache; c.layers],
            s: Scratch {
                h: vec![0.0; c.d_model],
                x: vec![0.0; c.d_model],
                q: vec![0.0; c.q_dim()],
                k: vec![0.0; c.kv_dim()],
                v: vec![0.0; c.kv_dim()],
                att: vec![0.0; c.q_dim()],
                out: vec![0.0; c.d_model],
                up: vec![0.0; c.ffn],
                gate: vec![0.0; c.ffn],
                scores: vec![0.0; c.context],
                logits: vec![0.0; c.vocab],
            },
        }
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache holds: the model's context.
    pub fn context(&self) -> usize {
        self.model.cfg.context
    }

    /// Forgets the sequence.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `token` at the next position and returns the logits of the
    /// token after it.
    pub fn step(&mut self, token: u32) -> Result<&[f32], InferError> {
        let m = self.model;
        let c = &m.cfg;
        if token as usize >= c.vocab {
            return Err(InferError::Token {
                token,
                vocab: c.vocab,
            });
        }
        if self.len == c.context {
            return Err(InferError::Full { context: c.context });
        }
        let (pos, d, hd) = (self.len, c.d_model, c.head_dim);
        let s = &mut self.s;
        s.h.copy_from_slice(&m.tok_emb[token as usize * d..][..d]);
        for (l, layer) in m.layers.iter().enumerate() {
            // Attention.
            match &layer.norms {
                Some((attn_norm, _)) => norm(c.norm, c.norm_eps, attn_norm, &s.h, &mut s.x),
                None => s.x.copy_from_slice(&s.h),
            }
            matvec(&layer.wq, &s.x, &mut s.q);
            matvec(&layer.wk, &s.x, &mut s.k);
            matvec(&layer.wv, &s.x, &mut s.v);
            self.rope.apply(&mut s.q, pos);
            self.rope.apply(&mut s.k, pos);
            if let Some(sphere) = &layer.sphere {
                s.q.chunks_exact_mut(hd).for_each(l2norm);
                s.k.chunks_exact_mut(hd).for_each(l2norm);
                if c.kv_heads == c.heads {
                    for ((q, k), &f) in s.q.iter_mut().zip(&mut s.k).zip(&sphere.s_qk) {
                        *q *= f;
                        *k *= f;
                    }
                } else {
                    // A shared kv head: both factors of q·k go on q (as in training).
                    for (q, &f) in s.q.iter_mut().zip(&sphere.s_qk) {
                        *q *= f * f;
                    }
                }
            }
            let kv = c.kv_dim();
            self.keys[l][pos * kv..][..kv].copy_from_slice(&s.k);
            self.values[l][pos * kv..][..kv].copy_from_slice(&s.v);
            let scale = match c.arch {
                Arch::Gpt => 1.0 / (hd as f32).sqrt(),
                Arch::Ngpt => (hd as f32).sqrt(),
            };
            let group = c.heads / c.kv_heads;
            for h in 0..c.heads {
                let kvh = h / group;
                let q = &s.q[h * hd..][..hd];
                let scores = &mut s.scores[..=pos];
                for (u, sc) in scores.iter_mut().enumerate() {
                    *sc = dot(q, &self.keys[l][u * kv + kvh * hd..][..hd]) * scale;
                }
                softmax(scores);
                let y = &mut s.att[h * hd..][..hd];
                y.fill(0.0);
                for (u, &p) in scores.iter().enumerate() {
                    let v = &self.values[l][u * kv + kvh * hd..][..hd];
                    for (y, &v) in y.iter_mut().zip(v) {
                        *y += p * v;
                    }
                }
            }
            matvec(&layer.wo, &s.att, &mut s.out);
            match &layer.sphere {
                Some(sphere) => sphere_step(&mut s.h, &mut s.out, &sphere.alpha_attn),
                None => add(&mut s.h, &s.out),
            }

            // MLP.
            match &layer.norms {
                Some((_, mlp_norm)) => norm(c.norm, c.norm_eps, mlp_norm, &s.h, &mut s.x),
                None => s.x.copy_from_slice(&s.h),
            }
            matvec(&layer.w_up, &s.x, &mut s.up);
            if let Some(w_gate) = &layer.w_gate {
                matvec(w_gate, &s.x, &mut s.gate);
            }
            match (&layer.sphere, c.activation) {
                (Some(sphere), _) => {
                    for (((u, &g), &su), &sv) in
                        s.up.iter_mut()
                            .zip(&s.gate)
                            .zip(&sphere.s_u)
                            .zip(&sphere.s_v)
                    {
                        *u = *u * su * silu(g * sv);
                    }
                }
                (None, Activation::Swiglu) => {
                    for (u, &g) in s.up.iter_mut().zip(&s.gate) {
                        *u *= silu(g);
                    }
                }
                (None, Activation::Gelu) => s.up.iter_mut().for_each(|u| *u = gelu(*u)),
            }
            matvec(&layer.w_down, &s.up, &mut s.out);
            match &layer.sphere {
                Some(sphere) => sphere_step(&mut s.h, &mut s.out, &sphere.alpha_mlp),
                None => add(&mut s.h, &s.out),
            }
        }
        match &m.final_norm {
            Some(n) => norm(c.norm, c.norm_eps, n, &s.h, &mut s.x),
            None => s.x.copy_from_slice(&s.h),
        }
        matvec(
            m.lm_head.as_ref().unwrap_or(&m.tok_emb),
            &s.x,
            &mut s.logits,
        );
        if let Some(s_z) = &m.s_z {
            for (z, &f) in s.logits.iter_mut().zip(s_z) {
                *z *= f;
            }
        }
        self.len += 1;
        Ok(&self.s.logits)
    }
}

/// gpt's pre-norm: `norm(h) · gain (+ bias)`.
fn norm(kind: NormKind, eps: f64, n: &Norm, h: &[f32], out: &mut [f32]) {
    match kind {
        NormKind::RmsNorm => rmsnorm(h, eps, out),
        NormKind::LayerNorm => layernorm(h, eps, out),
    }
    for (o, &g) in out.iter_mut().zip(&n.gain) {
        *o *= g;
    }
    if let Some(b) = &n.bias {
        add(out, b);
    }
}

fn add(h: &mut [f32], y: &[f32]) {
    for (h, &y) in h.iter_mut().zip(y) {
        *h += y;
    }
}

/// nGPT's step along the sphere: `h ← Norm(h + α ⊙ (Norm(y) − h))`.
fn sphere_step(h: &mut [f32], y: &mut [f32], alpha: &[f32]) {
    l2norm(y);
    for ((h, &y), &a) in h.iter_mut().zip(y.iter()).zip(alpha) {
        *h += a * (y - *h);
    }
    l2norm(h);
}
