//! Tokenizers: text ↔ token ids, for training, generation and export.
//!
//! Three kinds, all readable and writable as a Hugging Face
//! `tokenizer.json` (every run directory keeps one, [`FILE`]):
//!
//! - the byte tokenizer, token id `i` = byte `i` (vocabulary 256). As a
//!   `tokenizer.json` it is a BPE model of the 256 ByteLevel symbols in
//!   byte order with no merges, behind a ByteLevel pre-tokenizer without
//!   regex split or prefix space, so Hugging Face gives the same ids;
//! - a byte-level BPE (GPT-2's pre-tokenizer and decoder) trained on a text
//!   with an exact vocabulary size;
//! - any `tokenizer.json` loaded from a file.
//!
//! Byte-level tokenizers encode any text and decode it back byte for byte.

use crate::fsutil::write_atomic;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// The name of a run directory's tokenizer.
pub const FILE: &str = "tokenizer.json";

/// The byte tokenizer's vocabulary.
pub const BYTES_VOCAB: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a Hugging Face tokenizer.json: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write tokenizer {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "a BPE of vocabulary {wanted} cannot be trained on this text: it supports only \
         {got} tokens (the 256 bytes and every merge it has pairs for); train on more text \
         or ask for a smaller vocabulary"
    )]
    TooLittleText { wanted: usize, got: usize },
    #[error("a byte-level BPE has between 257 and 2^24 tokens, not {0}")]
    BadVocab(usize),
    #[error("text for this tokenizer must be UTF-8, and byte {0} is not")]
    NotUtf8(usize),
    #[error("tokenizer: {0}")]
    Library(String),
}

fn library(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

/// A tokenizer: the byte one, or a Hugging Face one.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    /// None for the byte tokenizer, which needs no table to encode.
    hf: Option<Box<tokenizers::Tokenizer>>,
}

impl Tokenizer {
    /// One token per byte, id = byte.
    pub fn bytes() -> Tokenizer {
        Tokenizer { hf: None }
    }

