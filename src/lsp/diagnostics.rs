//! `gsc check`'s diagnostics for a document's text, as LSP diagnostics.

use super::position::LineIndex;
use gsc_compiler::check_source;
use gsc_compiler::diag::Diag;
use lsp_types::{
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString, Url,
};
use miette::Severity;
use std::path::{Path, PathBuf};

/// Checks `text` as `gsc check` checks the file at `uri`: relative data paths
/// resolve against the document's folder (the working directory for a
/// document not on disk).
pub fn check(uri: &Url, text: &str) -> Vec<Diagnostic> {
    let path = uri.to_file_path().ok();
    let name = path
        .as_ref()
        .map_or(uri.to_string(), |p| p.display().to_string());
    let base = path
        .as_deref()
        .and_then(Path::parent)
        .map_or(PathBuf::from("."), Path::to_path_buf);
    let checked = check_source(&name, text, &base, &[]);
    let index = LineIndex::new(&checked.report.source);
    checked
        .report
        .diags
        .iter()
        .map(|d| convert(d, uri, &index))
        .collect()
}

fn convert(d: &Diag, uri: &Url, index: &LineIndex) -> Diagnostic {
    let primary = d.primary();
    let mut message = d.message.clone();
    if let Some((_, label)) = d.labels.first().filter(|(_, l)| !l.is_empty()) {
        message.push_str(&format!("\n{label}"));
    }
    if let Some(help) = &d.help {
        message.push_str(&format!("\nhelp: {help}"));
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .labels
        .iter()
        .skip(1)
        .map(|(span, label)| DiagnosticRelatedInformation {
            location: Location::new(uri.clone(), index.range(span.start, span.end)),
            message: if label.is_empty() {
                d.message.clone()
            } else {
                label.clone()
            },
        })
        .collect();
    Diagnostic {
        range: index.range(primary.start, primary.end),
        severity: Some(match d.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
            Severity::Advice => DiagnosticSeverity::HINT,
        }),
        code: Some(NumberOrString::String(d.code.to_string())),
        source: Some("gsc".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Diagnostic::default()
    }
}
