//! The `data` block: which text files, which tokenizer, how much is held out.

use super::eval::{self, Args, NoNames};
use super::settings::Settings;
use crate::diag::Diag;
use crate::plan::{DataFile, DataPlan, Tokenizer};
use crate::syntax::{DataBlock, Expr, ExprKind, Span};
use std::path::Path;

/// The settings the data block accepts.
pub const KEYS: &[&str] = &["text", "tokenizer", "val"];

pub struct Data {
    pub plan: DataPlan,
    /// Where `val` was written (or the block header), for context-length errors.
    pub val_span: Span,
    /// The block's name, where `val_span` points when `val` is not written.
    pub header: Span,
}

pub fn check(block: &DataBlock, base_dir: &Path, diags: &mut Vec<Diag>) -> Option<Data> {
    let header = block.name.span;
    let s = Settings::new(&block.settings, KEYS, "the data block", diags);
    let mut ok = true;

    let mut files = Vec::new();
    if let Some(text) = s.require(
        "text",
        "the data block",
        header,
        "text = \"data/tinyshakespeare.txt\"",
        diags,
    ) {
        let paths: Vec<&Expr> = match &text.value.kind {
            ExprKind::List { items } => items.iter().collect(),
            _ => vec![&text.value],
        };
        if paths.is_empty() {
            diags.push(
                Diag::error("gs::data", "the list of text files is empty")
                    .label(text.value.span, "no files")
                    .help("name at least one text file"),
            );
            ok = false;
        }
        for p in paths {
            match eval::string(p) {
                Ok(path) => match data_file(path, p.span, base_dir) {
                    Ok(f) => files.push(f),
                    Err(d) => {
                        diags.push(d);
                        ok = false;
                    }
                },
                Err(d) => {
                    diags
                        .push(d.help("write the path in double quotes, relative to this .gs file"));
                    ok = false;
                }
            }
        }
    } else {
        ok = false;
    }

    let tokenizer = match s.get("tokenizer") {
        None => Some(Tokenizer::Bytes),
        Some(t) => tokenizer(&t.value, base_dir)
            .map_err(|d| diags.push(d))
            .ok(),
    };
    ok &= tokenizer.is_some();

    let (val_fraction, val_span) = match s.get("val") {
        None => (0.1, header),
        Some(v) => match eval::quantity(&v.value, &mut NoNames) {
            Ok(q) if q.unit.is_none() && q.value > 0.0 && q.value < 1.0 => (q.value, v.value.span),
            Ok(_) => {
                diags.push(
                    Diag::error(
                        "gs::value",
                        "the validation split must be a fraction between 0 and 1",
                    )
                    .label(v.value.span, "out of range")
                    .help("write a percentage such as `val = 10%`"),
                );
                ok = false;
                (0.1, v.value.span)
            }
            Err(d) => {
                diags.push(d);
                ok = false;
                (0.1, v.value.span)
            }
        },
    };

    let tokenizer = tokenizer.filter(|_| ok)?;
    let mut plan = DataPlan {
        name: block.name.name.clone(),
        files,
        vocab: match &tokenizer {
            Tokenizer::Bytes => BYTES_VOCAB,
            Tokenizer::Bpe { vocab } | Tokenizer::File { vocab, .. } => *vocab,
        },
        tokenizer,
        val_fraction,
        train_tokens: None,
        val_tokens: None,
    };
    if plan.tokenizer == Tokenizer::Bytes {
        let (train, val) = plan.split_bytes();
        (plan.train_tokens, plan.val_tokens) = (Some(train), Some(val));
    }
    Some(Data {
        plan,
        val_span,
        header,
    })
}

const BYTES_VOCAB: usize = 256;

/// The largest byte-level BPE vocabulary (ids beyond it would be no use
/// to a model of this size anyway).
const MAX_BPE_VOCAB: usize = 1 << 24;

const TOKENIZER_HELP: &str = "write `tokenizer = bytes`, `tokenizer = bpe(vocab = 4096)`, or the path of a Hugging Face `tokenizer.json` in double quotes";

/// `bytes`, `bpe(vocab = N)` or `"path/to/tokenizer.json"`.
fn tokenizer(e: &Expr, base_dir: &Path) -> Result<Tokenizer, Diag> {
    match &e.kind {
        ExprKind::Str { value } => return tokenizer_file(value, e.span, base_dir),
        ExprKind::Ref { .. } | ExprKind::Call { .. } => {}
        _ => return Err(eval::not_a(e, "a tokenizer").help(TOKENIZER_HELP)),
    }
    if eval::choice(e, &["bytes", "bpe"], "tokenizer").map_err(|d| d.help(TOKENIZER_HELP))?
        == "bytes"
    {
        return match e.kind {
            ExprKind::Ref { .. } => Ok(Tokenizer::Bytes),
            _ => Err(Diag::error("gs::argument", "`bytes` takes no arguments")
                .label(e.span, "arguments")
                .help("write `tokenizer = bytes`")),
        };
    }
    let mut diags = Vec::new();
    let args = Args::of(e, &["vocab"], &mut diags);
    if let Some(d) = diags.into_iter().next() {
        return Err(d);
    }
    let Some(vocab) = args.as_ref().and_then(|a| a.get("vocab")) else {
        let span = args.as_ref().map_or(e.span, |a| a.span);
        return Err(Diag::error(
            "gs::missing-key",
            "a BPE tokenizer needs its vocabulary size",
        )
        .label(span, "how many tokens?")
        .help("write e.g. `tokenizer = bpe(vocab = 4096)`: the 256 bytes and 3,840 merges"));
    };
    if let Some(p) = args.as_ref().and_then(|a| a.positional.first()) {
        return Err(Diag::error("gs::argument", "bpe's argument must be named")
            .label(p.span, "unnamed")
            .help("write e.g. `bpe(vocab = 4096)`"));
    }
    let n = eval::number(vocab, &mut NoNames)?;
    let n = eval::to_count(n, vocab.span, "the vocabulary")?;
    if !(BYTES_VOCAB < n && n <= MAX_BPE_VOCAB) {
        return Err(Diag::error(
            "gs::value",
            format!("a byte-level BPE has between 257 and 16,777,216 tokens, not {n}"),
        )
        .label(
            vocab.span,
            if n <= BYTES_VOCAB {
                "no room for a merge"
            } else {
                "too many"
            },
        )
        .help(
            "its vocabulary holds the 256 bytes and at least one merge: e.g. `bpe(vocab = 4096)`",
        ));
    }
    Ok(Tokenizer::Bpe { vocab: n })
}

