//! A checkpoint's parameters, arranged per layer for decoding; nGPT's stored
//! vectors are turned into their effective values here, once.

use super::InferError;
use crate::checkpoint::Checkpoint;
use gsc_compiler::plan::{Arch, ModelConfig, ParamRole, ParamSpec};

/// One pre-norm (gpt): gain, and bias for LayerNorm.
pub(super) struct Norm {
    pub gain: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// nGPT's learned vectors of one block, effective values.
pub(super) struct Sphere {
    pub alpha_attn: Vec<f32>,
    pub alpha_mlp: Vec<f32>,
    /// `[heads, head_dim]`.
    pub s_qk: Vec<f32>,
    pub s_u: Vec<f32>,
    /// Includes nGPT's extra `√d_model`.
    pub s_v: Vec<f32>,
}

pub(super) struct Layer {
    /// gpt only: before attention and before the MLP.
    pub norms: Option<(Norm, Norm)>,
    pub sphere: Option<Sphere>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub wo: Vec<f32>,
    pub w_up: Vec<f32>,
    /// SwiGLU's gated branch.
    pub w_gate: Option<Vec<f32>>,
    pub w_down: Vec<f32>,
}

/// A model ready to decode: its shape and parameters.
pub struct Model {
    pub(super) cfg: ModelConfig,
    pub(super) tok_emb: Vec<f32>,
    pub(super) layers: Vec<Layer>,
    /// gpt only.
    pub(super) final_norm: Option<Norm>,
    /// The output head when it is not `tok_emb`.
    pub(super) lm_head: Option<Vec<f32>>,
    /// nGPT's logit scale, effective.
    pub(super) s_z: Option<Vec<f32>>,
}

impl Model {
    /// The parameters of `cfg` from `ck` (Adam's moments are ignored).
    pub fn from_checkpoint(ck: &Checkpoint, cfg: ModelConfig) -> Result<Model, InferError> {
        Model::build(cfg, |spec| Ok(ck.tensor(&spec.name, &spec.shape)?.to_vec()))
    }

    /// The model of `cfg` with `params` in the order of `cfg.params()`.
    pub fn from_params(cfg: ModelConfig, params: &[Vec<f32>]) -> Model {
        let specs = cfg.params();
        let at = |spec: &ParamSpec| specs.iter().position(|s| s.name == spec.name);
        Model::build(cfg.clone(), |spec| {
            Ok(params[at(spec).expect("a parameter of cfg")].clone())
        })
        .expect("in-memory parameters always load")
    }

    /// `fetch` gives each parameter's stored value.
    fn build(
        cfg: ModelConfig,
        fetch: impl Fn(&ParamSpec) -> Result<Vec<f32>, InferError>,
    ) -> Result<Model, InferError> {
        let specs = cfg.params();
        // A parameter's value as the forward pass uses it: nGPT's scaled
        // vectors are stored as `p` and used as `p · init / scale`.
        let value = |spec: &ParamSpec| -> Result<Vec<f32>, InferError> {
            let data = fetch(spec)?;
            Ok(match spec.scaled {
                Some(s) => scale(data, s.factor()),
                None => data,
            })
        };
        let find = |role: ParamRole, layer: Option<usize>, name: &str| {
            specs
                .iter()
                .find(|s| s.role == role && s.layer == layer && s.name.contains(name))
        };
        let get = |role: ParamRole, layer: Option<usize>| -> Result<Vec<f32>, InferError> {
            value(find(role, layer, "").expect("every block has its role's parameters"))
        };
        let maybe =
            |role: ParamRole, layer: Option<usize>| find(role, layer, "").map(value).transpose();
        let ngpt = cfg.arch == Arch::Ngpt;
        let norm = |prefix: &str, layer: Option<usize>| -> Result<Option<Norm>, InferError> {
            if ngpt {
                return Ok(None);
            }
            let gain = find(ParamRole::NormGain, layer, prefix).expect("gpt has its norms");
            Ok(Some(Norm {
                gain: value(gain)?,
                bias: find(ParamRole::NormBias, layer, prefix)
                    .map(value)
                    .transpose()?,
            }))
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let at = Some(l);
            let sphere = if ngpt {
                Some(Sphere {
                    alpha_attn: get(ParamRole::AlphaAttn, at)?,
                    alpha_mlp: get(ParamRole::AlphaMlp, at)?,
                    s_qk: get(ParamRole::SQk, at)?,
                    s_u: get(ParamRole::SU, at)?,
                    s_v: scale(get(ParamRole::SV, at)?, (cfg.d_model as f64).sqrt()),
                })
            } else {
                None
            };
            let norms = match (norm("attn_norm", at)?, norm("mlp_norm", at)?) {
                (Some(a), Some(m)) => Some((a, m)),
                _ => None,
            };
            layers.push(Layer {
                norms,
                sphere,
                wq: get(ParamRole::Wq, at)?,
                wk: get(ParamRole::Wk, at)?,
                wv: get(ParamRole::Wv, at)?,
                wo: get(ParamRole::Wo, at)?,
                w_up: get(ParamRole::WUp, at)?,
                w_gate: maybe(ParamRole::WGate, at)?,
                w_down: get(ParamRole::WDown, at)?,
            });
        }
        Ok(Model {
            tok_emb: get(ParamRole::TokenEmbedding, None)?,
            final_norm: norm("final_norm", None)?,
            lm_head: maybe(ParamRole::LmHead, None)?,
            s_z: maybe(ParamRole::SZ, None)?,
            layers,
            cfg,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
}

fn scale(v: Vec<f32>, factor: f64) -> Vec<f32> {
    v.into_iter().map(|x| (x as f64 * factor) as f32).collect()
}
