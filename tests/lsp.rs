//! `gsc lsp` driven over stdio as an editor drives it: diagnostics as the
//! text changes, hover, completion, formatting, and a clean shutdown.

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// A `gsc lsp` process and the messages it sends.
struct Client {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    /// Messages received while waiting for another.
    held: Vec<Value>,
    next_id: i64,
}

impl Client {
    fn start(dir: &Path) -> Client {
        let mut child = common::gsc()
            .arg("lsp")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gsc lsp starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, incoming) = mpsc::channel();
        // A reader thread, so that a silent server fails the test by timeout.
        std::thread::spawn(move || loop {
            let mut length = 0;
            loop {
                let mut line = String::new();
                if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some(n) = line.strip_prefix("Content-Length: ") {
                    length = n.parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            stdout.read_exact(&mut body).unwrap();
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
        });
        let mut client = Client {
            child,
            stdin,
            incoming,
            held: Vec::new(),
            next_id: 1,
        };
        let init = client.request("initialize", json!({ "capabilities": {} }));
        let caps = &init["result"]["capabilities"];
        assert_eq!(caps["documentFormattingProvider"], true, "{init}");
        assert_eq!(caps["hoverProvider"], true, "{init}");
        client.notify("initialized", json!({}));
        client
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The first message that `wanted` accepts, holding the others back.
    fn wait(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.held.iter().position(&wanted) {
            return self.held.remove(i);
        }
        loop {
            let message = self
                .incoming
                .recv_timeout(Duration::from_secs(30))
                .expect("gsc lsp answers within 30 s");
            if wanted(&message) {
                return message;
            }
            self.held.push(message);
        }
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Sends a request and returns its response (with `result` or `error`).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        self.wait(|m| m["id"] == id)
    }

    /// The diagnostics published for version `version` of `uri`.
    fn diagnostics(&mut self, uri: &str, version: i32) -> Value {
        self.wait(|m| {
            m["method"] == "textDocument/publishDiagnostics"
                && m["params"]["uri"] == uri
                && m["params"]["version"] == version
        })["params"]
            .clone()
    }

    fn at(&mut self, method: &str, uri: &str, line: u32, character: u32) -> Value {
        self.request(
            method,
            json!({
                "textDocument": { "uri": uri },
                "position": { "line": line, "character": character },
            }),
        )
    }
}

/// A folder with a data file and `FILE` in it: a schedule whose data path is
/// relative, as in a real project.
fn project(name: &str) -> (std::path::PathBuf, String) {
    let dir = common::fresh(name);
    std::fs::write(
        dir.join("data.txt"),
        "To be, or not to be, that is the question. ".repeat(100),
    )
    .unwrap();
    let uri = format!("file://{}", dir.join("schedule.gs").display());
    (dir, uri)
}

/// Two errors: a key set twice (with the first setting as related
/// information) and a misspelt method after `×`, which is one UTF-16 unit but
/// two bytes.
const BROKEN: &str = r#"data text { text = "data.txt" }
model base = gpt { context = 64  d_model = 64  heads = 2  layers = 2  heads = 4 }
grow base {
    stage small: train 200 steps
    grow d_model × 1.5 by isometrc   // 64 → 96
    stage big: train 200 steps
}
"#;

#[test]
fn diagnostics_follow_the_text_as_it_changes() {
    let (dir, uri) = project("lsp-diagnostics");
    let mut client = Client::start(&dir);
    client.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": uri, "languageId": "gs", "version": 1, "text": BROKEN } }),
    );
    let published = client.diagnostics(&uri, 1);
    let shown = published["diagnostics"]
        .to_string()
        .replace(&uri, "file:///DOC");
    insta::assert_json_snapshot!(
        "broken_schedule",
        serde_json::from_str::<Value>(&shown).unwrap()
    );
    let method = &published["diagnostics"][1];
    assert_eq!(method["code"], "gs::method");
    // `isometrc` starts at character 26 of line 4 (byte 27: `×` is two bytes).
    assert_eq!(
        method["range"],
        json!({ "start": { "line": 4, "character": 26 }, "end": { "line": 4, "character": 34 } })
    );

    let fixed = BROKEN
        .replace("  heads = 4 ", " ")
        .replace("isometrc", "isometric");
    client.notify(
        "textDocument/didChange",
        json!({
            "textDocument": { "uri": uri, "version": 2 },
            "contentChanges": [{ "text": fixed }],
        }),
    );
    let published = client.diagnostics(&uri, 2);
    assert_eq!(published["diagnostics"], json!([]), "{published}");

    // The same text with the data file gone: its folder is the document's.
    std::fs::remove_file(dir.join("data.txt")).unwrap();
    client.notify(
        "textDocument/didSave",
        json!({ "textDocument": { "uri": uri } }),
    );
    let published = client.diagnostics(&uri, 2);
    assert_eq!(
        published["diagnostics"][0]["code"], "gs::data-missing",
        "{published}"
    );
    shut_down(client);
}

#[test]
fn hover_and_completion_come_from_the_reference_and_the_checker() {
    let (dir, uri) = project("lsp-hover");
    let mut client = Client::start(&dir);
    let text = "data text { text = \"data.txt\" }\n\
                model base = gpt { context = 64  d_model = 64  heads = 2    }\n\
                grow base {\n    stage small: train 200 steps\n    grow layers + 1 by \n}\n\n";
    client.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": uri, "languageId": "gs", "version": 1, "text": text } }),
    );

