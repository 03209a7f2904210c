//! The parser skips comments; `gsc fmt` must keep them, so they are found
//! again here by scanning the source text, skipping string literals.

use super::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub span: Span,
    pub text: String,
}

pub fn scan(source: &str) -> Vec<Comment> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Strings end at the next quote or newline, as in the grammar.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = source[i..].find('\n').map_or(source.len(), |n| i + n);
                out.push(Comment {
                    span: Span::new(i, end),
                    text: source[i..end].trim_end().to_string(),
                });
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = source[i + 2..]
                    .find("*/")
                    .map_or(source.len(), |n| i + 2 + n + 2);
                out.push(Comment {
                    span: Span::new(i, end),
                    text: source[i..end].to_string(),
                });
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}
