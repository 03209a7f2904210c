//! Diagnostics tests: every `tests/ui/*.gs` holds one mistake. Its first line
//! says which code it must raise (`// expect: gs::…`); lines right after it
//! of the form `// --set KEY=VALUE` are passed as command-line overrides. The
//! rendered diagnostics are snapshotted, so a change in wording is reviewed by eye.

use gsc_compiler::check_source;
use std::path::Path;

#[test]
fn ui_cases() {
    let dir = Path::new("tests/ui");
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/ui exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "gs"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "expected at least 30 ui cases, found {}",
        cases.len()
    );
    for path in cases {
        let source = std::fs::read_to_string(&path).expect("ui case is text");
        let expect = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .unwrap_or_else(|| panic!("{} must begin with `// expect: gs::…`", path.display()))
            .trim()
            .to_string();
        let overrides: Vec<String> = source
            .lines()
            .skip(1)
            .map_while(|l| l.strip_prefix("// --set "))
            .map(|o| o.trim().to_string())
            .collect();
        let name = format!("ui/{}", path.file_name().unwrap().to_string_lossy());
        let checked = check_source(&name, &source, dir, &overrides);
        let codes: Vec<&str> = checked.report.diags.iter().map(|d| d.code).collect();
        assert!(checked.report.has_errors(), "{name}: no error reported");
        assert!(
            codes.contains(&expect.as_str()),
            "{name}: expected {expect}, got {codes:?}"
        );
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        insta::with_settings!({ snapshot_path => "ui/snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(stem, checked.report.render(false));
        });
    }
}
