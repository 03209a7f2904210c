//! Every differentiable op alone: its compiled backward (fused kernels run by
//! the interpreter in f64) against central finite differences of its compiled
//! forward. Loss = Σ op(x) ⊙ w with w a parameter too, or op(x) if scalar.

mod common;
use common::*;
use gsc_compiler::grad::differentiate;
use gsc_compiler::graph::*;
use gsc_compiler::init::rng::SplitMix64;
use gsc_compiler::kernel::{lower, KernelProgram, Storage};
use gsc_runtime::interp::{run, Memory};

type Build = dyn Fn(&mut Graph, &[TensorId], Option<TensorId>) -> Result<TensorId, GraphError>;

struct Case<'a> {
    shapes: &'a [&'a [usize]],
    /// Integer input (tokens and targets): length and exclusive bound.
    ids: Option<(usize, usize)>,
    /// Draw inputs in [0.5, 1.5] (log, sqrt, division).
    positive: bool,
}

fn eval(prog: &KernelProgram, params: &[Vec<f64>], ids: &[i32]) -> Memory<f64> {
    let mut mem = Memory::<f64>::new(prog);
    for (i, p) in params.iter().enumerate() {
        mem.write(Storage::Param(i), p).unwrap();
    }
    for s in [Storage::Tokens, Storage::Targets] {
        if mem.has(s) {
            mem.write_ints(s, ids).unwrap();
        }
    }
    run(prog, &mut mem).expect("runs");
    mem
}

fn check(name: &str, case: Case, build: &Build) {
    let mut g = Graph::default();
    let mut inputs = vec![];
    for (i, s) in case.shapes.iter().enumerate() {
        inputs.push(g.add_input(Input::Param(i), s.to_vec(), DType::F32));
        g.params.push(ParamInfo {
            name: format!("x{i}"),
            shape: s.to_vec(),
        });
    }
    let mut rng = SplitMix64::new(name.len() as u64);
    let ids: Vec<i32> = case
        .ids
        .map(|(n, v)| (0..n).map(|_| (rng.next_u64() % v as u64) as i32).collect())
        .unwrap_or_default();
    let id_tensor = case
        .ids
        .map(|(n, _)| g.add_input(Input::Tokens, vec![n], DType::I32));
    let y = build(&mut g, &inputs, id_tensor).expect("op builds");
    let loss = if g.shape(y).is_empty() {
        y
    } else {
        let shape = g.shape(y).to_vec();
        let k = g.params.len();
        let w = g.add_input(Input::Param(k), shape.clone(), DType::F32);
        g.params.push(ParamInfo {
            name: "w".into(),
            shape,
        });
        let p = g.add1(Op::Binary(BinaryOp::Mul), vec![y, w]).unwrap();
        g.add1(
            Op::Reduce {
                op: ReduceOp::Sum,
                shape: vec![],
            },
            vec![p],
        )
        .unwrap()
    };
    g.outputs = vec![(Output::Loss, loss)];
    let params: Vec<Vec<f64>> = g
        .params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            (0..n)
                .map(|_| {
                    let z = rng.normal();
                    if case.positive {
                        1.0 + 0.5 * (rng.uniform() - 0.5)
                    } else {
                        z
                    }
                })
                .collect()
        })
        .collect();
    let fwd = lower(&g).expect("forward lowers");
    let bwd = lower(&differentiate(&g).expect("differentiates")).expect("backward lowers");
    let mem = eval(&bwd, &params, &ids);
    let fd = finite_diff(
        &params,
        |_, n| (0..n).collect(),
        |p| eval(&fwd, p, &ids).read(Storage::Loss).unwrap()[0],
    );
    for (t, num) in fd.iter().enumerate() {
        let num: Vec<f64> = num.iter().map(|x| x.1).collect();
        let ana = mem.read(Storage::Grad(t)).unwrap();
        let e = rel_err(&ana, &num);
        assert!(
            e < 1e-6,
            "{name}, input {t}: relative error {e:e}\n analytic {ana:?}\n numeric {num:?}"
        );
    }
}

