//! Training data: a byte-level tokenizer, a train/validation split of one
//! text file, and deterministic batches of random windows.
//!
//! Batch `k` of a run depends only on `(seed, k)`, so a run resumed from a
//! checkpoint at step `k` draws exactly the batches it would have drawn, and
//! growth between stages does not change the data order.

use crate::rng::SplitMix64;
use std::path::{Path, PathBuf};

/// Every byte is a token.
pub const VOCAB: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read training data {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("training data {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error(
        "the {split} split of {} has {len} bytes, fewer than the {need} one window \
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
}

/// Token ids of a byte string.
pub fn encode(text: &[u8]) -> Vec<u32> {
    text.iter().map(|&b| b as u32).collect()
}

/// Text of token ids; ids that are not bytes and invalid UTF-8 show as U+FFFD.
pub fn decode(tokens: &[u32]) -> String {
    let bytes: Vec<u8> = tokens
        .iter()
        .map(|&t| u8::try_from(t).unwrap_or(b'?'))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
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
    fn from_windows(context: usize, windows: &[&[u8]]) -> Batch {
        let batch = windows.len();
        let mut inputs = Vec::with_capacity(batch * context);
        let mut targets = Vec::with_capacity(batch * context);
        for w in windows {
            inputs.extend(w[..context].iter().map(|&b| b as u32));
            targets.extend(w[1..].iter().map(|&b| b as u32));
        }
        Batch {
            batch,
            context,
            inputs,
            targets,
        }
    }
}

/// One text file split into training bytes and the validation tail.
#[derive(Clone, Debug)]
pub struct Dataset {
    path: PathBuf,
    bytes: Vec<u8>,
    /// First byte of the validation split.
    split_at: usize,
    context: usize,
}

impl Dataset {
    /// Reads `path`; the last `val_fraction` of it (from byte
    /// ⌊(1 − val_fraction)·len⌋) is the validation split. Both splits must
    /// hold at least one window of `context + 1` bytes.
    pub fn open(path: &Path, val_fraction: f64, context: usize) -> Result<Dataset, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Read {
            path: path.to_owned(),
            source,
        })?;
        Dataset::from_bytes(path, bytes, val_fraction, context)
    }

    /// As [`Dataset::open`] for bytes already in memory; `path` names them
    /// in errors.
    pub fn from_bytes(
        path: &Path,
        bytes: Vec<u8>,
        val_fraction: f64,
        context: usize,
    ) -> Result<Dataset, DataError> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(DataError::BadFraction(val_fraction));
        }
        if bytes.is_empty() {
            return Err(DataError::Empty {
                path: path.to_owned(),
            });
        }
        let split_at = ((1.0 - val_fraction) * bytes.len() as f64).floor() as usize;
        let need = context + 1;
        for (split, len) in [
            ("training", split_at),
            ("validation", bytes.len() - split_at),
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
            bytes,
            split_at,
            context,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn train_bytes(&self) -> &[u8] {
        &self.bytes[..self.split_at]
    }

    pub fn val_bytes(&self) -> &[u8] {
        &self.bytes[self.split_at..]
    }

    /// Training batch number `step` of the run seeded `seed`: `batch`
    /// windows starting at uniform random offsets of the training split.
    pub fn train_batch(&self, seed: u64, step: u64, batch: usize) -> Batch {
        let train = self.train_bytes();
        let starts = train.len() - self.context;
        let mut rng = SplitMix64::new(stream_seed(seed, step));
        let windows: Vec<&[u8]> = (0..batch)
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
        let val = self.val_bytes();
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
                let ws: Vec<&[u8]> = (c * batch..(c + 1) * batch)
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

    fn dataset(len: usize, context: usize) -> Dataset {
        Dataset::from_bytes(Path::new("gen.txt"), generated(len), 0.1, context).unwrap()
    }

    #[test]
    fn round_trips_bytes() {
        let text = "To be, or not to be — ∂";
        assert_eq!(decode(&encode(text.as_bytes())), text);
        assert!(encode(text.as_bytes())
            .iter()
            .all(|&t| (t as usize) < VOCAB));
    }

    #[test]
    fn validation_is_the_tail_from_the_floor_of_the_split() {
        let d = dataset(1005, 8);
        assert_eq!(d.train_bytes().len(), 904); // ⌊0.9 · 1005⌋
        assert_eq!(d.val_bytes().len(), 101);
        assert_eq!(d.val_bytes(), &generated(1005)[904..]);
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
        let train = d.train_bytes();
        for w in 0..4 {
            let inp = &b.inputs[w * 16..][..16];
            let tgt = &b.targets[w * 16..][..16];
            assert_eq!(inp[1..], tgt[..15]);
            let bytes: Vec<u8> = inp.iter().map(|&t| t as u8).collect();
            let found = train
                .windows(17)
                .any(|win| win[..16] == bytes[..] && win[16] as u32 == tgt[15]);
            assert!(found, "window {w} is not in the training split");
        }
    }

    #[test]
    fn windows_reach_both_ends_of_the_training_split() {
        let d = dataset(100, 8);
        let (mut first, mut last) = (false, false);
        let train = d.train_bytes();
        for step in 0..2000 {
            let b = d.train_batch(1, step, 1);
            first |= b.inputs[0] as u8 == train[0] && b.inputs[1] as u8 == train[1];
            last |= *b.targets.last().unwrap() as u8 == train[train.len() - 1]
                && b.targets[6] as u8 == train[train.len() - 2];
        }
        assert!(first && last);
    }

    #[test]
    fn validation_batches_are_fixed_and_cover_the_split() {
        let d = dataset(10_000, 32);
        let v = d.val_batches(3, 4);
        assert_eq!(v, d.val_batches(3, 4));
        assert_eq!(v.len(), 3);
        let val = d.val_bytes();
        assert_eq!(v[0].inputs[0] as u8, val[0]);
        assert_eq!(*v[2].targets.last().unwrap() as u8, val[val.len() - 1]);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let missing = Dataset::open(Path::new("/nonexistent/gsc.txt"), 0.1, 8).unwrap_err();
        assert!(matches!(missing, DataError::Read { .. }));
        assert!(missing.to_string().contains("/nonexistent/gsc.txt"));

        let empty = Dataset::from_bytes(Path::new("e.txt"), vec![], 0.1, 8).unwrap_err();
        assert_eq!(empty.to_string(), "training data e.txt is empty");

        // 10 % of 50 bytes is 5, less than a window of 9.
        let small = Dataset::from_bytes(Path::new("s.txt"), generated(50), 0.1, 8).unwrap_err();
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

        let frac = Dataset::from_bytes(Path::new("f.txt"), generated(50), 1.0, 8).unwrap_err();
        assert!(matches!(frac, DataError::BadFraction(_)));
    }

    #[test]
    fn tiny_shakespeare_when_present() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tinyshakespeare.txt");
        if !path.exists() {
            eprintln!("skipped: {} not found", path.display());
            return;
        }
        let d = Dataset::open(&path, 0.1, 256).unwrap();
        let len = d.train_bytes().len() + d.val_bytes().len();
        assert_eq!(d.train_bytes().len(), (0.9 * len as f64).floor() as usize);
        let b = d.train_batch(1337, 0, 16);
        assert_eq!(b.inputs.len(), 16 * 256);
        assert!(decode(&b.inputs).is_ascii());
        assert_eq!(d.val_batches(2, 16).len(), 2);
    }
}
