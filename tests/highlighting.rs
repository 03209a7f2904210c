//! The editors' TextMate grammar (editors/textmate/gs.tmLanguage.json) against
//! the language: every keyword and unit of grammar/gs.pest and every growth
//! method and axis the checker knows gets its scope. The grammar is run by a
//! small TextMate matcher: at each point the pattern that matches earliest
//! wins (the first listed on a tie), as in editors.

use fancy_regex::Regex;
use gsc_compiler::check::names;
use serde_json::Value;

const GRAMMAR: &str = include_str!("../editors/textmate/gs.tmLanguage.json");
const PEST: &str = include_str!("../grammar/gs.pest");

/// A pattern with its regexes compiled.
struct Rule<'g> {
    json: &'g Value,
    /// `match`, or `begin` of a region.
    start: Regex,
    end: Option<Regex>,
}

fn regex(pattern: &Value) -> Regex {
    let p = pattern.as_str().expect("a regex is a string");
    Regex::new(p).unwrap_or_else(|e| panic!("`{p}` does not compile: {e}"))
}

/// The grammar's top-level patterns, `include`s resolved.
fn rules(grammar: &Value) -> Vec<Rule<'_>> {
    fn flatten<'g>(grammar: &'g Value, patterns: &'g Value, out: &mut Vec<Rule<'g>>) {
        for p in patterns.as_array().expect("patterns are a list") {
            if let Some(include) = p["include"].as_str() {
                let name = include
                    .strip_prefix('#')
                    .expect("includes name the repository");
                let target = &grammar["repository"][name];
                assert!(!target.is_null(), "no repository entry `{name}`");
                flatten(grammar, &target["patterns"], out);
            } else if !p["match"].is_null() {
                out.push(Rule {
                    json: p,
                    start: regex(&p["match"]),
                    end: None,
                });
            } else {
                out.push(Rule {
                    json: p,
                    start: regex(&p["begin"]),
                    end: Some(regex(&p["end"])),
                });
            }
        }
    }
    let mut out = Vec::new();
    flatten(grammar, &grammar["patterns"], &mut out);
    out
}

/// The scopes of one line: (start, end, scope), captures after the match
/// they belong to.
fn scopes(rules: &[Rule], line: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < line.len() {
        let found = rules
            .iter()
            .filter_map(|r| {
                let c = r.start.captures_from_pos(line, pos).unwrap()?;
                Some((c.get(0).unwrap().start(), r, c))
            })
            .min_by_key(|(start, _, _)| *start);
        let Some((start, rule, caps)) = found else {
            break;
        };
        let mut end = caps.get(0).unwrap().end();
        if let Some(close) = &rule.end {
            end = close
                .find_from_pos(line, end)
                .unwrap()
                .map_or(line.len(), |m| m.end());
        }
        if let Some(name) = rule.json["name"].as_str() {
            out.push((start, end, name.to_string()));
        }
        let captures = rule.json["captures"]
            .as_object()
            .or(rule.json["beginCaptures"].as_object());
        for (i, scope) in captures.into_iter().flatten() {
            let group = caps.get(i.parse().unwrap());
            if let (Some(g), Some(name)) = (group, scope["name"].as_str()) {
                out.push((g.start(), g.end(), name.to_string()));
            }
        }
        pos = if end > pos {
            end
        } else {
            pos + line[pos..].chars().next().map_or(1, char::len_utf8)
        };
    }
    out
}

/// The innermost scope at byte `at` of `line`, "" for none.
fn scope_at(rules: &[Rule], line: &str, at: usize) -> String {
    scopes(rules, line)
        .into_iter()
        .rev()
        .find(|(s, e, _)| *s <= at && at < *e)
        .map(|(_, _, scope)| scope)
        .unwrap_or_default()
}

/// The scope of `word` (whole) where it first stands in `line`; it must
/// cover the whole word.
fn scope_of(rules: &[Rule], line: &str, word: &str) -> String {
    let re = Regex::new(&format!(r"\b{}(?![A-Za-z0-9_])", fancy_regex::escape(word))).unwrap();
    let m = re
        .find(line)
        .unwrap()
        .unwrap_or_else(|| panic!("`{word}` is not in `{line}`"));
    let first = scope_at(rules, line, m.start());
    let last = scope_at(rules, line, m.end() - 1);
    assert_eq!(first, last, "`{word}` is split in `{line}`");
    first
}

/// The quoted alternatives of the pest rule `name`.
fn pest_words(name: &str) -> Vec<String> {
    PEST.lines()
        .filter(|l| l.starts_with(name))
        .flat_map(|l| l.split('"').skip(1).step_by(2).map(str::to_string))
        .collect()
}

fn grammar() -> Value {
    serde_json::from_str(GRAMMAR).expect("the TextMate grammar is JSON")
}

