//! No input makes the front end panic: arbitrary bytes, and the examples
//! mutated at random (token deletions, insertions, swaps). Bounded so CI
//! stays fast; raise PROPTEST_CASES to search longer.

mod common;

use gsc_compiler::check_source;
use proptest::prelude::*;
use std::path::Path;

/// Words of the language, so mutations produce near-valid programs that reach
/// the checker, not just the parser.
const TOKENS: &[&str] = &[
    "data",
    "model",
    "train",
    "grow",
    "stage",
    "compare",
    "set",
    "until",
    "or",
    "to",
    "at",
    "by",
    "every",
    "on",
    "same",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "=",
    ",",
    ":",
    "*",
    "×",
    "+",
    "-",
    "/",
    "<=",
    "0",
    "1",
    "-1",
    "2.5",
    "1e999",
    "10k",
    "3M",
    "10%",
    "0%",
    "100%",
    "steps",
    "tokens",
    "flops",
    "sequences",
    "batches",
    "d_model",
    "heads",
    "kv_heads",
    "head_dim",
    "ffn",
    "layers",
    "context",
    "vocab",
    "gpt",
    "ngpt",
    "copy",
    "zero",
    "isometric(split = uneven)",
    "identity",
    "stack",
    "ramp(0 steps)",
    "\"../data/none.txt\"",
    "\"\"",
    "//",
    "\n",
    "val_loss",
    "tokenizer",
    "layernorm",
    "99999999999",
    "0.0001",
    "[0, 0]",
    "[-1]",
];

fn check_no_panic(source: &str) {
    let checked = check_source("fuzz.gs", source, Path::new("examples"), &[]);
    // Rendering walks every span: it must not panic either.
    let _ = checked.report.render(false);
}

fn mutate(source: &str, edits: &[(usize, usize, usize)]) -> String {
    let mut words: Vec<String> = source
        .split_inclusive(char::is_whitespace)
        .map(str::to_string)
        .collect();
    for &(kind, at, tok) in edits {
        if words.is_empty() {
            break;
        }
        let i = at % words.len();
        let token = TOKENS[tok % TOKENS.len()];
        match kind % 4 {
            0 => {
                words.remove(i);
            }
            1 => words.insert(i, format!("{token} ")),
            2 => words[i] = format!("{token} "),
            _ => {
                let j = (at / 7) % words.len();
                words.swap(i, j);
            }
        }
    }
    words.concat()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_no_panic(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_token_soup(toks in proptest::collection::vec(0..TOKENS.len(), 0..60)) {
        let text: Vec<&str> = toks.iter().map(|t| TOKENS[*t]).collect();
        check_no_panic(&text.join(" "));
    }

    #[test]
    fn mutated_examples(
        which in 0usize..4,
        edits in proptest::collection::vec((0usize..4, 0usize..10_000, 0usize..1000), 1..6),
    ) {
        let files = common::examples();
        let source = std::fs::read_to_string(&files[which % files.len()]).unwrap();
        check_no_panic(&mutate(&source, &edits));
    }
}
