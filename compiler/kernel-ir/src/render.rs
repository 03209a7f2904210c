//! The `kernels` printer: buffers with their storage, then one kernel per
//! block, loop bodies indented, and the totals a person sizes a run by.

use crate::ir::*;
use std::fmt::Write;

fn affine(a: &Affine) -> String {
    let mut parts: Vec<String> = a
        .terms
        .iter()
        .map(|(v, c)| {
            if *c == 1 {
                format!("i{}", v.0)
            } else {
                format!("{c}*i{}", v.0)
            }
        })
        .collect();
    if a.offset != 0 || parts.is_empty() {
        parts.push(a.offset.to_string());
    }
    parts.join(" + ")
}

fn index(ix: &Index) -> String {
    let mut s = affine(&ix.affine);
    if let Some(g) = &ix.gather {
        let scaled = if g.scale == 1 {
            String::new()
        } else {
            format!("{}*", g.scale)
        };
        let gathered = format!("{scaled}b{}[{}]", g.buf.0, affine(&g.at));
        s = if s == "0" {
            gathered
        } else {
            format!("{gathered} + {s}")
        };
    }
    s
}

fn expr(e: &Expr) -> String {
    match e {
        Expr::Const(v) => format!("{v}"),
        Expr::Load { buf, index: ix } => format!("b{}[{}]", buf.0, index(ix)),
        Expr::Local(l) => format!("l{}", l.0),
        Expr::Var(v) => format!("i{}", v.0),
        Expr::Unary(f, a) => {
            let name = match f {
                UnaryFn::Neg => return format!("-{}", expr(a)),
                UnaryFn::Exp => "exp",
                UnaryFn::Log => "log",
                UnaryFn::Sqrt => "sqrt",
                UnaryFn::Tanh => "tanh",
                UnaryFn::Sin => "sin",
                UnaryFn::Cos => "cos",
                UnaryFn::Floor => "floor",
            };
            format!("{name}({})", expr(a))
        }
        Expr::Binary(f, a, b) => {
            let op = match f {
                BinaryFn::Add => "+",
                BinaryFn::Sub => "-",
                BinaryFn::Mul => "*",
                BinaryFn::Div => "/",
                BinaryFn::Max => return format!("max({}, {})", expr(a), expr(b)),
                BinaryFn::Min => return format!("min({}, {})", expr(a), expr(b)),
            };
            format!("({} {op} {})", expr(a), expr(b))
        }
        Expr::SelectEq {
            a,
            b,
            then,
            otherwise,
        } => {
            format!(
                "({} == {} ? {} : {})",
                index(a),
                index(b),
                expr(then),
                expr(otherwise)
            )
        }
    }
}

fn stmts(out: &mut String, body: &[Stmt], depth: usize) {
    let pad = "  ".repeat(depth);
    for s in body {
        let _ = match s {
            Stmt::For { var, extent, body } => {
                let _ = writeln!(out, "{pad}for i{} < {extent} {{", var.0);
                stmts(out, body, depth + 1);
                writeln!(out, "{pad}}}")
            }
            Stmt::Let { local, value } => writeln!(out, "{pad}l{} = {}", local.0, expr(value)),
            Stmt::Reduce {
                local,
                op,
                var,
                extent,
                body,
                value,
            } => {
                let op = match op {
                    ReduceFn::Sum => "sum",
                    ReduceFn::Max => "max",
                };
                if body.is_empty() {
                    writeln!(
                        out,
                        "{pad}l{} = {op}(i{} < {extent}) {}",
                        local.0,
                        var.0,
                        expr(value)
                    )
                } else {
                    let _ = writeln!(out, "{pad}l{} = {op}(i{} < {extent}) {{", local.0, var.0);
                    stmts(out, body, depth + 1);
                    writeln!(out, "{pad}  yield {}\n{pad}}}", expr(value))
                }
            }
            Stmt::Store {
                buf,
                index: ix,
                value,
            } => {
                writeln!(out, "{pad}b{}[{}] = {}", buf.0, index(ix), expr(value))
            }
        };
    }
}