#[test]
fn every_keyword_of_the_grammar_is_a_keyword() {
    let grammar = grammar();
    assert_eq!(grammar["scopeName"], "source.gs");
    let rules = rules(&grammar);
    // Where each keyword stands in a real statement.
    let samples = [
        ("data", r#"data text { text = "data/input.txt" }"#),
        ("model", "model base = gpt { context = 64 }"),
        ("train", "stage s1: train 200 steps"),
        ("grow", "grow base {"),
        ("compare", "compare c = scratch(base, same flops)"),
        ("stage", "stage s1: train 200 steps"),
        ("until", "stage s: train until val_loss <= 1.5 or 10k steps"),
        ("or", "stage s: train until val_loss <= 1.5 or 10k steps"),
        ("to", "grow ffn to 4 * d_model"),
        ("at", "grow layers + 2 at [0, 3]"),
        ("by", "grow heads + 1 by ramp(100 steps)"),
        ("on", "eval every 200 steps on 20 batches"),
        ("every", "checkpoint every 1k steps"),
        ("same", "compare c = doubling(base, same tokens, at = 50%)"),
        ("set", "set batch = 8 sequences"),
    ];
    let keywords: Vec<String> = pest_words("kw_");
    assert!(keywords.len() >= 15, "{keywords:?}");
    for kw in &keywords {
        let (_, line) = samples
            .iter()
            .find(|(k, _)| k == kw)
            .unwrap_or_else(|| panic!("gs.pest has a new keyword `{kw}`: add a sample here"));
        let scope = scope_of(&rules, line, kw);
        assert!(
            scope.starts_with("keyword."),
            "`{kw}` in `{line}`: {scope:?}"
        );
    }
    // The reserved words are among them.
    for kw in pest_words("keyword ") {
        assert!(keywords.contains(&kw), "{kw}");
    }
    assert_eq!(
        scope_of(&rules, "train { seed = 1 }", "train"),
        "keyword.control.block.gs"
    );
}

#[test]
fn growth_methods_axes_and_units_have_their_scopes() {
    let grammar = grammar();
    let rules = rules(&grammar);
    for method in names::METHODS {
        for line in [
            format!("grow d_model * 2 by {method}"),
            format!("grow heads + 1 by {method}(100 steps), noise = 0"),
        ] {
            assert_eq!(
                scope_of(&rules, &line, method),
                "entity.name.function.method.gs",
                "{line}"
            );
        }
    }
    for (axis, _) in names::Axis::ALL {
        let line = format!("grow {axis} × 1.25");
        assert_eq!(scope_of(&rules, &line, axis), "variable.language.axis.gs");
    }
    let units = pest_words("unit ");
    assert!(units.contains(&"seqs".to_string()), "{units:?}");
    for unit in units {
        let line = format!("batch = 32 {unit}");
        assert_eq!(scope_of(&rules, &line, &unit), "keyword.other.unit.gs");
    }
}

#[test]
fn values_comments_and_keys_have_their_scopes() {
    let grammar = grammar();
    let rules = rules(&grammar);
    for number in [
        "256", "3e-3", "0.95", "1_000", "10k", "1.5G", "2M", "10%", "1e15",
    ] {
        let line = format!("x = {number} + 1");
        assert_eq!(
            scope_of(&rules, &line, number),
            "constant.numeric.gs",
            "{line}"
        );
    }
    // A digit inside a name is no number.
    assert_eq!(scope_at(&rules, "precision = f32", 13), "");
    let line = r#"text = "a // b.txt"  // the corpus"#;
    assert_eq!(scope_at(&rules, line, 10), "string.quoted.double.gs");
    assert_eq!(
        scope_of(&rules, line, "corpus"),
        "comment.line.double-slash.gs"
    );
    let line = "/* a */ context = 2 * 64";
    assert_eq!(scope_at(&rules, line, 3), "comment.block.gs");
    assert_eq!(scope_of(&rules, line, "context"), "variable.other.key.gs");
    assert_eq!(
        scope_at(&rules, "x = unclosed /* a", 16),
        "comment.block.gs"
    );
    let line = "model base = ngpt { d_model = 64 }";
    assert_eq!(scope_of(&rules, line, "base"), "entity.name.type.gs");
    assert_eq!(
        scope_of(&rules, line, "ngpt"),
        "support.type.architecture.gs"
    );
    let line = "optimizer = adamw(lr = 3e-3)";
    assert_eq!(scope_of(&rules, line, "adamw"), "entity.name.function.gs");
    assert_eq!(scope_of(&rules, line, "lr"), "variable.other.key.gs");
    assert_eq!(
        scope_of(&rules, "eval every 200 steps on 20 batches", "eval"),
        "variable.other.key.gs"
    );
    assert_eq!(
        scope_of(&rules, "stage warm: train 500 steps", "warm"),
        "entity.name.section.stage.gs"
    );
    let line = "grow d_model × 1.25";
    assert_eq!(
        scope_at(&rules, line, line.find('×').unwrap()),
        "keyword.operator.arithmetic.gs"
    );
}

#[test]
fn the_vscode_extension_contributes_this_grammar() {
    let package: Value =
        serde_json::from_str(include_str!("../editors/vscode/package.json")).unwrap();
    let contributes = &package["contributes"];
    assert_eq!(contributes["languages"][0]["id"], "gs");
    assert_eq!(contributes["languages"][0]["extensions"][0], ".gs");
    assert_eq!(contributes["grammars"][0]["language"], "gs");
    assert_eq!(
        contributes["grammars"][0]["scopeName"],
        grammar()["scopeName"]
    );
}