    // `d_model`, line 1 (hovered in its middle).
    let hover = client.at("textDocument/hover", &uri, 1, 36);
    let doc = hover["result"]["contents"]["value"].as_str().unwrap();
    assert!(doc.contains("width of the residual stream"), "{doc}");
    assert_eq!(
        hover["result"]["range"],
        json!({ "start": { "line": 1, "character": 33 }, "end": { "line": 1, "character": 40 } })
    );
    let hover = client.at("textDocument/hover", &uri, 1, 14);
    let doc = hover["result"]["contents"]["value"].as_str().unwrap();
    assert!(doc.contains("pre-norm decoder with RoPE"), "{doc}");

    // Inside the model block, after `heads = 2`: model keys only.
    let labels = |response: &Value| -> Vec<String> {
        response["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{response}"))
            .iter()
            .map(|item| item["label"].as_str().unwrap().to_string())
            .collect()
    };
    let keys = labels(&client.at("textDocument/completion", &uri, 1, 60));
    for key in ["layers", "ffn", "activation", "kv_heads"] {
        assert!(
            keys.contains(&key.to_string()),
            "{key} missing from {keys:?}"
        );
    }
    for key in ["optimizer", "batch", "text", "gpt"] {
        assert!(
            !keys.contains(&key.to_string()),
            "{key} offered in {keys:?}"
        );
    }
    // After `by` in a step that grows layers: the methods for layers.
    let methods = labels(&client.at("textDocument/completion", &uri, 4, 23));
    assert_eq!(methods, ["identity", "stack"]);
    let hover = client.at("textDocument/hover", &uri, 4, 9);
    let doc = hover["result"]["contents"]["value"].as_str().unwrap();
    assert!(doc.contains("number of blocks"), "{doc}");
    // At the top level: the blocks.
    let blocks = labels(&client.at("textDocument/completion", &uri, 6, 0));
    assert_eq!(blocks, ["data", "model", "train", "grow", "compare"]);
    shut_down(client);
}

#[test]
fn hover_on_a_growth_method_explains_when_it_is_exact() {
    let (dir, uri) = project("lsp-method");
    let mut client = Client::start(&dir);
    client.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": uri, "languageId": "gs", "version": 1, "text": BROKEN.replace("isometrc", "isometric") } }),
    );
    let hover = client.at("textDocument/hover", &uri, 4, 30);
    let doc = hover["result"]["contents"]["value"].as_str().unwrap();
    assert!(doc.contains("the isometric map E"), "{doc}");
    assert!(doc.contains("Exact when"), "{doc}");
    shut_down(client);
}

#[test]
fn formatting_is_gsc_fmt_and_bad_documents_get_answers() {
    let (dir, uri) = project("lsp-fmt");
    let messy = "data text {text=\"data.txt\"}   // corpus\nmodel base=gpt{context=64 d_model=64 heads=2 layers=2}\n\
                 grow base{stage main:train 100 steps}\n";
    std::fs::write(dir.join("schedule.gs"), messy).unwrap();
    assert!(common::gsc()
        .args(["fmt", "schedule.gs"])
        .current_dir(&dir)
        .status()
        .unwrap()
        .success());
    let canonical = std::fs::read_to_string(dir.join("schedule.gs")).unwrap();
    assert_ne!(canonical, messy);

    let mut client = Client::start(&dir);
    let open = |client: &mut Client, version: i32, text: &str| {
        client.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [{ "text": text }] }),
        );
    };
    client.notify(
        "textDocument/didOpen",
        json!({ "textDocument": { "uri": uri, "languageId": "gs", "version": 1, "text": messy } }),
    );
    let format = |client: &mut Client| {
        client.request(
            "textDocument/formatting",
            json!({ "textDocument": { "uri": uri }, "options": { "tabSize": 4, "insertSpaces": true } }),
        )
    };
    let edits = format(&mut client);
    assert_eq!(
        edits["result"],
        json!([{
            "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 3, "character": 0 } },
            "newText": canonical,
        }])
    );
    open(&mut client, 2, &canonical);
    assert_eq!(format(&mut client)["result"], json!([]));

    // A text that does not parse: no edit, and every request still answers.
    let broken = "model base = gpt { context = 64 ×× \"unclosed\n grow { by";
    open(&mut client, 3, broken);
    let none = format(&mut client);
    assert_eq!(none["result"], Value::Null, "{none}");
    assert!(none.get("error").is_none(), "{none}");
    for (line, character) in [(0, 0), (0, 34), (1, 9), (1, 12), (7, 99)] {
        for method in ["textDocument/hover", "textDocument/completion"] {
            let response = client.at(method, &uri, line, character);
            assert!(response.get("result").is_some(), "{method}: {response}");
        }
    }
    let published = client.diagnostics(&uri, 3);
    assert_eq!(published["diagnostics"][0]["code"], "gs::syntax");

    let unknown = client.request("textDocument/rename", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let bad = client.request("textDocument/hover", json!({ "nonsense": 1 }));
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    shut_down(client);
}

/// `shutdown`, then `exit`: the server ends with 0.
fn shut_down(mut client: Client) {
    let response = client.request("shutdown", Value::Null);
    assert_eq!(response["result"], Value::Null, "{response}");
    client.notify("exit", Value::Null);
    let status = client.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn exit_without_shutdown_is_an_error() {
    let (dir, _) = project("lsp-exit");
    let mut client = Client::start(&dir);
    client.notify("exit", Value::Null);
    assert_eq!(client.child.wait().unwrap().code(), Some(1));
}
