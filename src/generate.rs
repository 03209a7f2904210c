//! `gsc generate RUN_DIR --prompt "…"`: text from any checkpoint, sampled
//! token by token on the CPU with a KV cache, printed as it comes.

use crate::pick::pick;
use gsc_runtime::infer::{Decoder, Model, Sampler, Sampling};
use gsc_runtime::tokenizer::Tokenizer;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

pub struct GenerateArgs {
    pub source: PathBuf,
    pub run: Option<String>,
    pub step: Option<u64>,
    pub prompt: String,
    pub tokens: usize,
    pub sampling: Sampling,
}

pub fn generate(args: &GenerateArgs) -> bool {
    match try_generate(args) {
        Ok(()) => true,
        Err(message) => {
            eprintln!("error: {message}");
            false
        }
    }
}

fn try_generate(args: &GenerateArgs) -> Result<(), String> {
    let picked = pick(&args.source, args.run.as_deref(), args.step)?;
    let tokenizer = match &picked.run_dir {
        Some(dir) => Tokenizer::open_run(dir).map_err(|e| e.to_string())?,
        None => Tokenizer::bytes(),
    };
    let vocab = tokenizer.vocab_size().min(picked.model.vocab);
    let prompt = tokenizer.encode(&args.prompt).map_err(|e| e.to_string())?;
    if prompt.is_empty() {
        return Err("the prompt is empty: give at least one character with --prompt".into());
    }
    let model =
        Model::from_checkpoint(&picked.ck, picked.model.clone()).map_err(|e| e.to_string())?;
    eprintln!("{}", picked.describe());
    let started = Instant::now();
    let mut dec = Decoder::new(&model);
    let mut sampler = Sampler::new(args.sampling);
    let mut history = prompt.clone();
    let mut logits = feed(&mut dec, &history)?;
    let mut out = Printer::new(&tokenizer);
    print!("{}", args.prompt);
    for _ in 0..args.tokens {
        let next = sampler.next(&logits[..vocab]);
        out.push(next)?;
        history.push(next);
        logits = match dec.step(next) {
            Ok(l) => l.to_vec(),
            // The window is full: go on from its second half.
            Err(gsc_runtime::infer::InferError::Full { context }) => {
                dec.clear();
                feed(&mut dec, &history[history.len() - context / 2..])?
            }
            Err(e) => return Err(e.to_string()),
        };
    }
    out.finish()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} tokens after a prompt of {} in {secs:.3} s ({:.0} tokens/s)",
        args.tokens,
        prompt.len(),
        args.tokens as f64 / secs
    );
    Ok(())
}

/// Runs `window` (its last `context` tokens at most) through an empty
/// decoder; the logits after its last token.
fn feed(dec: &mut Decoder, window: &[u32]) -> Result<Vec<f32>, String> {
    let start = window.len().saturating_sub(dec.context());
    let mut logits = Vec::new();
    for &t in &window[start..] {
        logits = dec.step(t).map_err(|e| e.to_string())?.to_vec();
    }
    Ok(logits)
}

/// Prints generated text as it grows, holding back an incomplete UTF-8
/// character (which decodes as U+FFFD until its last byte arrives).
struct Printer<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl<'t> Printer<'t> {
    fn new(tokenizer: &'t Tokenizer) -> Self {
        Printer {
            tokenizer,
            ids: Vec::new(),
            printed: 0,
        }
    }

    fn push(&mut self, id: u32) -> Result<(), String> {
        self.ids.push(id);
        self.flush(false)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.flush(true)?;
        println!();
        Ok(())
    }

    fn flush(&mut self, all: bool) -> Result<(), String> {
        let text = self
            .tokenizer
            .decode(&self.ids)
            .map_err(|e| e.to_string())?;
        let end = if all {
            text.len()
        } else {
            text.trim_end_matches('\u{FFFD}').len()
        };
        if end > self.printed {
            print!("{}", &text[self.printed..end]);
            let _ = std::io::stdout().flush();
            self.printed = end;
        }
        Ok(())
    }
}
