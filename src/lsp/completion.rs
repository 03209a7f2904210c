//! `textDocument/completion`: the names valid where the cursor is, from the
//! checker's own lists: a block's keys, growth methods after `by`, the
//! architectures after `model NAME =`, the block keywords at the top level.

use super::position::LineIndex;
use super::reference::reference;
use super::scan::{self, Kind, Token};
use gsc_compiler::check::names;
use lsp_types::{
    CompletionItem, CompletionItemKind, Documentation, MarkupContent, MarkupKind, Position,
};

const BLOCKS: &[&str] = &["data", "model", "train", "grow", "compare"];
/// What a `grow` block's statements start with.
const SCHEDULE: &[&str] = &["stage", "grow", "set"];

pub fn complete(text: &str, pos: Position) -> Vec<CompletionItem> {
    let offset = LineIndex::new(text).offset(pos);
    let tokens = scan::tokens(text);
    // Nothing inside a comment or a string.
    if tokens.iter().any(|t| t.quotes(text, offset)) {
        return Vec::new();
    }
    // The tokens before the cursor, less the word being typed.
    let before: Vec<Token> = tokens
        .into_iter()
        .filter(|t| t.end < offset || (t.end == offset && t.kind != Kind::Ident))
        .filter(|t| t.kind != Kind::Comment)
        .collect();
    let (names, kind) = candidates(text, &before);
    names
        .iter()
        .map(|name| CompletionItem {
            label: name.to_string(),
            kind: Some(kind),
            documentation: reference().lookup(name).map(|doc| {
                Documentation::MarkupContent(MarkupContent {
                    kind: MarkupKind::Markdown,
                    value: doc,
                })
            }),
            ..CompletionItem::default()
        })
        .collect()
}

