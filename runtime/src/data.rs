//! Training data: a text split into training text and a validation tail,
//! each tokenised on its own, and deterministic batches of random windows.
//!
//! Batch `k` of a run depends only on `(seed, k)`, so a run resumed from a
//! checkpoint at step `k` draws exactly the batches it would have drawn, and
//! growth between stages does not change the data order.

use crate::rng::SplitMix64;
use crate::tokenizer::{Tokenizer, TokenizerError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("training data {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error(
        "the {split} split of {} has {len} tokens, fewer than the {need} one window \
         needs (context {context} + 1); use a larger file, a smaller context or \
         another validation fraction",
        path.display()
    )]
    TooSmall {
        path: PathBuf,
        split: &'static str,
        len: usize,
        need: usize,
        context: usize,
    },
    #[error("validation fraction {0} must lie strictly between 0 and 1")]
    BadFraction(f64),
    #[error("tokenising {}: {source}", path.display())]
    Tokenize {
        path: PathBuf,
        source: TokenizerError,
    },
}

/// Where the validation split of `bytes` starts: at byte
/// ⌊(1 − val_fraction)·len⌋, moved on to the next character boundary when
/// the splits must be UTF-8 text (every tokenizer but bytes).
pub fn split_point(
    path: &Path,
    bytes: &[u8],
    val_fraction: f64,
    text: bool,
) -> Result<usize, DataError> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(DataError::BadFraction(val_fraction));
    }
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_owned(),
        });
    }
    let mut at = ((1.0 - val_fraction) * bytes.len() as f64).floor() as usize;
    // UTF-8 continuation bytes are 0b10xx_xxxx.
    while text && at < bytes.len() && bytes[at] & 0xC0 == 0x80 {
        at += 1;
    }
    Ok(at)
}

/// A text's two splits as token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    /// The validation split's length in bytes.
    pub val_bytes: usize,
}

impl Tokens {
    /// `bytes` split at `at` (see [`split_point`]), each side tokenised
    /// by `tokenizer`; `path` names the text in errors.
    pub fn split(
        path: &Path,
        bytes: &[u8],
        at: usize,
        tokenizer: &Tokenizer,
    ) -> Result<Tokens, DataError> {
        let encode = |b: &[u8]| {
            tokenizer
                .encode_bytes(b)
                .map_err(|source| DataError::Tokenize {
                    path: path.to_owned(),
                    source,
                })
        };
        Ok(Tokens {
            train: encode(&bytes[..at])?,
            val: encode(&bytes[at..])?,
            val_bytes: bytes.len() - at,
        })
    }

    /// A validation loss in nats per token as bits per byte of the
    /// validation split, which compares across tokenizers.
    pub fn bits_per_byte(&self, nats_per_token: f64) -> f64 {
        nats_per_token * self.val.len() as f64
            / self.val_bytes.max(1) as f64
            / std::f64::consts::LN_2
    }
}

/// `batch` windows of `context + 1` consecutive tokens, split into the
/// model's inputs and the next-token targets, both `[batch, context]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub batch: usize,
    pub context: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Batch {
    fn from_windows(context: usize, windows: &[&[u32]]) -> Batch {
        let batch = windows.len();
        let mut inputs = Vec::with_capacity(batch * context);
        let mut targets = Vec::with_capacity(batch * context);
        for w in windows {
            inputs.extend_from_slice(&w[..context]);
            targets.extend_from_slice(&w[1..]);
        }
        Batch {
            batch,
            context,
            inputs,
            targets,
        }
    }
}

/// A tokenised text's windows for one context length (stages differ in
/// context; they share the tokens).
#[derive(Clone, Debug)]
pub struct Dataset {
    path: PathBuf,
    tokens: Arc<Tokens>,
    context: usize,
}

