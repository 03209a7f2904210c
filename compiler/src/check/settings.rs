//! A block's `key = value` settings: unknown keys (with the closest known
//! name), keys given twice, and required keys that are missing.

use crate::diag::{closest, suggestion, Diag};
use crate::syntax::{Setting, Span};

pub struct Settings<'a> {
    items: Vec<&'a Setting>,
    /// Known keys that an unknown key was probably a typo of: already reported.
    typo_of: Vec<&'static str>,
}

impl<'a> Settings<'a> {
    pub fn new(
        settings: impl IntoIterator<Item = &'a Setting>,
        known: &[&'static str],
        block: &str,
        diags: &mut Vec<Diag>,
    ) -> Self {
        let mut items: Vec<&Setting> = Vec::new();
        let mut typo_of = Vec::new();
        for s in settings {
            let key = s.key.name.as_str();
            if !known.contains(&key) {
                typo_of.extend(closest(key, known.iter().copied()));
                diags.push(
                    Diag::error(
                        "gs::unknown-key",
                        format!("unknown setting `{key}` in {block}"),
                    )
                    .label(s.key.span, "unknown setting")
                    .help(suggestion(key, known)),
                );
            } else if let Some(first) = items.iter().find(|f| f.key.name == key) {
                diags.push(
                    Diag::error(
                        "gs::duplicate-key",
                        format!("`{key}` is set twice in {block}"),
                    )
                    .label(s.key.span, "set again here")
                    .label(first.key.span, "first set here")
                    .help("keep one of them"),
                );
            } else {
                items.push(s);
            }
        }
        Settings { items, typo_of }
    }

    pub fn get(&self, key: &str) -> Option<&'a Setting> {
        self.items.iter().find(|s| s.key.name == key).copied()
    }

    /// The setting, or a `gs::missing-key` diagnostic on the block's header.
    pub fn require(
        &self,
        key: &str,
        block: &str,
        header: Span,
        example: &str,
        diags: &mut Vec<Diag>,
    ) -> Option<&'a Setting> {
        let s = self.get(key);
        if s.is_none() && !self.typo_of.contains(&key) {
            diags.push(
                Diag::error("gs::missing-key", format!("{block} has no `{key}`"))
                    .label(header, format!("`{key}` is required here"))
                    .help(format!("add a line such as `{example}`")),
            );
        }
        s
    }
}
