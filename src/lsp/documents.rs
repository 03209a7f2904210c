//! The open documents: the editor's text, which may differ from the file on
//! disk, and which still need their diagnostics published.

use lsp_types::Url;
use std::collections::{BTreeSet, HashMap};

pub struct Document {
    pub text: String,
    pub version: i32,
}

#[derive(Default)]
pub struct Documents {
    open: HashMap<Url, Document>,
    /// Changed since their diagnostics were last published.
    stale: BTreeSet<Url>,
}

impl Documents {
    pub fn set(&mut self, uri: Url, text: String, version: i32) {
        self.stale.insert(uri.clone());
        self.open.insert(uri, Document { text, version });
    }

    /// Checks `uri` again (saved: its data files may have changed too).
    pub fn touch(&mut self, uri: &Url) {
        if self.open.contains_key(uri) {
            self.stale.insert(uri.clone());
        }
    }

    pub fn close(&mut self, uri: &Url) {
        self.open.remove(uri);
        self.stale.remove(uri);
    }

    pub fn get(&self, uri: &Url) -> Option<&Document> {
        self.open.get(uri)
    }

    pub fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// The documents to check, forgotten as stale.
    pub fn take_stale(&mut self) -> Vec<(Url, &Document)> {
        let stale = std::mem::take(&mut self.stale);
        stale
            .into_iter()
            .filter_map(|uri| self.open.get(&uri).map(|d| (uri, d)))
            .collect()
    }
}
