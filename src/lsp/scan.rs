//! A forgiving lexer for documents being typed: completion and hover need
//! the tokens around the cursor even when the text does not parse.

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Ident,
    Number,
    /// A string, closed or running to the end of its line.
    Str,
    /// A comment, closed or (for `/*`) running to the end of the text.
    Comment,
    /// One character of punctuation or an operator (`<=` is two tokens).
    Punct(char),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start..self.end]
    }

    /// Whether a comment or a string holds `offset`: just after one that is
    /// not closed (a line comment, a string at the end of its line) is still
    /// inside it.
    pub fn quotes(&self, text: &str, offset: usize) -> bool {
        let t = self.text(text);
        let open = match self.kind {
            Kind::Comment => t.starts_with("//") || t.len() < 4 || !t.ends_with("*/"),
            Kind::Str => t.len() < 2 || !t.ends_with('"'),
            _ => return false,
        };
        self.start < offset && (offset < self.end || (offset == self.end && open))
    }
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let rest = &text[start..];
        let (kind, len) = if c.is_whitespace() {
            continue;
        } else if rest.starts_with("//") {
            (Kind::Comment, rest.find('\n').unwrap_or(rest.len()))
        } else if let Some(body) = rest.strip_prefix("/*") {
            (Kind::Comment, body.find("*/").map_or(rest.len(), |i| i + 4))
        } else if c == '"' {
            let end = rest[1..].find(['"', '\n']);
            let close = end.is_some_and(|i| rest[1 + i..].starts_with('"'));
            (
                Kind::Str,
                end.map_or(rest.len(), |i| 1 + i + usize::from(close)),
            )
        } else if c.is_ascii_digit() {
            // Digits, `.`, magnitudes, exponents (`3e-3`) and `%` together.
            let mut end = 0;
            let bytes = rest.as_bytes();
            while end < bytes.len() {
                let b = bytes[end];
                let sign = (b == b'-' || b == b'+') && matches!(bytes[end - 1], b'e' | b'E');
                if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%' || sign) {
                    break;
                }
                end += 1;
            }
            (Kind::Number, end)
        } else if ident_char(c) {
            (
                Kind::Ident,
                rest.find(|c| !ident_char(c)).unwrap_or(rest.len()),
            )
        } else {
            (Kind::Punct(c), c.len_utf8())
        };
        out.push(Token {
            kind,
            start,
            end: start + len,
        });
        while chars.peek().is_some_and(|(i, _)| *i < start + len) {
            chars.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        tokens(text)
            .iter()
            .map(|t| (t.kind, t.text(text)))
            .collect()
    }

    #[test]
    fn splits_a_growth_step_with_comments_and_unclosed_strings() {
        assert_eq!(
            kinds("grow d_model × 1.5e-3 by copy, noise = 10% // why\n/* a"),
            vec![
                (Kind::Ident, "grow"),
                (Kind::Ident, "d_model"),
                (Kind::Punct('×'), "×"),
                (Kind::Number, "1.5e-3"),
                (Kind::Ident, "by"),
                (Kind::Ident, "copy"),
                (Kind::Punct(','), ","),
                (Kind::Ident, "noise"),
                (Kind::Punct('='), "="),
                (Kind::Number, "10%"),
                (Kind::Comment, "// why"),
                (Kind::Comment, "/* a"),
            ]
        );
        assert_eq!(
            kinds("text = \"a.txt\n\"b\""),
            vec![
                (Kind::Ident, "text"),
                (Kind::Punct('='), "="),
                (Kind::Str, "\"a.txt"),
                (Kind::Str, "\"b\""),
            ]
        );
    }
}