    /// A byte-level BPE of exactly `vocab` tokens (the 256 byte symbols
    /// and `vocab − 256` merges), trained on `text`.
    pub fn train_bpe(text: &str, vocab: usize) -> Result<Tokenizer, TokenizerError> {
        if !(BYTES_VOCAB < vocab && vocab <= 1 << 24) {
            return Err(TokenizerError::BadVocab(vocab));
        }
        let mut hf = byte_level(BPE::default(), true);
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab)
            .min_frequency(0)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        hf.train(&mut trainer, pieces(text).into_iter())
            .map_err(library)?;
        let t = Tokenizer {
            hf: Some(Box::new(hf)),
        };
        match t.vocab_size() {
            got if got == vocab => Ok(t),
            got => Err(TokenizerError::TooLittleText { wanted: vocab, got }),
        }
    }

    /// A Hugging Face `tokenizer.json`; the byte tokenizer's (as
    /// [`Tokenizer::save`] writes it) is the byte tokenizer again, which
    /// encodes without a table.
    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let text = std::fs::read(path).map_err(|source| TokenizerError::Read {
            path: path.to_owned(),
            source,
        })?;
        let hf = tokenizers::Tokenizer::from_bytes(&text).map_err(|e| TokenizerError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let bytes = byte_tokenizer().and_then(|b| b.to_string(false));
        if hf
            .to_string(false)
            .ok()
            .is_some_and(|t| bytes.is_ok_and(|b| b == t))
        {
            return Ok(Tokenizer::bytes());
        }
        Ok(Tokenizer {
            hf: Some(Box::new(hf)),
        })
    }

    /// The tokenizer of run directory `dir`: its `tokenizer.json`, or the
    /// byte tokenizer for a run made before run directories kept one.
    pub fn open_run(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let path = dir.join(FILE);
        if path.exists() {
            Tokenizer::load(&path)
        } else {
            Ok(Tokenizer::bytes())
        }
    }

    /// Writes the tokenizer as a Hugging Face `tokenizer.json`, atomically
    /// (a temporary file, synced, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        let json = self.to_json()?;
        write_atomic(path, json.as_bytes()).map_err(|source| TokenizerError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// The tokenizer as the text of a Hugging Face `tokenizer.json`.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        match &self.hf {
            Some(hf) => hf.to_string(true),
            None => byte_tokenizer().and_then(|hf| hf.to_string(true)),
        }
        .map_err(library)
    }

    /// Whether this is the byte tokenizer.
    pub fn is_bytes(&self) -> bool {
        self.hf.is_none()
    }

    /// One more than the largest token id: the model's vocabulary must be
    /// at least this.
    pub fn vocab_size(&self) -> usize {
        match &self.hf {
            None => BYTES_VOCAB,
            Some(hf) => hf
                .get_vocab(true)
                .values()
                .max()
                .map_or(0, |&id| id as usize + 1),
        }
    }

    /// The token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.encode_bytes(text.as_bytes())
    }

    /// The token ids of `bytes`: the byte tokenizer takes any bytes, the
    /// others UTF-8 text. A long text is encoded in pieces of about 1 MiB,
    /// in parallel, cut after line breaks between two printable ASCII
    /// characters: for a byte-level BPE, whose pre-tokenizer splits there
    /// anyway, that is exactly the encoding of the whole text.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Result<Vec<u32>, TokenizerError> {
        let Some(hf) = &self.hf else {
            return Ok(bytes.iter().map(|&b| u32::from(b)).collect());
        };
        let text =
            std::str::from_utf8(bytes).map_err(|e| TokenizerError::NotUtf8(e.valid_up_to()))?;
        // Each piece's encoding (its tokens' strings, offsets, masks) is
        // dropped as soon as its ids are out: a whole corpus's would take
        // tens of bytes per token.
        let ids: Vec<Vec<u32>> = pieces(text)
            .into_par_iter()
            .map(|p| hf.encode_fast(p, false).map(|e| e.get_ids().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(library)?;
        Ok(ids.concat())
    }

    /// The text of `ids`; byte sequences that are not UTF-8 (a character
    /// cut by the end of `ids`) and ids that are not tokens show as U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match &self.hf {
            None => {
                let bytes: Vec<u8> = ids
                    .iter()
                    .map(|&t| u8::try_from(t).unwrap_or(INVALID))
                    .collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Some(hf) => hf.decode(ids, false).map_err(library),
        }
    }
}

/// A byte that is never valid UTF-8, so that an id outside the byte
/// tokenizer decodes as U+FFFD.
const INVALID: u8 = 0xFF;

/// A Hugging Face tokenizer of `model` behind the ByteLevel pre-tokenizer
/// (with GPT-2's regex split, or none) and decoder, adding no prefix space,
/// so that every text round-trips.
fn byte_level(model: BPE, split: bool) -> tokenizers::Tokenizer {
    let mut hf = tokenizers::Tokenizer::new(model);
    hf.with_pre_tokenizer(Some(ByteLevel::new(false, true, split)));
    hf.with_decoder(Some(ByteLevel::new(false, true, split)));
    hf
}

/// The byte tokenizer as a Hugging Face tokenizer: byte `b`'s ByteLevel
/// symbol has id `b`.
fn byte_tokenizer() -> Result<tokenizers::Tokenizer, tokenizers::Error> {
    let vocab: [(String, u32); 256] =
        std::array::from_fn(|b| (byte_symbol(b as u8).to_string(), b as u32));
    let model = BPE::builder().vocab_and_merges(vocab, vec![]).build()?;
    Ok(byte_level(model, false))
}

