//! The language reference, `grammar/README.md`, read into topics that hover
//! and completion show: its tables' rows (keys, options, cadences, budgets,
//! growth methods), its bullets (architectures, baselines) and the opening
//! paragraph of each block's section. The reference stays the one place the
//! language is described.

use std::sync::OnceLock;

const README: &str = include_str!("../../grammar/README.md");

struct Topic {
    /// The names it documents (`d_model`, `isometric`, `gpt`).
    names: Vec<String>,
    /// Every other name its code spans mention (`rmsnorm` in `norm`'s row).
    mentions: Vec<String>,
    /// Markdown.
    doc: String,
    /// A row of a table of keys or methods, a bullet or a block's section,
    /// rather than a row of some other table.
    primary: bool,
}

pub struct Reference {
    topics: Vec<Topic>,
}

/// The reference, parsed at first use.
pub fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| Reference::parse(README))
}

impl Reference {
    /// What the reference says about `word`: the topics that document it,
    /// or else those that mention it (values such as `rmsnorm`, units).
    pub fn lookup(&self, word: &str) -> Option<String> {
        let named: Vec<&str> = self
            .topics
            .iter()
            .filter(|t| t.names.iter().any(|n| n == word))
            .map(|t| t.doc.as_str())
            .collect();
        if !named.is_empty() {
            return Some(named.join("\n\n---\n\n"));
        }
        let mentioned = |primary: bool| {
            self.topics
                .iter()
                .filter(move |t| t.primary == primary && t.mentions.iter().any(|m| m == word))
                .take(3)
                .map(|t| t.doc.as_str())
                .collect::<Vec<_>>()
        };
        let mut in_use = mentioned(true);
        if in_use.is_empty() {
            in_use = mentioned(false);
        }
        (!in_use.is_empty())
            .then(|| format!("`{word}` is used in:\n\n{}", in_use.join("\n\n---\n\n")))
    }

    fn parse(md: &str) -> Reference {
        let mut topics = Vec::new();
        let mut section = "";
        let mut in_code = false;
        let mut lines = md.lines().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("```") {
                in_code = !in_code;
            } else if in_code {
            } else if let Some(heading) = line.strip_prefix("## ") {
                section = heading;
                // A block's section: its name and the paragraph that opens it.
                if let Some(name) = code_spans(heading).next().and_then(leading_name) {
                    while lines.peek().is_some_and(|l| l.is_empty()) {
                        lines.next();
                    }
                    let mut paragraph = Vec::new();
                    while let Some(l) = lines.next_if(|l| !l.is_empty()) {
                        paragraph.push(l);
                    }
                    topics.push(topic(
                        vec![name],
                        format!("**{heading}**\n\n{}", paragraph.join("\n")),
                        true,
                    ));
                }
            } else if line.starts_with('|') {
                let header = cells(line);
                lines.next(); // |---|---|
                while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
                    if let Some(t) = table_row(section, &header, &cells(row)) {
                        topics.push(t);
                    }
                }
            } else if line.starts_with("- `") {
                let mut text = line[2..].to_string();
                while let Some(more) = lines.next_if(|l| l.starts_with("  ")) {
                    text.push(' ');
                    text.push_str(more.trim());
                }
                let names = code_spans(&text).next().and_then(leading_name);
                topics.push(topic(
                    names.into_iter().collect(),
                    format!("{text}\n\n*{section}*"),
                    true,
                ));
            }
        }
        Reference { topics }
    }
}

/// A row of a table, titled by its name column: `Key`, `Option`,
/// `Statement`, `Budget` or `Method`; rows of other tables (values,
/// `--set`) are only searched for mentions, and the codes' table not at all.
fn table_row(section: &str, header: &[&str], row: &[&str]) -> Option<Topic> {
    if header.first() == Some(&"Code") || header.len() != row.len() {
        return None;
    }
    let title = header
        .iter()
        .position(|h| ["Key", "Option", "Statement", "Budget", "Method"].contains(h));
    let col = title.unwrap_or(0);
    let names: Vec<String> = if title.is_some() {
        let mut names: Vec<String> = code_spans(row[col]).filter_map(leading_name).collect();
        names.dedup();
        names
    } else {
        Vec::new()
    };
    let mut doc = format!("{} — {section}", row[col]);
    for (i, (h, cell)) in header.iter().zip(row).enumerate() {
        if i == col {
        } else if *h == "Meaning" {
            doc.push_str(&format!("\n\n{cell}"));
        } else {
            doc.push_str(&format!("\n\n*{h}:* {cell}"));
        }
    }
    Some(topic(names, doc, title.is_some()))
}

