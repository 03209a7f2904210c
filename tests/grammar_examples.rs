//! Every example of the language reference, `grammar/README.md`, is checked
//! as `gsc check` checks it from the repository root, the way rustc checks
//! its error-code docs: a ```` ```gs ```` block must check with no
//! diagnostic, a ```` ```gs error=gs::CODE ```` block must fail with errors
//! of that code alone, a ```` ```gs warning=gs::CODE ```` block must pass
//! with warnings of that code alone (see `common::reference_examples`). The
//! reference's table of diagnostic codes must list exactly the codes the
//! compiler emits, and each of them must have an example. The examples read
//! the corpora of `scripts/fetch-data` and the files of `tests/fixtures/`.

mod common;

use common::{Expect, ReferenceExample, REFERENCE};
use gsc_compiler::{check_source, Checked};
use std::collections::BTreeSet;
use std::path::Path;

/// `gsc check`'s own entry (the command line calls it with the file's
/// folder as the base of data paths), in this process: no spawn per example.
fn check(example: &ReferenceExample) -> Checked {
    check_source(
        "example.gs",
        &example.source,
        Path::new("."),
        &example.overrides,
    )
}

/// Why `checked` does not give what `example` expects, if it does not.
fn mismatch(example: &ReferenceExample, checked: &Checked) -> Option<String> {
    let codes = |errors: bool| -> BTreeSet<&str> {
        let diags = checked.report.diags.iter();
        diags
            .filter(|d| d.is_error() == errors)
            .map(|d| d.code)
            .collect()
    };
    let (errors, warnings) = (codes(true), codes(false));
    let ok = match &example.expect {
        Expect::Clean => errors.is_empty() && warnings.is_empty(),
        Expect::Error(code) => errors == BTreeSet::from([code.as_str()]),
        Expect::Warning(code) => errors.is_empty() && warnings == BTreeSet::from([code.as_str()]),
    };
    (!ok).then(|| {
        format!(
            "{REFERENCE}:{}: expected {:?}, got errors {errors:?}, warnings {warnings:?}\n{}",
            example.line,
            example.expect,
            checked.report.render(false)
        )
    })
}

#[test]
fn every_example_checks_as_its_fence_says() {
    common::require_data();
    let examples = common::reference_examples();
    assert!(
        examples.len() >= 20,
        "{REFERENCE}: {} examples",
        examples.len()
    );
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|e| mismatch(e, &check(e)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The command line agrees with the entry the other tests call: a clean
/// example passes, an annotated one fails with its code, data paths resolved
/// from the file's folder as from the repository root.
#[test]
fn gsc_check_agrees_on_a_clean_and_a_failing_example() {
    common::require_data();
    let examples = common::reference_examples();
    let clean = examples.iter().find(|e| e.expect == Expect::Clean);
    let failing = examples
        .iter()
        .find(|e| matches!(e.expect, Expect::Error(_)) && e.overrides.is_empty());
    // The examples' data paths, seen from the temporary file's folder.
    let dir = common::fresh("grammar-examples");
    for folder in ["data", "tests"] {
        let target = std::fs::canonicalize(folder).unwrap();
        std::os::unix::fs::symlink(target, dir.join(folder)).unwrap();
    }
    for example in [
        clean.expect("a clean example"),
        failing.expect("an error example"),
    ] {
        let file = dir.join(format!("line{}.gs", example.line));
        std::fs::write(&file, &example.source).unwrap();
        let out = common::gsc().arg("check").arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let at = format!("{REFERENCE}:{}: gsc check: {stderr}", example.line);
        match &example.expect {
            Expect::Error(code) => {
                assert_eq!(out.status.code(), Some(1), "{at}");
                assert!(stderr.contains(code.as_str()), "{at}");
            }
            _ => assert!(out.status.success() && stderr.is_empty(), "{at}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The codes of the reference's "Diagnostic codes" table.
fn documented_codes() -> BTreeSet<String> {
    let text = std::fs::read_to_string(REFERENCE).unwrap();
    let table = text
        .split("## Diagnostic codes")
        .nth(1)
        .unwrap_or_else(|| panic!("{REFERENCE} has no `## Diagnostic codes` section"));
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|c| c.starts_with("gs::"))
        .map(str::to_string)
        .collect()
}

/// Every `"gs::…"` string literal of the compiler's sources.
fn emitted_codes() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let mut dirs = vec![Path::new("compiler/src").to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for literal in text.split("\"gs::").skip(1) {
                    let name = literal.split('"').next().unwrap();
                    codes.insert(format!("gs::{name}"));
                }
            }
        }
    }
    codes
}

#[test]
fn the_code_table_lists_exactly_the_codes_the_compiler_emits() {
    let documented = documented_codes();
    let emitted = emitted_codes();
    assert!(emitted.len() >= 30, "compiler/src: {emitted:?}");
    let undocumented: Vec<_> = emitted.difference(&documented).collect();
    let unused: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        undocumented.is_empty() && unused.is_empty(),
        "{REFERENCE}, Diagnostic codes: emitted by compiler/src but not in the table: \
         {undocumented:?}; in the table but never emitted: {unused:?}"
    );
}

#[test]
fn every_code_has_an_example() {
    let illustrated: BTreeSet<String> = common::reference_examples()
        .into_iter()
        .filter_map(|e| match e.expect {
            Expect::Error(code) | Expect::Warning(code) => Some(code),
            Expect::Clean => None,
        })
        .collect();
    let missing: Vec<_> = documented_codes()
        .difference(&illustrated)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE}: no ```gs error=… or ```gs warning=… example for {missing:?}"
    );
}