impl Dataset {
    /// Both splits must hold at least one window of `context + 1` tokens;
    /// `path` names the text in errors.
    pub fn new(path: &Path, tokens: Arc<Tokens>, context: usize) -> Result<Dataset, DataError> {
        let need = context + 1;
        for (split, len) in [
            ("training", tokens.train.len()),
            ("validation", tokens.val.len()),
        ] {
            if len < need {
                return Err(DataError::TooSmall {
                    path: path.to_owned(),
                    split,
                    len,
                    need,
                    context,
                });
            }
        }
        Ok(Dataset {
            path: path.to_owned(),
            tokens,
            context,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Training batch number `step` of the run seeded `seed`: `batch`
    /// windows starting at uniform random offsets of the training split.
    pub fn train_batch(&self, seed: u64, step: u64, batch: usize) -> Batch {
        let train = &self.tokens.train;
        let starts = train.len() - self.context;
        let mut rng = SplitMix64::new(stream_seed(seed, step));
        let windows: Vec<&[u32]> = (0..batch)
            .map(|_| {
                let start = rng.below(starts as u64) as usize;
                &train[start..start + self.context + 1]
            })
            .collect();
        Batch::from_windows(self.context, &windows)
    }

    /// The validation set: `count` batches of `batch` windows spread evenly
    /// over the validation split. It depends on nothing but the data and
    /// the shapes, so validation losses compare across seeds and runs.
    pub fn val_batches(&self, count: usize, batch: usize) -> Vec<Batch> {
        let val = &self.tokens.val;
        let last_start = val.len() - (self.context + 1);
        let windows = count * batch;
        let start = |i: usize| {
            if windows <= 1 {
                0
            } else {
                (i as u128 * last_start as u128 / (windows - 1) as u128) as usize
            }
        };
        (0..count)
            .map(|c| {
                let ws: Vec<&[u32]> = (c * batch..(c + 1) * batch)
                    .map(|i| &val[start(i)..start(i) + self.context + 1])
                    .collect();
                Batch::from_windows(self.context, &ws)
            })
            .collect()
    }
}

/// The generator state for batch `step`: both numbers pass through
/// SplitMix64's mixer so neighbouring steps and seeds give unrelated streams.
fn stream_seed(seed: u64, step: u64) -> u64 {
    let a = SplitMix64::new(seed).next_u64();
    SplitMix64::new(a ^ step).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(len: usize) -> Vec<u8> {
        let mut rng = SplitMix64::new(11);
        (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
    }

    fn tokens(bytes: &[u8], val_fraction: f64, tokenizer: &Tokenizer) -> Tokens {
        let path = Path::new("gen.txt");
        let at = split_point(path, bytes, val_fraction, !tokenizer.is_bytes()).unwrap();
        Tokens::split(path, bytes, at, tokenizer).unwrap()
    }

    fn dataset(len: usize, context: usize) -> Dataset {
        let t = tokens(&generated(len), 0.1, &Tokenizer::bytes());
        Dataset::new(Path::new("gen.txt"), Arc::new(t), context).unwrap()
    }

    #[test]
    fn validation_is_the_tail_from_the_floor_of_the_split() {
        let d = dataset(1005, 8);
        let t = d.tokens();
        assert_eq!(t.train.len(), 904); // ⌊0.9 · 1005⌋
        assert_eq!((t.val.len(), t.val_bytes), (101, 101));
        let tail: Vec<u32> = generated(1005)[904..].iter().map(|&b| b.into()).collect();
        assert_eq!(t.val, tail);
    }

    #[test]
    fn text_splits_at_a_character_boundary_and_bytes_anywhere() {
        // ⌊0.4 · 10⌋ = 4 falls inside `é` (bytes 3 and 4).
        let text = "abcé€xy".as_bytes();
        let path = Path::new("t.txt");
        assert_eq!(split_point(path, text, 0.6, false).unwrap(), 4);
        assert_eq!(split_point(path, text, 0.6, true).unwrap(), 5);
        let bpe = Tokenizer::train_bpe(&"abcé€xy ".repeat(50), 260).unwrap();
        let t = tokens(text, 0.6, &bpe);
        assert_eq!(t.val_bytes, 5);
        assert_eq!(bpe.decode(&t.val).unwrap(), "€xy");
        assert_eq!(bpe.decode(&t.train).unwrap(), "abcé");
    }

    #[test]
    fn bits_per_byte_scale_nats_by_tokens_per_byte() {
        let bytes = tokens(&generated(1000), 0.1, &Tokenizer::bytes());
        assert!((bytes.bits_per_byte(std::f64::consts::LN_2) - 1.0).abs() < 1e-12);
        let t = Tokens {
            train: vec![],
            val: vec![1; 25],
            val_bytes: 100,
        };
        assert!((t.bits_per_byte(2.0) - 0.5 / std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn batches_depend_only_on_seed_and_step() {
        let d = dataset(5000, 16);
        let b = d.train_batch(7, 3, 4);
        assert_eq!(b, d.train_batch(7, 3, 4));
        assert_ne!(b, d.train_batch(7, 4, 4));
        assert_ne!(b, d.train_batch(8, 3, 4));
        assert_eq!((b.inputs.len(), b.targets.len()), (64, 64));
        // Targets are the inputs shifted by one inside each window, and every
        // window lies inside the training split.
        let train = &d.tokens().train;
        for w in 0..4 {
            let inp = &b.inputs[w * 16..][..16];
            let tgt = &b.targets[w * 16..][..16];
            assert_eq!(inp[1..], tgt[..15]);
            let found = train
                .windows(17)
                .any(|win| win[..16] == inp[..] && win[16] == tgt[15]);
            assert!(found, "window {w} is not in the training split");
        }
    }

    #[test]
    fn windows_reach_both_ends_of_the_training_split() {
        let d = dataset(100, 8);
        let (mut first, mut last) = (false, false);
        let train = &d.tokens().train;
        for step in 0..2000 {
            let b = d.train_batch(1, step, 1);
            first |= b.inputs[0] == train[0] && b.inputs[1] == train[1];
            last |= *b.targets.last().unwrap() == train[train.len() - 1]
                && b.targets[6] == train[train.len() - 2];
        }
        assert!(first && last);
    }

    #[test]
    fn validation_batches_are_fixed_and_cover_the_split() {
        let d = dataset(10_000, 32);
        let v = d.val_batches(3, 4);
        assert_eq!(v, d.val_batches(3, 4));
        assert_eq!(v.len(), 3);
        let val = &d.tokens().val;
        assert_eq!(v[0].inputs[0], val[0]);
        assert_eq!(*v[2].targets.last().unwrap(), val[val.len() - 1]);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let path = Path::new("e.txt");
        let empty = split_point(path, &[], 0.1, false).unwrap_err();
        assert_eq!(empty.to_string(), "training data e.txt is empty");

        // 10 % of 50 bytes is 5, less than a window of 9.
        let t = Arc::new(tokens(&generated(50), 0.1, &Tokenizer::bytes()));
        let small = Dataset::new(Path::new("s.txt"), t, 8).unwrap_err();
        assert!(matches!(
            small,
            DataError::TooSmall {
                split: "validation",
                len: 5,
                need: 9,
                ..
            }
        ));
        assert!(small.to_string().contains("s.txt"));

        let frac = split_point(path, &generated(50), 1.0, false).unwrap_err();
        assert!(matches!(frac, DataError::BadFraction(_)));

        let bpe = Tokenizer::train_bpe(&"ab ".repeat(100), 258).unwrap();
        let binary = Tokens::split(Path::new("b.bin"), &[b'a', 0xFF, b'b'], 1, &bpe).unwrap_err();
        assert!(binary.to_string().contains("b.bin"), "{binary}");
    }
}