fn topic(names: Vec<String>, doc: String, primary: bool) -> Topic {
    let mut mentions: Vec<String> = code_spans(&doc)
        .flat_map(words)
        .map(|(_, w)| w.to_string())
        .filter(|w| !names.contains(w) && !is_placeholder(w))
        .collect();
    mentions.sort();
    mentions.dedup();
    Topic {
        names,
        mentions,
        doc,
        primary,
    }
}

fn cells(row: &str) -> Vec<&str> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// The contents of each `code span` of markdown text.
fn code_spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// The names in code: runs of identifier characters that start with a
/// letter, with their offsets.
fn words(code: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code
        .char_indices()
        .chain(std::iter::once((code.len(), ' ')))
    {
        match (start, c.is_ascii_alphanumeric() || c == '_') {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                if code[s..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    out.push((s, &code[s..i]));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// The name that code such as `isometric(split = even)`, `noise = σ`,
/// `1500 steps` or `eval every N steps` documents: its first word that is
/// neither a placeholder (`NAME`) nor part of a path (`model.KEY`, `--set`).
fn leading_name(code: &str) -> Option<String> {
    let (_, word) = words(code).into_iter().find(|&(start, word)| {
        let before = code[..start].chars().next_back();
        let after = code[start + word.len()..].chars().next();
        before != Some('.') && before != Some('-') && after != Some('.')
    })?;
    (!is_placeholder(word)).then(|| word.to_string())
}

/// `NAME`, `KEY`, `ARCH`: what the reference writes for the user's names.
fn is_placeholder(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsc_compiler::check::names;

    #[test]
    fn every_name_the_checker_accepts_has_hover_text() {
        let axes = names::Axis::ALL.map(|(n, _)| n);
        let all = [
            names::DATA_KEYS,
            names::MODEL_KEYS,
            names::TRAIN_KEYS,
            names::EVERY,
            names::GROWTH_OPTIONS,
            names::SET_KEYS,
            names::METHODS,
            names::ARCHS,
            names::BASELINES,
            &axes,
        ]
        .concat();
        let missing: Vec<&str> = all
            .iter()
            .copied()
            .filter(|n| reference().lookup(n).is_none())
            .collect();
        assert!(missing.is_empty(), "no hover text for {missing:?}");
    }

    #[test]
    fn rows_document_their_names_and_mention_their_values() {
        let r = reference();
        let val = r.lookup("val").unwrap();
        assert!(val.starts_with("`val` — `data`"), "{val}");
        assert!(val.contains("*Default:* `10%`"), "{val}");
        // Both `optimizer`s: the train key and the growth option.
        let optimizer = r.lookup("optimizer").unwrap();
        assert!(
            optimizer.contains("the only optimizer is `adamw`"),
            "{optimizer}"
        );
        assert!(
            optimizer.contains("Adam moments after growth"),
            "{optimizer}"
        );
        // Every row of `copy`, one per axis it grows.
        let copy = r.lookup("copy").unwrap();
        assert_eq!(copy.matches("*Axis:*").count(), 4, "{copy}");
        assert!(r.lookup("gpt").unwrap().contains("pre-norm decoder"));
        assert!(r.lookup("until").unwrap().contains("validation loss"));
        // A value: the rows where it may be written.
        let rms = r.lookup("rmsnorm").unwrap();
        assert!(rms.starts_with("`rmsnorm` is used in:"), "{rms}");
        assert!(rms.contains("`norm` — `model`"), "{rms}");
        // Placeholders and `--set` paths are no names.
        assert!(r.lookup("KEY").is_none());
        assert!(r.lookup("syntax").is_none());
    }
}