fn plain<'a>(shapes: &'a [&'a [usize]]) -> Case<'a> {
    Case {
        shapes,
        ids: None,
        positive: false,
    }
}

fn positive<'a>(shapes: &'a [&'a [usize]]) -> Case<'a> {
    Case {
        shapes,
        ids: None,
        positive: true,
    }
}

fn one(op: Op) -> Box<Build> {
    Box::new(move |g, x, _| g.add1(op.clone(), vec![x[0]]))
}

fn two(op: Op) -> Box<Build> {
    Box::new(move |g, x, _| g.add1(op.clone(), vec![x[0], x[1]]))
}

#[test]
fn embedding() {
    let case = Case {
        shapes: &[&[7, 3]],
        ids: Some((5, 7)),
        positive: false,
    };
    check("embedding", case, &|g, x, ids| {
        g.add1(Op::Embedding, vec![x[0], ids.unwrap()])
    });
}

#[test]
fn matmul_all_transposes() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
        let b: &[usize] = if tb { &[2, 4] } else { &[4, 2] };
        check(
            &format!("matmul {ta} {tb}"),
            plain(&[a, b]),
            &*two(Op::MatMul { ta, tb }),
        );
    }
}

#[test]
fn attention_gqa() {
    let a = Attn {
        batch: 2,
        seq: 3,
        heads: 4,
        kv_heads: 2,
        head_dim: 2,
        scale: 0.7,
    };
    check(
        "attention",
        plain(&[&[6, 4, 2], &[6, 2, 2], &[6, 2, 2]]),
        &move |g, x, _| g.add1(Op::Attention(a), vec![x[0], x[1], x[2]]),
    );
}

#[test]
fn rope_both_directions() {
    for inverse in [false, true] {
        let r = Rope {
            seq: 3,
            base: 100.0,
            inverse,
        };
        check("rope", plain(&[&[6, 2, 4]]), &*one(Op::Rope(r)));
    }
}

#[test]
fn unary() {
    for u in [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Tanh,
        UnaryOp::Gelu,
        UnaryOp::Silu,
    ] {
        check(&format!("{u:?}"), plain(&[&[3, 4]]), &*one(Op::Unary(u)));
    }
    for u in [UnaryOp::Log, UnaryOp::Sqrt] {
        check(&format!("{u:?}"), positive(&[&[3, 4]]), &*one(Op::Unary(u)));
    }
}

#[test]
fn binary_with_broadcasting() {
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[3, 4], &[3, 4]),
        (&[3, 4], &[4]),
        (&[3, 1], &[3, 4]),
        (&[], &[2, 3, 4]),
    ];
    for (a, b) in shapes {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
            check(
                &format!("{op:?} {a:?} {b:?}"),
                plain(&[a, b]),
                &*two(Op::Binary(op)),
            );
        }
        check(
            &format!("div {a:?} {b:?}"),
            positive(&[a, b]),
            &*two(Op::Binary(BinaryOp::Div)),
        );
    }
}

#[test]
fn expand_reduce_reshape() {
    check(
        "expand",
        plain(&[&[4]]),
        &*one(Op::Expand { shape: vec![3, 4] }),
    );
    for shape in [vec![3, 1], vec![4], vec![]] {
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            shape: shape.clone(),
        };
        check(
            &format!("reduce to {shape:?}"),
            plain(&[&[3, 4]]),
            &*one(op),
        );
    }
    check(
        "reshape",
        plain(&[&[3, 4]]),
        &*one(Op::Reshape { shape: vec![2, 6] }),
    );
}

#[test]
fn norms_and_softmax() {
    check(
        "rmsnorm",
        plain(&[&[3, 5]]),
        &*one(Op::RmsNorm { eps: 1e-5 }),
    );
    check(
        "layernorm",
        plain(&[&[3, 5]]),
        &*one(Op::LayerNorm { eps: 1e-5 }),
    );
    check("softmax", plain(&[&[3, 5]]), &*one(Op::Softmax));
    check(
        "l2norm rows",
        plain(&[&[3, 4]]),
        &*one(Op::L2Norm { axis: 1 }),
    );
    check(
        "l2norm cols",
        plain(&[&[3, 4]]),
        &*one(Op::L2Norm { axis: 0 }),
    );
    check(
        "l2norm per head",
        plain(&[&[2, 3, 4]]),
        &*one(Op::L2Norm { axis: 2 }),
    );
}

#[test]
fn cross_entropy() {
    let case = Case {
        shapes: &[&[5, 6]],
        ids: Some((5, 6)),
        positive: false,
    };
    check("cross_entropy", case, &|g, x, ids| {
        g.add1(Op::CrossEntropy, vec![x[0], ids.unwrap()])
    });
}