/// GPT-2's printable stand-in for byte `b` (the ByteLevel alphabet, which
/// the tokenizers crate keeps private): printable Latin-1 bytes stand for
/// themselves, the others for U+0100 onwards, in byte order.
fn byte_symbol(b: u8) -> char {
    let printable = |c: u8| matches!(c, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        char::from(b)
    } else {
        let rank = (0..b).filter(|&c| !printable(c)).count() as u32;
        char::from_u32(0x100 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

/// The size a long text is cut into for encoding and training.
const PIECE: usize = 1 << 20;

/// `text` cut into pieces of at least [`PIECE`] bytes (the last may be
/// shorter), each cut right after a `\n` between two printable ASCII
/// characters; a text with no such place stays whole.
fn pieces(text: &str) -> Vec<&str> {
    let printable = |b: u8| b.is_ascii_graphic();
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = PIECE;
    while i + 1 < b.len() {
        if b[i] == b'\n' && printable(b[i - 1]) && printable(b[i + 1]) {
            out.push(&text[start..=i]);
            start = i + 1;
            i = start + PIECE;
        } else {
            i += 1;
        }
    }
    out.push(&text[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn shakespeare() -> Option<String> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tinyshakespeare.txt");
        std::fs::read_to_string(&path).ok()
    }

    /// Varied text: words, digits, punctuation, runs of spaces and line
    /// breaks, and multi-byte characters.
    fn generated(len: usize, seed: u64) -> String {
        let mut rng = SplitMix64::new(seed);
        let words = [
            "the", "king", "queen", "Lord", "hath", "thee", "1603", "∂x", "naïve", "—", "!", "?",
            "'s", "  ", "\n", "\n\n", "\t", "😀", "ab",
        ];
        let mut s = String::new();
        while s.len() < len {
            s.push_str(words[rng.below(words.len() as u64) as usize]);
            if rng.below(3) > 0 {
                s.push(' ');
            }
        }
        s
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gsc-tokenizer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bytes_round_trip_any_bytes_and_text() {
        let t = Tokenizer::bytes();
        let all: Vec<u8> = (0..=255).collect();
        let ids = t.encode_bytes(&all).unwrap();
        assert_eq!(ids, (0..256).collect::<Vec<u32>>());
        assert_eq!(t.vocab_size(), 256);
        let text = "To be, or not to be — ∂ 😀\n";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert_eq!(t.decode(&ids).unwrap(), text);
        // A character cut in two, and an id that is no byte.
        assert_eq!(t.decode(&[0xE2, 0x80]).unwrap(), "\u{FFFD}");
        assert_eq!(t.decode(&[b'a' as u32, 300]).unwrap(), "a\u{FFFD}");
    }

    #[test]
    fn the_byte_tokenizer_json_maps_id_i_to_byte_i() {
        let dir = temp("bytes");
        let path = dir.join(FILE);
        Tokenizer::bytes().save(&path).unwrap();
        assert!(Tokenizer::load(&path).unwrap().is_bytes());
        // As Hugging Face reads the file: every byte alone, then whole
        // texts give the byte tokenizer's ids, and decode back.
        let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
        assert_eq!(hf.get_vocab_size(true), 256);
        for b in 0..=255u8 {
            let s = byte_symbol(b).to_string();
            assert_eq!(hf.token_to_id(&s), Some(u32::from(b)), "byte {b}");
        }
        for text in [
            generated(5000, 3),
            "  leading spaces, 'tis\r\n\ttabs\0nul".into(),
        ] {
            let want = Tokenizer::bytes().encode(&text).unwrap();
            assert_eq!(
                hf.encode_fast(text.as_str(), false).unwrap().get_ids(),
                want
            );
            assert_eq!(hf.decode(&want, false).unwrap(), text);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn byte_symbols_are_gpt2s_alphabet() {
        let ours: std::collections::HashSet<char> = (0..=255u8).map(byte_symbol).collect();
        let theirs: std::collections::HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        assert_eq!(ours, theirs);
        assert_eq!(byte_symbol(b'A'), 'A');
        assert_eq!(byte_symbol(0), 'Ā');
        assert_eq!(byte_symbol(b' '), 'Ġ');
        assert_eq!(byte_symbol(b'\n'), 'Ċ');
    }

    #[test]
    fn bpe_has_the_exact_vocabulary_and_round_trips() {
        let text = generated(200_000, 1);
        let t = Tokenizer::train_bpe(&text, 300).unwrap();
        assert_eq!(t.vocab_size(), 300);
        for sample in [generated(3000, 2), "unseen: ☃ \u{1F980} ÿ\r\n".into()] {
            let ids = t.encode(&sample).unwrap();
            assert!(ids.iter().all(|&i| i < 300));
            assert_eq!(t.decode(&ids).unwrap(), sample);
        }
        // Merges compress the text it was trained on.
        let ids = t.encode(&text).unwrap();
        assert!(ids.len() * 2 < text.len(), "{} tokens", ids.len());
        // The same text trains the same tokenizer.
        let again = Tokenizer::train_bpe(&text, 300).unwrap();
        assert_eq!(again.to_json().unwrap(), t.to_json().unwrap());
    }

    #[test]
    fn bpe_vocabularies_out_of_range_or_beyond_the_text_are_errors() {
        let text = generated(2000, 4);
        for v in [0, 256, (1 << 24) + 1] {
            assert!(matches!(
                Tokenizer::train_bpe(&text, v),
                Err(TokenizerError::BadVocab(_))
            ));
        }
        let e = Tokenizer::train_bpe("abab", 1000).unwrap_err();
        assert!(
            matches!(e, TokenizerError::TooLittleText { wanted: 1000, got } if got < 300),
            "{e}"
        );
    }

    #[test]
    fn save_and_load_give_the_same_tokenizer() {
        let dir = temp("save");
        let path = dir.join(FILE);
        let t = Tokenizer::train_bpe(&generated(50_000, 5), 400).unwrap();
        t.save(&path).unwrap();
        let back = Tokenizer::load(&path).unwrap();
        assert_eq!(back.to_json().unwrap(), t.to_json().unwrap());
        let sample = generated(10_000, 6);
        assert_eq!(back.encode(&sample).unwrap(), t.encode(&sample).unwrap());
        assert_eq!(Tokenizer::open_run(&dir).unwrap().vocab_size(), 400);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // A run directory without one is a byte run.
        std::fs::remove_file(&path).unwrap();
        assert!(Tokenizer::open_run(&dir).unwrap().is_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_errors_naming_them() {
        let dir = temp("bad");
        let missing = Tokenizer::load(&dir.join("none.json")).unwrap_err();
        assert!(matches!(missing, TokenizerError::Read { .. }));
        assert!(missing.to_string().contains("none.json"));
        let path = dir.join("bad.json");
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        let bad = Tokenizer::load(&path).unwrap_err();
        assert!(matches!(bad, TokenizerError::Invalid { .. }), "{bad}");
        assert!(bad.to_string().contains("bad.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn encoding_in_pieces_is_encoding_the_whole_text() {
        let text = generated(3 * PIECE + 12_345, 7);
        let cut = pieces(&text);
        assert!(cut.len() >= 3, "{} pieces", cut.len());
        assert_eq!(cut.concat(), text);
        assert!(cut[..cut.len() - 1].iter().all(|p| p.len() >= PIECE));
        let t = Tokenizer::train_bpe(&generated(100_000, 8), 500).unwrap();
        let hf = t.hf.as_ref().unwrap();
        let whole = hf.encode_fast(text.as_str(), false).unwrap();
        assert_eq!(t.encode(&text).unwrap(), whole.get_ids());
        // Texts with no place to cut stay whole.
        assert_eq!(pieces("short").len(), 1);
        assert_eq!(pieces(&" \n".repeat(PIECE)).len(), 1);
    }

    #[test]
    fn tiny_shakespeare_when_present() {
        let Some(text) = shakespeare() else {
            eprintln!("skipped: no tinyshakespeare.txt");
            return;
        };
        let t = Tokenizer::train_bpe(&text, 512).unwrap();
        let ids = t.encode(&text).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text);
        let ratio = text.len() as f64 / ids.len() as f64;
        assert!(ratio > 1.8, "{ratio} bytes per token");
    }
}