fn storage(s: &Storage) -> String {
    match s {
        Storage::Arena { offset } => format!("arena @{offset}"),
        Storage::Param(_) | Storage::Grad(_) | Storage::AdamM(_) | Storage::AdamV(_) => {
            "persistent".into()
        }
        _ => "io".into(),
    }
}

fn attn(s: &AttnShape) -> String {
    format!(
        "{{batch = {}, seq = {}, heads = {}, kv_heads = {}, head_dim = {}, scale = {}, causal}}",
        s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, s.scale
    )
}

/// The program as text, ending with the kernel count and the planned peak memory.
pub fn render_kernels(p: &KernelProgram) -> String {
    let mut s = String::new();
    for (i, b) in p.buffers.iter().enumerate() {
        let dt = match b.dtype {
            DType::F32 => "f32",
            DType::I32 => "i32",
        };
        let _ = writeln!(
            s,
            "b{i} = buffer {} : {}x{dt} ({})",
            b.name,
            b.len,
            storage(&b.storage)
        );
    }
    for (i, k) in p.kernels.iter().enumerate() {
        let b = |x: &BufId| format!("b{}", x.0);
        let _ = match k {
            Kernel::Loop(l) => {
                let _ = writeln!(s, "k{i} = loop \"{}\" {{", l.name);
                stmts(&mut s, &l.body, 1);
                writeln!(s, "}}")
            }
            Kernel::MatMul {
                a,
                b: bb,
                out,
                m,
                n,
                k,
                ta,
                tb,
                batch,
                bf16,
            } => {
                let mut flags = vec![format!("m = {m}"), format!("n = {n}"), format!("k = {k}")];
                if *batch > 1 {
                    flags.insert(0, format!("batch = {batch}"));
                }
                if *ta {
                    flags.push("transpose_a".into());
                }
                if *tb {
                    flags.push("transpose_b".into());
                }
                if *bf16 {
                    flags.push("bf16".into());
                }
                writeln!(
                    s,
                    "k{i} = matmul({}, {}) {{{}}} -> {}",
                    b(a),
                    b(bb),
                    flags.join(", "),
                    b(out)
                )
            }
            Kernel::Attention {
                q,
                k,
                v,
                out,
                lse,
                shape,
            } => writeln!(
                s,
                "k{i} = attention({}, {}, {}) {} -> ({}, {})",
                b(q),
                b(k),
                b(v),
                attn(shape),
                b(out),
                b(lse)
            ),
            Kernel::AttentionBwd {
                q,
                k,
                v,
                o,
                lse,
                dy,
                dq,
                dk,
                dv,
                shape,
            } => writeln!(
                s,
                "k{i} = attention_bwd({}, {}, {}, {}, {}, {}) {} -> ({}, {}, {})",
                b(q),
                b(k),
                b(v),
                b(o),
                b(lse),
                b(dy),
                attn(shape),
                b(dq),
                b(dk),
                b(dv)
            ),
            Kernel::EmbeddingBwd {
                ids,
                dy,
                out,
                vocab,
                dim,
            } => writeln!(
                s,
                "k{i} = embedding_bwd({}, {}) {{vocab = {vocab}, dim = {dim}}} -> {}",
                b(ids),
                b(dy),
                b(out)
            ),
        };
    }
    let _ = writeln!(
        s,
        "// {} kernels, peak planned memory {} bytes (persistent {}, arena {})",
        p.kernels.len(),
        p.peak_bytes(),
        p.persistent_bytes(),
        p.arena_len * DType::F32.bytes()
    );
    s
}

/// One kernel as text, for error messages.
pub fn render_kernel(k: &Kernel) -> String {
    let p = KernelProgram {
        buffers: vec![],
        kernels: vec![k.clone()],
        arena_len: 0,
    };
    render_kernels(&p)
        .lines()
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}
