//! The Hugging Face side of an export: which architecture, its config, and
//! the name of every tensor.

use crate::pick::Picked;
use gsc_compiler::plan::{Activation, Arch, ModelConfig, NormKind};
use gsc_runtime::checkpoint::{save_plain, CheckpointError, TensorRef};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// gsc's forward pass in torch, for the variants Llama cannot express.
pub const MODELING: &str = include_str!("modeling_gsc.py");

pub struct HfModel {
    pub config: Value,
    /// Needs `modeling_gsc.py` (not a native transformers architecture).
    pub custom: bool,
    /// (gsc's name, the exported name) of every parameter.
    names: Vec<(String, String)>,
}

impl HfModel {
    pub fn of(picked: &Picked) -> HfModel {
        let c = &picked.model;
        let llama = c.arch == Arch::Gpt
            && c.norm == NormKind::RmsNorm
            && c.activation == Activation::Swiglu;
        let specs = c.params();
        let names = specs
            .iter()
            .map(|s| {
                let to = if llama {
                    llama_name(&s.name)
                } else if s.shape.len() == 2 {
                    // A torch Linear or Embedding holds it.
                    format!("{}.weight", s.name)
                } else {
                    s.name.clone()
                };
                (s.name.clone(), to)
            })
            .collect();
        let config = if llama {
            llama_config(c)
        } else {
            gsc_config(c)
        };
        HfModel {
            config,
            custom: !llama,
            names,
        }
    }

    pub fn write_weights(&self, picked: &Picked, path: &Path) -> Result<(), CheckpointError> {
        let specs = picked.model.params();
        let data = specs
            .iter()
            .map(|s| picked.ck.tensor(&s.name, &s.shape))
            .collect::<Result<Vec<_>, _>>()?;
        let tensors: Vec<TensorRef> = specs
            .iter()
            .zip(&self.names)
            .zip(&data)
            .map(|((s, (_, name)), data)| TensorRef {
                name,
                shape: &s.shape,
                data,
            })
            .collect();
        let info = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        save_plain(path, &tensors, info)
    }
}

/// transformers' `convert_llama_weights_to_hf` names; gsc's RoPE already
/// pairs coordinate j with j + head_dim/2 as Llama's `rotate_half` does, so
/// no row of wq or wk is permuted.
fn llama_name(gsc: &str) -> String {
    let Some(rest) = gsc.strip_prefix("layers.") else {
        return match gsc {
            "tok_emb" => "model.embed_tokens.weight",
            "final_norm.gain" => "model.norm.weight",
            "lm_head" => "lm_head.weight",
            other => unreachable!("a Llama-shaped gsc model has no {other}"),
        }
        .into();
    };
    let (layer, what) = rest.split_once('.').expect("layers.N.name");
    let hf = match what {
        "attn_norm.gain" => "input_layernorm",
        "mlp_norm.gain" => "post_attention_layernorm",
        "attn.wq" => "self_attn.q_proj",
        "attn.wk" => "self_attn.k_proj",
        "attn.wv" => "self_attn.v_proj",
        "attn.wo" => "self_attn.o_proj",
        "mlp.w_gate" => "mlp.gate_proj",
        "mlp.w_up" => "mlp.up_proj",
        "mlp.w_down" => "mlp.down_proj",
        other => unreachable!("a Llama-shaped gsc block has no {other}"),
    };
    format!("model.layers.{layer}.{hf}.weight")
}

/// The fields every export shares, under transformers' usual names.
fn common(c: &ModelConfig) -> Map<String, Value> {
    let v = json!({
        "vocab_size": c.vocab,
        "hidden_size": c.d_model,
        "intermediate_size": c.ffn,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.context,
        "rope_theta": c.rope_base,
        "tie_word_embeddings": !c.head_untied(),
        "torch_dtype": "float32",
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn llama_config(c: &ModelConfig) -> Value {
    let mut m = common(c);
    let extra = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        // Width growth scales gsc's epsilon: this is the grown model's own.
        "rms_norm_eps": c.norm_eps,
        "rope_parameters": { "rope_type": "default", "rope_theta": c.rope_base },
        "attention_bias": false,
        "mlp_bias": false,
        "attention_dropout": 0.0,
        "pretraining_tp": 1,
    });
    m.extend(extra.as_object().expect("an object").clone());
    Value::Object(m)
}

fn gsc_config(c: &ModelConfig) -> Value {
    let mut m = common(c);
    // nGPT's stored vectors are multiplied by these constants where used
    // (`stored · init / scale`); same for every block, keyed without `layers.N.`.
    let scales: Map<String, Value> = c
        .params()
        .iter()
        .filter_map(|s| {
            let f = s.scaled?.factor();
            let key = match s.layer {
                Some(l) => s.name.strip_prefix(&format!("layers.{l}."))?.to_owned(),
                None => s.name.clone(),
            };
            Some((key, json!(f)))
        })
        .collect();
    let extra = json!({
        "architectures": ["GscForCausalLM"],
        "model_type": "gsc",
        "auto_map": {
            "AutoConfig": "modeling_gsc.GscConfig",
            "AutoModelForCausalLM": "modeling_gsc.GscForCausalLM",
        },
        "arch": match c.arch { Arch::Gpt => "gpt", Arch::Ngpt => "ngpt" },
        "activation": match c.activation { Activation::Gelu => "gelu", Activation::Swiglu => "swiglu" },
        "norm": match c.norm { NormKind::RmsNorm => "rmsnorm", NormKind::LayerNorm => "layernorm" },
        "norm_eps": c.norm_eps,
        "ngpt_scales": scales,
    });
    m.extend(extra.as_object().expect("an object").clone());
    Value::Object(m)
}