/// A Hugging Face `tokenizer.json`, read now for its vocabulary size.
fn tokenizer_file(path: &str, span: Span, base_dir: &Path) -> Result<Tokenizer, Diag> {
    let resolved = lexical(&base_dir.join(path));
    let shown = resolved.display().to_string();
    let unreadable = |why: String| {
        Diag::error(
            "gs::tokenizer-missing",
            format!("cannot read tokenizer `{shown}`: {why}"),
        )
        .label(span, "this file")
        .help("paths are relative to the .gs file; name a Hugging Face `tokenizer.json`")
    };
    if resolved.is_dir() {
        return Err(unreadable("it is a folder".into()));
    }
    let text = std::fs::read(&resolved).map_err(|e| unreadable(io_reason(&e)))?;
    let vocab = tokenizer_vocab(&text).map_err(|why| {
        Diag::error(
            "gs::tokenizer-invalid",
            format!("`{shown}` is not a Hugging Face tokenizer.json: {why}"),
        )
        .label(span, "not a tokenizer")
        .help("name the file a Hugging Face tokenizer was saved to (`tokenizer.save(\"tokenizer.json\")`)")
    })?;
    Ok(Tokenizer::File {
        path: path.to_string(),
        resolved: shown,
        vocab,
    })
}

/// One more than the largest token id of a `tokenizer.json`: its model's
/// vocabulary (token → id, or a Unigram model's list, ids by position)
/// and its added tokens.
fn tokenizer_vocab(text: &[u8]) -> Result<usize, String> {
    let json: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not JSON ({e})"))?;
    let model_ids: Vec<u64> = match &json["model"]["vocab"] {
        serde_json::Value::Object(v) => v.values().filter_map(|id| id.as_u64()).collect(),
        serde_json::Value::Array(v) => (0..v.len() as u64).collect(),
        _ => return Err("it has no `model` with a `vocab`".into()),
    };
    let added = json["added_tokens"].as_array().into_iter().flatten();
    let max = model_ids
        .into_iter()
        .chain(added.filter_map(|t| t["id"].as_u64()))
        .max()
        .ok_or("its vocabulary is empty")?;
    usize::try_from(max + 1).map_err(|_| "its token ids are too large".to_string())
}

fn data_file(path: &str, span: Span, base_dir: &Path) -> Result<DataFile, Diag> {
    let resolved = lexical(&base_dir.join(path));
    let shown = resolved.display().to_string();
    let meta = std::fs::metadata(&resolved).map_err(|e| {
        Diag::error("gs::data-missing", format!("cannot read data file `{shown}`: {}", io_reason(&e)))
            .label(span, "this file")
            .help("paths are relative to the .gs file; `scripts/fetch-data` puts the example corpora in `data/`")
    })?;
    if meta.is_dir() {
        return Err(Diag::error(
            "gs::data-missing",
            format!("`{shown}` is a folder, not a text file"),
        )
        .label(span, "a folder")
        .help("name a text file inside it"));
    }
    if meta.len() == 0 {
        return Err(
            Diag::error("gs::data-empty", format!("data file `{shown}` is empty"))
                .label(span, "0 bytes")
                .help("a model needs text to train on; name a non-empty text file"),
        );
    }
    let head = read_head(&resolved).map_err(|e| {
        Diag::error(
            "gs::data-missing",
            format!("cannot read data file `{shown}`: {}", io_reason(&e)),
        )
        .label(span, "this file")
    })?;
    if head.contains(&0) || std::str::from_utf8(trim_partial_char(&head)).is_err() {
        return Err(Diag::error(
            "gs::data-not-text",
            format!("data file `{shown}` is not UTF-8 text"),
        )
        .label(span, "binary data")
        .help("the byte tokenizer trains on plain text; convert the file to UTF-8 text first"));
    }
    Ok(DataFile {
        path: path.to_string(),
        resolved: shown,
        bytes: meta.len(),
    })
}

fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(64 * 1024);
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The 64 KiB sample may cut a multi-byte character in two.
fn trim_partial_char(b: &[u8]) -> &[u8] {
    match std::str::from_utf8(b) {
        Err(e) if e.error_len().is_none() => &b[..e.valid_up_to()],
        _ => b,
    }
}

/// `path` with `.` dropped and each `dir/..` pair folded, without touching
/// the file system (`examples/../data/x.txt` is `data/x.txt`): what a user
/// reads in messages and plans. A leading `..` stays.
fn lexical(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::lexical;
    use std::path::Path;

    #[test]
    fn lexical_folds_dot_and_dot_dot() {
        for (path, want) in [
            ("examples/../data/x.txt", "data/x.txt"),
            ("./a/./b", "a/b"),
            ("../data/x", "../data/x"),
            ("a/../../x", "../x"),
            ("/r/a/../x", "/r/x"),
            ("a/..", "."),
        ] {
            assert_eq!(lexical(Path::new(path)), Path::new(want), "{path}");
        }
    }
}
