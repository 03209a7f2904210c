//! `gsc export RUN_DIR --to hf OUT`: a checkpoint as a Hugging Face model
//! directory — `config.json`, `model.safetensors`, the run's tokenizer and a
//! model card. A gpt with RMSNorm and SwiGLU is a native Llama; every other
//! variant ships `modeling_gsc.py`, gsc's forward pass in torch, loaded with
//! `trust_remote_code=True`.

mod hf;

use crate::pick::{pick, Picked};
use gsc_runtime::tokenizer::{Tokenizer, FILE as TOKENIZER_FILE};
use std::path::{Path, PathBuf};

pub struct ExportArgs {
    pub source: PathBuf,
    pub run: Option<String>,
    pub step: Option<u64>,
    pub out: PathBuf,
    /// Write into `out` even if it holds files.
    pub force: bool,
}

pub fn export(args: &ExportArgs) -> bool {
    match try_export(args) {
        Ok(()) => true,
        Err(message) => {
            eprintln!("error: {message}");
            false
        }
    }
}

fn try_export(args: &ExportArgs) -> Result<(), String> {
    let picked = pick(&args.source, args.run.as_deref(), args.step)?;
    let tokenizer = match &picked.run_dir {
        Some(dir) => Tokenizer::open_run(dir).map_err(|e| e.to_string())?,
        None => {
            eprintln!(
                "note: {} is not inside a run directory; exporting the byte tokenizer",
                args.source.display()
            );
            Tokenizer::bytes()
        }
    };
    prepare(&args.out, args.force)?;
    let model = hf::HfModel::of(&picked);
    let io = |what: &str, e: &dyn std::fmt::Display| {
        format!("writing {}: {e}", args.out.join(what).display())
    };
    model
        .write_weights(&picked, &args.out.join("model.safetensors"))
        .map_err(|e| io("model.safetensors", &e))?;
    write_json(&args.out, "config.json", &model.config)?;
    if model.custom {
        write_text(&args.out, "modeling_gsc.py", hf::MODELING)?;
    }
    tokenizer
        .save(&args.out.join(TOKENIZER_FILE))
        .map_err(|e| io(TOKENIZER_FILE, &e))?;
    let tok_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": picked.model.context,
        "clean_up_tokenization_spaces": false,
    });
    write_json(&args.out, "tokenizer_config.json", &tok_config)?;
    write_text(
        &args.out,
        "README.md",
        &model_card(&picked, &model, &tokenizer),
    )?;
    println!(
        "exported {} ({}) to {}",
        picked.describe(),
        if model.custom {
            "gsc's own architecture: load with trust_remote_code=True"
        } else {
            "LlamaForCausalLM"
        },
        args.out.display()
    );
    Ok(())
}

/// `out` must be new or empty, unless `force`.
fn prepare(out: &Path, force: bool) -> Result<(), String> {
    if out.is_file() {
        return Err(format!("{} is a file, not a folder", out.display()));
    }
    let busy = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if busy && !force {
        return Err(format!(
            "{} is not empty; choose another folder or pass --force to overwrite",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))
}

fn write_text(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    gsc_runtime::fsutil::write_atomic(&path, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    write_text(dir, name, &(text + "\n"))
}

fn model_card(picked: &Picked, model: &hf::HfModel, tokenizer: &Tokenizer) -> String {
    let c = &picked.model;
    let m = &picked.ck.metadata;
    let val = m["val_loss"]
        .as_f64()
        .map(|v| format!("{v:.4} nats per token"))
        .unwrap_or_else(|| "not measured yet".into());
    let trust = if model.custom {
        ", trust_remote_code=True"
    } else {
        ""
    };
    format!(
        "---\nlibrary_name: transformers\ntags: [gsc]\n---\n\n\
         # {name}\n\n\
         A {arch:?} language model trained by gsc, the Gradual Scaling Compiler \
         ({what}); exported from `{source}`.\n\n\
         | | |\n|---|---|\n\
         | layers | {layers} |\n| d_model | {d} |\n| heads (kv) | {heads} ({kv}) of {hd} |\n\
         | ffn | {ffn} |\n| context | {ctx} |\n| vocabulary | {vocab} ({tok}) |\n\
         | validation loss | {val} |\n\n\
         ```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\
         model = AutoModelForCausalLM.from_pretrained(path{trust})\ntokenizer = AutoTokenizer.from_pretrained(path{trust})\n```\n",
        name = m["run"].as_str().unwrap_or("gsc model"),
        arch = c.arch,
        what = picked.describe(),
        source = picked.ck.path().display(),
        layers = c.layers,
        d = c.d_model,
        heads = c.heads,
        kv = c.kv_heads,
        hd = c.head_dim,
        ffn = c.ffn,
        ctx = c.context,
        vocab = c.vocab,
        tok = if tokenizer.is_bytes() {
            "bytes".to_string()
        } else {
            format!("BPE, {} tokens", tokenizer.vocab_size())
        },
    )
}
