//! The `data` block: which text files, which tokenizer, how much is held out.

use super::eval::{self, NoNames};
use super::settings::Settings;
use crate::diag::Diag;
use crate::plan::{DataFile, DataPlan};
use crate::syntax::{DataBlock, Expr, ExprKind, Span};
use std::path::Path;

const KEYS: &[&str] = &["text", "tokenizer", "val"];

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

    let vocab = match s.get("tokenizer") {
        None => 256,
        Some(t) => match eval::choice(&t.value, &["bytes", "bpe"], "tokenizer") {
            Ok("bytes") => 256,
            Ok(_) => {
                diags.push(
                    Diag::error("gs::unsupported", "BPE tokenizers are not supported yet")
                        .label(t.value.span, "not available in this version")
                        .help("use `tokenizer = bytes` (vocabulary 256)"),
                );
                ok = false;
                256
            }
            Err(d) => {
                diags.push(d);
                ok = false;
                256
            }
        },
    };

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

    if !ok {
        return None;
    }
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    // The usual split: validation starts at byte ⌊(1 − val)·len⌋ (tiny Shakespeare: 1,003,854).
    let train_tokens = (bytes as f64 * (1.0 - val_fraction)).floor() as u64;
    let val_tokens = bytes - train_tokens;
    Some(Data {
        plan: DataPlan {
            name: block.name.name.clone(),
            files,
            tokenizer: "bytes".into(),
            vocab,
            val_fraction,
            train_tokens,
            val_tokens,
        },
        val_span,
        header,
    })
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
