//! The `ir` / `ir-grad` printer: one op per line in MLIR's generic style.

use super::ir::*;
use std::fmt::Write;

fn attrs(g: &Graph, op: &Op) -> String {
    let list: Vec<String> = match op {
        Op::Input(Input::Param(i) | Input::AdamM(i) | Input::AdamV(i) | Input::Grad(i)) => {
            let name = g.params.get(*i).map(|p| p.name.as_str()).unwrap_or("?");
            vec![format!("name = \"{name}\"")]
        }
        Op::Const(v) => vec![format!("value = {v}")],
        Op::MatMul { ta, tb } => {
            let mut v = vec![];
            if *ta {
                v.push("transpose_a".to_string());
            }
            if *tb {
                v.push("transpose_b".to_string());
            }
            v
        }
        Op::Attention(a) | Op::AttentionBwd(a) => vec![
            format!("batch = {}", a.batch),
            format!("seq = {}", a.seq),
            format!("heads = {}", a.heads),
            format!("kv_heads = {}", a.kv_heads),
            format!("scale = {}", a.scale),
            "causal".to_string(),
        ],
        Op::Rope(r) => vec![format!("seq = {}", r.seq), format!("base = {}", r.base)],
        Op::RmsNorm { eps }
        | Op::RmsNormBwd { eps }
        | Op::LayerNorm { eps }
        | Op::LayerNormBwd { eps } => {
            vec![format!("eps = {eps}")]
        }
        Op::L2Norm { axis } | Op::L2NormBwd { axis } => vec![format!("axis = {axis}")],
        _ => vec![],
    };
    if list.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", list.join(", "))
    }
}

fn ty(g: &Graph, t: TensorId) -> String {
    let t = g.tensor(t);
    type_string(&t.shape, t.dtype)
}

fn list(ids: &[TensorId], f: impl Fn(TensorId) -> String) -> String {
    ids.iter().map(|&t| f(t)).collect::<Vec<_>>().join(", ")
}

/// Renders every node, then the program's results.
pub fn render_graph(g: &Graph) -> String {
    let mut s = String::new();
    for node in &g.nodes {
        let outs = list(&node.outputs, |t| format!("%{}", t.0));
        let out_types = list(&node.outputs, |t| ty(g, t));
        let out_types = if node.outputs.len() > 1 {
            format!("({out_types})")
        } else {
            out_types
        };
        let a = attrs(g, &node.op);
        let _ = if node.inputs.is_empty() {
            write!(s, "{outs} = {}{a} : {out_types}", node.op.mnemonic())
        } else {
            write!(
                s,
                "{outs} = {}({}){a} : ({}) -> {out_types}",
                node.op.mnemonic(),
                list(&node.inputs, |t| format!("%{}", t.0)),
                list(&node.inputs, |t| ty(g, t)),
            )
        };
        if let Some(label) = node
            .outputs
            .first()
            .and_then(|t| g.tensor(*t).label.as_ref())
        {
            let _ = write!(s, "  // {label}");
        }
        s.push('\n');
    }
    let results: Vec<String> = g
        .outputs
        .iter()
        .map(|(o, t)| {
            let name = |i: &usize| g.params.get(*i).map(|p| p.name.as_str()).unwrap_or("?");
            let key = match o {
                Output::Loss => "loss".to_string(),
                Output::Logits => "logits".to_string(),
                Output::GradNorm => "grad_norm".to_string(),
                Output::Grad(i) => format!("grad[{}]", name(i)),
                Output::Param(i) => format!("param[{}]", name(i)),
                Output::AdamM(i) => format!("adam_m[{}]", name(i)),
                Output::AdamV(i) => format!("adam_v[{}]", name(i)),
            };
            format!("  {key} = %{}", t.0)
        })
        .collect();
    let _ = writeln!(s, "return\n{}", results.join("\n"));
    s
}