fn candidates(text: &str, before: &[Token]) -> (Vec<&'static str>, CompletionItemKind) {
    let word = |t: Option<&Token>| t.map_or("", |t| t.text(text));
    let punct = |t: Option<&Token>, c: char| t.is_some_and(|t| t.kind == Kind::Punct(c));
    // The innermost block (by its keyword) and the current statement.
    let (mut depth, mut parens) = (0usize, 0usize);
    let (mut item, mut block) = (None, None);
    let mut statement = 0;
    for (i, t) in before.iter().enumerate() {
        match t.kind {
            Kind::Punct('{') => {
                if depth == 0 {
                    block = item;
                }
                depth += 1;
                statement = i + 1;
            }
            Kind::Punct('}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    (item, block) = (None, None);
                }
                statement = i + 1;
            }
            Kind::Punct('(' | '[') => parens += 1,
            Kind::Punct(')' | ']') => parens = parens.saturating_sub(1),
            Kind::Ident if depth == 0 && parens == 0 && BLOCKS.contains(&t.text(text)) => {
                item = Some(t.text(text));
                statement = i;
            }
            Kind::Ident if depth > 0 && SCHEDULE.contains(&t.text(text)) => statement = i,
            _ => {}
        }
    }
    let last = before.last();
    let prev = before.len().checked_sub(2).map(|i| &before[i]);
    let current = &before[statement.min(before.len())..];

    if word(last) == "by" {
        // `grow AXIS … by`: the axis's methods.
        let axis = current
            .iter()
            .position(|t| t.text(text) == "grow")
            .and_then(|i| current.get(i + 1))
            .and_then(|t| names::Axis::ALL.iter().find(|(n, _)| *n == t.text(text)));
        let methods = axis.map_or(names::METHODS, |(_, a)| names::methods(*a));
        return (methods.to_vec(), CompletionItemKind::METHOD);
    }
    if depth == 0 {
        let ended = last.is_none()
            || punct(last, '}')
            || (item == Some("compare") && parens == 0 && punct(last, ')'));
        return if ended {
            (BLOCKS.to_vec(), CompletionItemKind::KEYWORD)
        } else if punct(last, '=') && item == Some("model") {
            (names::ARCHS.to_vec(), CompletionItemKind::ENUM_MEMBER)
        } else if punct(last, '=') && item == Some("compare") {
            (names::BASELINES.to_vec(), CompletionItemKind::FUNCTION)
        } else {
            (Vec::new(), CompletionItemKind::TEXT)
        };
    }
    if parens > 0 {
        return (Vec::new(), CompletionItemKind::TEXT);
    }
    // A key goes after `{` or after a complete value.
    let at_key = punct(last, '{')
        || last.is_some_and(|t| {
            matches!(
                t.kind,
                Kind::Ident | Kind::Number | Kind::Str | Kind::Punct(')' | ']')
            )
        });
    let keys: Vec<&'static str> = match block {
        Some("grow") if word(last) == "grow" => names::Axis::ALL.iter().map(|(n, _)| *n).collect(),
        Some("grow") if word(last) == "set" => names::SET_KEYS.to_vec(),
        Some("grow") if punct(last, ',') => names::GROWTH_OPTIONS.to_vec(),
        // `grow AXIS` is followed by `to`, `*` or `+`; `stage NAME:` by `train`.
        Some("grow")
            if at_key
                && !matches!(word(prev), "grow" | "stage" | "set")
                && word(last) != "train" =>
        {
            SCHEDULE.to_vec()
        }
        Some("data") if at_key => names::DATA_KEYS.to_vec(),
        Some("model") if at_key => names::MODEL_KEYS.to_vec(),
        Some("train") if at_key => [names::TRAIN_KEYS, names::EVERY].concat(),
        _ => Vec::new(),
    };
    (keys, CompletionItemKind::PROPERTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels offered where `|` stands.
    fn offered(marked: &str) -> Vec<String> {
        let offset = marked.find('|').unwrap();
        let text = marked.replacen('|', "", 1);
        let pos = LineIndex::new(&text).position(offset);
        complete(&text, pos).into_iter().map(|i| i.label).collect()
    }

    #[test]
    fn offers_what_the_block_and_the_statement_allow() {
        assert_eq!(offered("|"), BLOCKS);
        assert_eq!(offered("data t { text = \"a\" }\nmo|"), BLOCKS);
        assert_eq!(offered("model base = |"), ["gpt", "ngpt"]);
        assert_eq!(offered("model base = ng|"), ["gpt", "ngpt"]);
        assert_eq!(offered("compare c = |"), ["scratch", "doubling"]);
        assert_eq!(offered("compare c = scratch(base, same flops) |"), BLOCKS);
        assert_eq!(offered("data t { |"), ["text", "tokenizer", "val"]);
        let train = offered("train { seed = 1  |}");
        assert!(train.contains(&"optimizer".to_string()) && train.contains(&"eval".to_string()));
        assert!(!train.contains(&"d_model".to_string()));
        // Inside a value: nothing.
        assert!(offered("train { optimizer = adamw(|").is_empty());
        assert!(offered("model m = gpt { ffn = 4 * |").is_empty());
        assert!(offered("data t { text = \"da|ta\" }").is_empty());
        assert!(offered("data t { // te|").is_empty());
        assert!(offered("data t { text = \"a|").is_empty());
        assert_eq!(offered("data t { /* a */|"), ["text", "tokenizer", "val"]);

        let grow = "grow base {\n stage s: train 10 steps\n ";
        assert_eq!(offered(&format!("{grow}|")), SCHEDULE);
        assert_eq!(
            offered(&format!("{grow}grow |")),
            ["d_model", "heads", "kv_heads", "ffn", "layers", "context"]
        );
        assert_eq!(
            offered(&format!("{grow}grow heads + 1 by r|")),
            ["zero", "copy", "ramp"]
        );
        assert_eq!(
            offered(&format!("{grow}grow d_model × 2 by |")),
            ["isometric", "copy", "zero"]
        );
        assert_eq!(
            offered(&format!("{grow}grow d_model * 2 by copy, |")),
            ["noise", "optimizer", "rewarm", "lr_scale"]
        );
        assert_eq!(offered(&format!("{grow}set |")), ["batch", "lr"]);
        assert!(offered(&format!("{grow}stage t: train |")).is_empty());
    }
}
