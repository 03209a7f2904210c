//! Byte offsets ↔ LSP positions. The compiler's spans are byte offsets; LSP
//! counts lines and UTF-16 code units, so `×` or `→` (one unit, several bytes)
//! must be counted, not measured.

use lsp_types::{Position, Range};

pub struct LineIndex<'a> {
    text: &'a str,
    /// The byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = self.floor(offset);
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        Position::new(
            line as u32,
            self.text[start..offset].encode_utf16().count() as u32,
        )
    }

    pub fn range(&self, start: usize, end: usize) -> Range {
        Range::new(self.position(start), self.position(end.max(start)))
    }

    /// The byte offset of `pos`; past the end of a line is its end, past the
    /// last line the end of the text.
    pub fn offset(&self, pos: Position) -> usize {
        let Some(&start) = self.starts.get(pos.line as usize) else {
            return self.text.len();
        };
        let mut units = 0;
        for (i, c) in self.text[start..].char_indices() {
            if c == '\n' || units >= pos.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        self.text.len()
    }

    /// `offset` clamped into the text and onto a character boundary.
    fn floor(&self, offset: usize) -> usize {
        let mut o = offset.min(self.text.len());
        while !self.text.is_char_boundary(o) {
            o -= 1;
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_utf16_units_and_round_trips() {
        let text = "grow d_model × 2 // 64 → 128\nstage 😀: x\n";
        let index = LineIndex::new(text);
        let times = text.find('×').unwrap();
        let after = times + '×'.len_utf8();
        assert_eq!(index.position(times), Position::new(0, 13));
        assert_eq!(index.position(after), Position::new(0, 14));
        let x = text.rfind('x').unwrap();
        // The emoji is two UTF-16 units.
        assert_eq!(index.position(x), Position::new(1, 10));
        for offset in [0, times, after, x, text.len()] {
            assert_eq!(index.offset(index.position(offset)), offset);
        }
        assert_eq!(index.position(text.len()), Position::new(2, 0));
        assert_eq!(
            index.offset(Position::new(0, 999)),
            text.find('\n').unwrap()
        );
        assert_eq!(index.offset(Position::new(9, 0)), text.len());
        // Inside a multi-byte character: its start.
        assert_eq!(index.position(times + 1), Position::new(0, 13));
    }
}
