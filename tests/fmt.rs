//! `gsc fmt` round-trips: the canonical text parses to the same tree, is a
//! fixed point, and keeps every comment.

mod common;

use gsc_compiler::syntax::{comments, format::format, parse};
use serde_json::Value;

/// The AST as JSON with every span removed: formatting moves text around.
fn shape(source: &str) -> Option<Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !k.ends_with("span"));
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(parse(source).ok()?).unwrap();
    strip(&mut v);
    Some(v)
}

#[test]
fn fmt_round_trips() {
    let mut files = common::examples();
    files.extend(common::gs_files("tests/ui"));
    let mut checked = 0;
    for path in files {
        let source = std::fs::read_to_string(&path).unwrap();
        let Some(before) = shape(&source) else {
            continue;
        };
        let once = format(&source, &parse(&source).unwrap());
        let after = shape(&once).unwrap_or_else(|| {
            panic!("{}: formatted text does not parse:\n{once}", path.display())
        });
        assert_eq!(
            before,
            after,
            "{}: formatting changed the tree",
            path.display()
        );
        let twice = format(&once, &parse(&once).unwrap());
        assert_eq!(once, twice, "{}: fmt is not idempotent", path.display());
        let texts = |s: &str| {
            comments::scan(s)
                .into_iter()
                .map(|c| c.text)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            texts(&source),
            texts(&once),
            "{}: comments were lost or reordered",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 4);
}

/// The examples are written in canonical form (`gsc fmt --check` passes).
#[test]
fn examples_are_formatted() {
    for path in common::examples() {
        let source = std::fs::read_to_string(&path).unwrap();
        let formatted = format(&source, &parse(&source).unwrap());
        assert_eq!(
            source,
            formatted,
            "{} is not in canonical form",
            path.display()
        );
    }
}
