//! `gsc lsp`: a language server over stdio for `.gs` files: `gsc check`'s
//! diagnostics as the user types, `gsc fmt` as formatting, hover from the
//! language reference, and completion of keys, methods and architectures.

mod completion;
mod diagnostics;
mod documents;
mod formatting;
mod hover;
mod position;
mod reference;
mod scan;

use documents::Documents;
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, DidSaveTextDocument,
    Notification as _, PublishDiagnostics,
};
use lsp_types::request::{Completion, Formatting, HoverRequest, Request as _};
use lsp_types::{
    CompletionOptions, HoverProviderCapability, OneOf, PublishDiagnosticsParams,
    ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind, TextDocumentSyncOptions,
    TextDocumentSyncSaveOptions,
};
use std::time::Duration;

/// How long typing must pause before a changed document is checked: a burst
/// of keystrokes is checked once.
const SETTLE: Duration = Duration::from_millis(50);

/// Serves one client on stdin and stdout until it says `exit`; false when the
/// connection broke or the client exited without `shutdown`.
pub fn serve() -> bool {
    let (connection, io_threads) = Connection::stdio();
    let capabilities = serde_json::to_value(capabilities()).expect("capabilities are plain data");
    let served = match connection.initialize(capabilities) {
        Ok(_) => serve_loop(&connection),
        Err(e) => Err(e.to_string()),
    };
    drop(connection);
    let joined = io_threads.join().map_err(|e| e.to_string());
    match served.and_then(|clean| joined.map(|()| clean)) {
        Ok(clean) => clean,
        Err(e) => {
            eprintln!("error: gsc lsp: {e}");
            false
        }
    }
}

fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Options(
            TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(TextDocumentSyncKind::FULL),
                save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                ..TextDocumentSyncOptions::default()
            },
        )),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![" ".to_string(), "{".to_string()]),
            ..CompletionOptions::default()
        }),
        document_formatting_provider: Some(OneOf::Left(true)),
        ..ServerCapabilities::default()
    }
}

/// Answers requests and follows the documents until `exit`: Ok(true) after a
/// `shutdown`, Ok(false) without one.
fn serve_loop(connection: &Connection) -> Result<bool, String> {
    let mut docs = Documents::default();
    loop {
        let message = if docs.has_stale() {
            match connection.receiver.recv_timeout(SETTLE) {
                Ok(m) => m,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    publish(connection, &mut docs)?;
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(false),
            }
        } else {
            match connection.receiver.recv() {
                Ok(m) => m,
                Err(_) => return Ok(false),
            }
        };
        match message {
            Message::Request(req) => {
                if connection
                    .handle_shutdown(&req)
                    .map_err(|e| e.to_string())?
                {
                    return Ok(true);
                }
                let response = answer(&docs, req);
                connection
                    .sender
                    .send(response.into())
                    .map_err(|e| e.to_string())?;
            }
            Message::Notification(n) if n.method == "exit" => return Ok(false),
            Message::Notification(n) => follow(&mut docs, n),
            Message::Response(_) => {}
        }
    }
}

