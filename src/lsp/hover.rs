//! `textDocument/hover`: what the language reference says about the name
//! under the cursor.

use super::position::LineIndex;
use super::reference::reference;
use super::scan::{self, Kind};
use lsp_types::{Hover, HoverContents, MarkupContent, MarkupKind, Position};

pub fn hover(text: &str, pos: Position) -> Option<Hover> {
    let index = LineIndex::new(text);
    let offset = index.offset(pos);
    let token = scan::tokens(text)
        .into_iter()
        .rfind(|t| t.kind == Kind::Ident && t.start <= offset && offset <= t.end)?;
    let doc = reference().lookup(token.text(text))?;
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value: doc,
        }),
        range: Some(index.range(token.start, token.end)),
    })
}
