//! `textDocument/formatting`: `gsc fmt`'s canonical text as one edit.

use super::position::LineIndex;
use gsc_compiler::syntax;
use lsp_types::TextEdit;

/// The edit that formats `text`: none when it is already canonical, `None`
/// when it does not parse (its diagnostics say why).
pub fn format(text: &str) -> Option<Vec<TextEdit>> {
    let file = syntax::parse(text).ok()?;
    let formatted = syntax::format::format(text, &file);
    if formatted == text {
        return Some(Vec::new());
    }
    let whole = LineIndex::new(text).range(0, text.len());
    Some(vec![TextEdit::new(whole, formatted)])
}