/// Publishes the diagnostics of every document changed since last time.
fn publish(connection: &Connection, docs: &mut Documents) -> Result<(), String> {
    for (uri, doc) in docs.take_stale() {
        let params = PublishDiagnosticsParams {
            diagnostics: diagnostics::check(&uri, &doc.text),
            uri,
            version: Some(doc.version),
        };
        let n = Notification::new(PublishDiagnostics::METHOD.to_string(), params);
        connection
            .sender
            .send(n.into())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn follow(docs: &mut Documents, n: Notification) {
    match n.method.as_str() {
        DidOpenTextDocument::METHOD => {
            if let Ok(p) =
                n.extract::<lsp_types::DidOpenTextDocumentParams>(DidOpenTextDocument::METHOD)
            {
                docs.set(
                    p.text_document.uri,
                    p.text_document.text,
                    p.text_document.version,
                );
            }
        }
        DidChangeTextDocument::METHOD => {
            if let Ok(p) =
                n.extract::<lsp_types::DidChangeTextDocumentParams>(DidChangeTextDocument::METHOD)
            {
                // Full sync: the last change holds the whole text.
                if let Some(change) = p.content_changes.into_iter().last() {
                    docs.set(p.text_document.uri, change.text, p.text_document.version);
                }
            }
        }
        DidSaveTextDocument::METHOD => {
            if let Ok(p) =
                n.extract::<lsp_types::DidSaveTextDocumentParams>(DidSaveTextDocument::METHOD)
            {
                docs.touch(&p.text_document.uri);
            }
        }
        DidCloseTextDocument::METHOD => {
            if let Ok(p) =
                n.extract::<lsp_types::DidCloseTextDocumentParams>(DidCloseTextDocument::METHOD)
            {
                docs.close(&p.text_document.uri);
            }
        }
        _ => {}
    }
}

fn answer(docs: &Documents, req: Request) -> Response {
    let id = req.id.clone();
    // A bug in a handler answers this request with an error rather than
    // ending the server and the editor's session with it.
    match std::panic::catch_unwind(|| dispatch(docs, req)) {
        Ok(response) => response,
        Err(_) => Response::new_err(
            id,
            ErrorCode::InternalError as i32,
            "gsc lsp failed on this request".to_string(),
        ),
    }
}

fn dispatch(docs: &Documents, req: Request) -> Response {
    let id = req.id.clone();
    let text = |uri: &lsp_types::Url| docs.get(uri).map(|d| d.text.as_str());
    match req.method.as_str() {
        HoverRequest::METHOD => respond::<lsp_types::HoverParams, _>(req, |p| {
            let at = p.text_document_position_params;
            text(&at.text_document.uri).and_then(|t| hover::hover(t, at.position))
        }),
        Completion::METHOD => respond::<lsp_types::CompletionParams, _>(req, |p| {
            let at = p.text_document_position;
            text(&at.text_document.uri).map(|t| completion::complete(t, at.position))
        }),
        Formatting::METHOD => respond::<lsp_types::DocumentFormattingParams, _>(req, |p| {
            text(&p.text_document.uri).and_then(formatting::format)
        }),
        method => Response::new_err(
            id,
            ErrorCode::MethodNotFound as i32,
            format!("gsc lsp does not answer `{method}`"),
        ),
    }
}

/// Decodes a request's parameters and answers with `handle`'s result.
fn respond<P, R>(req: Request, handle: impl FnOnce(P) -> R) -> Response
where
    P: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    let id: RequestId = req.id.clone();
    match serde_json::from_value::<P>(req.params) {
        Ok(params) => Response::new_ok(id, handle(params)),
        Err(e) => Response::new_err(
            id,
            ErrorCode::InvalidParams as i32,
            format!("bad parameters for `{}`: {e}", req.method),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request at every position of every prefix of the ui cases (each
    /// one mistake) and the examples: an answer, never a panic.
    #[test]
    fn every_prefix_of_every_case_gets_answers() {
        let mut sources = Vec::new();
        for dir in ["tests/ui", "examples"] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "gs") {
                    let path = std::fs::canonicalize(path).unwrap();
                    let uri = lsp_types::Url::from_file_path(&path).unwrap();
                    sources.push((uri, std::fs::read_to_string(path).unwrap()));
                }
            }
        }
        assert!(sources.len() > 100);
        let (mut formatted, mut expected) = (0, 0);
        for (uri, source) in &sources {
            // A ui case's mistake, unless it needs `--set`s, which an
            // editor does not pass.
            let found = diagnostics::check(uri, source);
            let expect = source
                .strip_prefix("// expect: ")
                .and_then(|s| s.lines().next());
            if let Some(code) = expect.filter(|_| !source.contains("\n// --set ")) {
                expected += 1;
                let code = lsp_types::NumberOrString::String(code.trim().to_string());
                assert!(
                    found.iter().any(|d| d.code.as_ref() == Some(&code)),
                    "{uri}: {found:?}"
                );
            }
            for d in found {
                assert!(d.range.start <= d.range.end, "{uri}: {d:?}");
            }
            let cuts = source.char_indices().map(|(i, _)| i);
            for cut in cuts.chain([source.len()]) {
                let text = &source[..cut];
                let end = position::LineIndex::new(text).position(cut);
                completion::complete(text, end);
                hover::hover(text, end);
            }
            let index = position::LineIndex::new(source);
            for (i, _) in source.char_indices() {
                hover::hover(source, index.position(i));
            }
            formatted += usize::from(formatting::format(source).is_some());
        }
        assert!(expected > 90, "{expected}");
        // Most cases parse (their mistakes are in meaning, not syntax).
        assert!(formatted > sources.len() / 2, "{formatted}");
    }
}
