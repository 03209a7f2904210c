//! The CPU backend against the reference interpreter in f64: every kernel kind on
//! random inputs (odd extents, extents below and around the thread count),
//! then whole training steps of small gpt and nGPT models.
//!
//! Tolerances: each test states its own, as the largest error relative to
//! the largest magnitude in the buffer (so cancellation near zero does not
//! blow up a relative error). f32 has a 6e-8 unit roundoff; a dot product or
//! row sum of n terms in f32 is off by about √n·6e-8 typically and n·6e-8 at
//! worst, and a training step chains a few dozen such kernels, so single
//! kernels are held to 1e-5 and whole steps to 1e-3 (grads, loss) / lr·1e-2
//! (updated parameters).

use gsc_compiler::kernel::*;
use gsc_compiler::plan::*;
use gsc_runtime::buffers::ProgramBuffers;
use gsc_runtime::cpu::jit::{compile_program, compile_program_with, JitOptions};
use gsc_runtime::cpu::{CpuBackend, ExecError};
use gsc_runtime::interp::{self, Memory};
use gsc_runtime::rng::SplitMix64;

fn f32buf(name: &str, len: usize, storage: Storage) -> Buffer {
    Buffer {
        name: name.into(),
        dtype: DType::F32,
        len,
        storage,
    }
}

fn i32buf(name: &str, len: usize, storage: Storage) -> Buffer {
    Buffer {
        name: name.into(),
        dtype: DType::I32,
        len,
        storage,
    }
}

fn v(i: u32) -> Var {
    Var(i)
}

fn aff(offset: i64, terms: &[(u32, i64)]) -> Affine {
    Affine {
        offset,
        terms: terms.iter().map(|&(v, c)| (Var(v), c)).collect(),
    }
}

fn ix(offset: i64, terms: &[(u32, i64)]) -> Index {
    Index {
        affine: aff(offset, terms),
        gather: None,
    }
}

fn load(b: usize, index: Index) -> Expr {
    Expr::Load {
        buf: BufId(b),
        index,
    }
}

fn c(x: f64) -> Expr {
    Expr::Const(x)
}

fn un(f: UnaryFn, a: Expr) -> Expr {
    Expr::Unary(f, Box::new(a))
}

fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::Binary(f, Box::new(a), Box::new(b))
}

fn local(l: u32) -> Expr {
    Expr::Local(Local(l))
}

fn store(b: usize, index: Index, value: Expr) -> Stmt {
    Stmt::Store {
        buf: BufId(b),
        index,
        value,
    }
}

fn for_(var: u32, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var: v(var),
        extent,
        body,
    }
}

fn let_(l: u32, value: Expr) -> Stmt {
    Stmt::Let {
        local: Local(l),
        value,
    }
}

fn reduce(l: u32, op: ReduceFn, var: u32, extent: usize, body: Vec<Stmt>, value: Expr) -> Stmt {
    Stmt::Reduce {
        local: Local(l),
        op,
        var: v(var),
        extent,
        body,
        value,
    }
}

fn loop_kernel(name: &str, body: Vec<Stmt>, num_vars: u32, num_locals: u32) -> Kernel {
    Kernel::Loop(LoopKernel {
        name: name.into(),
        body,
        num_vars,
        num_locals,
    })
}

/// Runs `p` on the backend and on the interpreter from the same random
/// state; returns (backend, interpreter) buffers.
fn run_both(
    p: &KernelProgram,
    seed: u64,
    scale: f32,
    int_below: u64,
) -> (ProgramBuffers, ProgramBuffers) {
    let mut got = ProgramBuffers::new(p).expect("buffers");
    randomize(p, &mut got, seed, scale, int_below);
    let want = interpret(p, &got);
    let mut backend = CpuBackend::new(p).unwrap_or_else(|e| panic!("{e}"));
    backend.execute(&mut got).expect("execute");
    (got, want)
}

/// Every F32 buffer within `tol` (relative to the buffer's largest value).
fn assert_all_close(p: &KernelProgram, got: &ProgramBuffers, want: &ProgramBuffers, tol: f64) {
    for (i, b) in p.buffers.iter().enumerate() {
        if b.dtype != DType::F32 {
            continue;
        }
        let id = BufId(i);
        let (e, at) = max_rel_err(&got.f32(id).unwrap(), &want.f32(id).unwrap(), 1e-30);
        assert!(
            e <= tol,
            "b{i} ({}): error {e:.2e} at {at}: got {}, want {}",
            b.name,
            got.f32(id).unwrap()[at],
            want.f32(id).unwrap()[at]
        );
    }
}

/// `out[i, j] = f(x[i, j], y[i, j], i, j)` exercising every unary and
/// binary function and indices as floats, over `rows × cols`.
fn elementwise_program(rows: usize, cols: usize) -> KernelProgram {
    let n = rows * cols;
    let x = || load(0, ix(0, &[(0, cols as i64), (1, 1)]));
    let y = || load(1, ix(0, &[(0, cols as i64), (1, 1)]));
    let pos = |e: Expr| bin(BinaryFn::Add, bin(BinaryFn::Mul, e.clone(), e), c(0.25));
    let terms = [
        un(UnaryFn::Neg, x()),
        un(UnaryFn::Exp, bin(BinaryFn::Mul, x(), c(3.0))),
        un(UnaryFn::Log, pos(y())),
        un(UnaryFn::Sqrt, pos(x())),
        un(UnaryFn::Tanh, bin(BinaryFn::Mul, y(), c(4.0))),
        un(
            UnaryFn::Sin,
            bin(
                BinaryFn::Mul,
                x(),
                bin(BinaryFn::Mul, Expr::Var(v(0)), c(1.0 / rows as f64)),
            ),
        ),
        un(
            UnaryFn::Cos,
            bin(
                BinaryFn::Mul,
                y(),
                bin(BinaryFn::Mul, Expr::Var(v(1)), c(1.0 / cols as f64)),
            ),
        ),
        bin(BinaryFn::Sub, x(), y()),
        bin(BinaryFn::Div, x(), pos(y())),
        bin(BinaryFn::Max, x(), y()),
        bin(BinaryFn::Min, x(), y()),
    ];
    let mut body = vec![let_(0, c(0.0))];
    let mut l = 0;
    for t in terms {
        body.push(let_(l + 1, bin(BinaryFn::Add, local(l), t)));
        l += 1;
    }
    body.push(store(2, ix(0, &[(0, cols as i64), (1, 1)]), local(l)));
    body.push(store(
        3,
        ix(0, &[(1, rows as i64), (0, 1)]),
        bin(BinaryFn::Mul, x(), y()),
    ));
    KernelProgram {
        buffers: vec![
            f32buf("x", n, Storage::Param(0)),
            f32buf("y", n, Storage::Arena { offset: 0 }),
            f32buf("out", n, Storage::Arena { offset: n }),
            f32buf("out_t", n, Storage::Grad(0)),
        ],
        kernels: vec![loop_kernel(
            "elementwise",
            vec![for_(0, rows, vec![for_(1, cols, body)])],
            2,
            l + 1,
        )],
        arena_len: 2 * n,
    }
}

#[test]
fn elementwise_functions_match_over_odd_and_tiny_extents() {
    // (1, 1), extents below the thread count, odd ones, and ones large
    // enough that the outer loop is split across threads.
    for (seed, (rows, cols)) in [
        (1, 1),
        (1, 7),
        (2, 3),
        (3, 5),
        (37, 13),
        (3, 9001),
        (5, 4099),
        (1031, 17),
    ]
    .into_iter()
    .enumerate()
    {
        let p = elementwise_program(rows, cols);
        let (got, want) = run_both(&p, seed as u64, 1.0, 1);
        assert_all_close(&p, &got, &want, 1e-5);
    }
}

/// exp, tanh, sin and cos are inline polynomials: check them pointwise over
/// their whole useful range, exp and tanh relative to each value (1e-6),
/// sin and cos absolutely (1e-6; angles up to 8192 as RoPE makes them).
#[test]
fn inline_transcendentals_are_accurate_pointwise() {
    let n = 20001;
    let p = KernelProgram {
        buffers: vec![
            f32buf("x", n, Storage::Param(0)),
            f32buf("exp", n, Storage::Grad(0)),
            f32buf("tanh", n, Storage::AdamM(0)),
            f32buf("sin", n, Storage::AdamV(0)),
            f32buf("cos", n, Storage::Grad(1)),
        ],
        kernels: vec![loop_kernel(
            "exp_tanh",
            vec![for_(
                0,
                n,
                vec![
                    store(
                        1,
                        ix(0, &[(0, 1)]),
                        un(UnaryFn::Exp, load(0, ix(0, &[(0, 1)]))),
                    ),
                    store(
                        2,
                        ix(0, &[(0, 1)]),
                        un(UnaryFn::Tanh, load(0, ix(0, &[(0, 1)]))),
                    ),
                    store(
                        3,
                        ix(0, &[(0, 1)]),
                        un(UnaryFn::Sin, load(0, ix(0, &[(0, 1)]))),
                    ),
                    store(
                        4,
                        ix(0, &[(0, 1)]),
                        un(UnaryFn::Cos, load(0, ix(0, &[(0, 1)]))),
                    ),
                ],
            )],
            1,
            0,
        )],
        arena_len: 0,
    };
    let mut b = ProgramBuffers::new(&p).unwrap();
    let xs: Vec<f32> = (0..n)
        .map(|i| -87.0 + 175.0 * i as f32 / (n - 1) as f32)
        .collect();
    let mut xs_small: Vec<f32> = (0..n)
        .map(|i| -3.0 + 6.0 * i as f32 / (n - 1) as f32)
        .collect();
    xs_small[n / 2] = 1e-30; // tiny: tanh x = x
    let xs_angles: Vec<f32> = (0..n)
        .map(|i| -8192.0 + 16384.0 * i as f32 / (n - 1) as f32)
        .collect();
    let mut backend = CpuBackend::new(&p).unwrap();
    for (set, xs) in [xs, xs_small, xs_angles].into_iter().enumerate() {
        b.load(Storage::Param(0), &xs).unwrap();
        backend.execute(&mut b).unwrap();
        for (i, &x) in xs.iter().enumerate() {
            let e = b.storage(Storage::Grad(0)).unwrap()[i] as f64;
            let t = b.storage(Storage::AdamM(0)).unwrap()[i] as f64;
            let (we, wt) = ((x as f64).exp(), (x as f64).tanh());
            if set < 2 {
                assert!(((e - we) / we).abs() < 1e-6, "exp({x}) = {e}, want {we}");
                assert!(
                    ((t - wt) / wt).abs() < 1e-6 || (t - wt).abs() < 1e-37,
                    "tanh({x}) = {t}, want {wt}"
                );
            }
            let sn = b.storage(Storage::AdamV(0)).unwrap()[i] as f64;
            let cs = b.storage(Storage::Grad(1)).unwrap()[i] as f64;
            assert!((sn - (x as f64).sin()).abs() < 1e-6, "sin({x}) = {sn}");
            assert!((cs - (x as f64).cos()).abs() < 1e-6, "cos({x}) = {cs}");
        }
    }
    // Out of range, exp clamps instead of overflowing; NaN stays NaN (in
    // both the vector body and the scalar tail).
    let mut special = vec![0.0f32; n];
    for (i, x) in special.iter_mut().enumerate() {
        *x = [f32::NAN, 1e4, -1e4, f32::INFINITY, f32::NEG_INFINITY][i % 5];
    }
    b.load(Storage::Param(0), &special).unwrap();
    backend.execute(&mut b).unwrap();
    let e = b.storage(Storage::Grad(0)).unwrap();
    for i in [0, 1, 2, 3, 4, n - 5, n - 4, n - 3, n - 2, n - 1] {
        let (x, e) = (special[i], e[i]);
        if x.is_nan() {
            assert!(e.is_nan(), "exp(NaN) = {e}");
        } else if x > 0.0 {
            assert!(e.is_finite() && e > 1e38, "exp({x}) = {e}");
        } else {
            assert!((0.0..1e-37).contains(&e), "exp({x}) = {e}");
        }
    }
}

/// Softmax rows: max and sum reductions, a reduction whose body has a `let`,
/// then a store per element; plus a column sum of squares (strided, parallel
/// over columns, jammed sixteen columns at a time, with locals inside and
/// after the reduction) and a serial kernel whose top level is a reduction.
fn reductions_program(rows: usize, cols: usize) -> KernelProgram {
    let x = |var: u32| load(0, ix(0, &[(0, cols as i64), (var, 1)]));
    let row = vec![
        reduce(0, ReduceFn::Max, 1, cols, vec![], x(1)),
        reduce(
            2,
            ReduceFn::Sum,
            2,
            cols,
            vec![let_(1, bin(BinaryFn::Sub, x(2), local(0)))],
            un(UnaryFn::Exp, local(1)),
        ),
        for_(
            3,
            cols,
            vec![store(
                1,
                ix(0, &[(0, cols as i64), (3, 1)]),
                bin(
                    BinaryFn::Div,
                    un(UnaryFn::Exp, bin(BinaryFn::Sub, x(3), local(0))),
                    local(2),
                ),
            )],
        ),
    ];
    let colsum = vec![for_(
        0,
        cols,
        vec![
            reduce(
                0,
                ReduceFn::Sum,
                1,
                rows,
                vec![let_(1, load(0, ix(0, &[(1, cols as i64), (0, 1)])))],
                bin(BinaryFn::Mul, local(1), local(1)),
            ),
            let_(2, un(UnaryFn::Sqrt, local(0))),
            store(2, ix(0, &[(0, 1)]), local(2)),
        ],
    )];
    let total = vec![
        reduce(
            1,
            ReduceFn::Sum,
            0,
            rows,
            vec![reduce(0, ReduceFn::Max, 1, cols, vec![], x(1))],
            local(0),
        ),
        store(
            3,
            ix(0, &[]),
            bin(BinaryFn::Mul, local(1), c(1.0 / rows as f64)),
        ),
    ];
    KernelProgram {
        buffers: vec![
            f32buf("x", rows * cols, Storage::Param(0)),
            f32buf("softmax", rows * cols, Storage::Arena { offset: 0 }),
            f32buf("colsum", cols, Storage::Grad(0)),
            f32buf("mean_max", 1, Storage::Loss),
        ],
        kernels: vec![
            loop_kernel("softmax", vec![for_(0, rows, row)], 4, 3),
            loop_kernel("colsum", colsum, 2, 3),
            loop_kernel("mean_max", total, 2, 2),
        ],
        arena_len: rows * cols,
    }
}

#[test]
fn reductions_match() {
    // 39 columns: two jammed groups of 16, one vector of 4, 3 scalar.
    for (seed, (rows, cols)) in [
        (1, 1),
        (3, 1),
        (1, 5),
        (7, 33),
        (5, 39),
        (4099, 9),
        (2, 20011),
    ]
    .into_iter()
    .enumerate()
    {
        let p = reductions_program(rows, cols);
        let (got, want) = run_both(&p, 10 + seed as u64, 4.0, 1);
        assert_all_close(&p, &got, &want, 1e-5);
    }
}

/// nGPT's column normalisation after an in-place update: per column, a
/// strided sum of squares, then a strided in-place read-modify-write.
#[test]
fn column_normalisation_in_place_matches() {
    for (seed, (rows, cols)) in [(5, 1), (3, 8), (7, 37), (4, 1024), (33, 1025)]
        .into_iter()
        .enumerate()
    {
        let x = |var: u32| load(0, ix(0, &[(var, cols as i64), (0, 1)]));
        let m = |var: u32| load(1, ix(0, &[(var, cols as i64), (0, 1)]));
        let body = vec![for_(
            0,
            cols,
            vec![
                reduce(
                    1,
                    ReduceFn::Sum,
                    1,
                    rows,
                    vec![let_(0, bin(BinaryFn::Add, x(1), m(1)))],
                    bin(BinaryFn::Mul, local(0), local(0)),
                ),
                let_(2, un(UnaryFn::Sqrt, local(1))),
                for_(
                    2,
                    rows,
                    vec![
                        let_(3, bin(BinaryFn::Mul, m(2), c(0.5))),
                        store(1, ix(0, &[(2, cols as i64), (0, 1)]), local(3)),
                        store(
                            0,
                            ix(0, &[(2, cols as i64), (0, 1)]),
                            bin(BinaryFn::Div, bin(BinaryFn::Add, x(2), local(3)), local(2)),
                        ),
                    ],
                ),
            ],
        )];
        let p = KernelProgram {
            buffers: vec![
                f32buf("w", rows * cols, Storage::Param(0)),
                f32buf("m", rows * cols, Storage::AdamM(0)),
            ],
            kernels: vec![loop_kernel("column_norm", body, 3, 4)],
            arena_len: 0,
        };
        let (got, want) = run_both(&p, 50 + seed as u64, 1.0, 1);
        assert_all_close(&p, &got, &want, 1e-5);
    }
}

/// Embedding lookup (gather through tokens), a one-hot through `SelectEq`
/// with a gathered index, and a gather with a scale and an offset.
fn gather_program(n: usize, vocab: usize, dim: usize) -> KernelProgram {
    let gather = |at: Affine, scale: i64| Gather {
        buf: BufId(1),
        at,
        scale,
    };
    let emb_at = Index {
        affine: aff(0, &[(1, 1)]),
        gather: Some(gather(aff(0, &[(0, 1)]), dim as i64)),
    };
    let onehot = Expr::SelectEq {
        a: ix(0, &[(1, 1)]),
        b: Index {
            affine: aff(0, &[]),
            gather: Some(gather(aff(0, &[(0, 1)]), 1)),
        },
        then: Box::new(bin(
            BinaryFn::Sub,
            load(3, ix(0, &[(0, vocab as i64), (1, 1)])),
            c(1.0),
        )),
        otherwise: Box::new(load(3, ix(0, &[(0, vocab as i64), (1, 1)]))),
    };
    KernelProgram {
        buffers: vec![
            f32buf("emb", vocab * dim, Storage::Param(0)),
            i32buf("tokens", n, Storage::Tokens),
            f32buf("x", n * dim, Storage::Arena { offset: 0 }),
            f32buf("probs", n * vocab, Storage::Logits),
            f32buf("dlogits", n * vocab, Storage::Arena { offset: n * dim }),
        ],
        kernels: vec![
            loop_kernel(
                "embedding",
                vec![for_(
                    0,
                    n,
                    vec![for_(
                        1,
                        dim,
                        vec![store(2, ix(0, &[(0, dim as i64), (1, 1)]), load(0, emb_at))],
                    )],
                )],
                2,
                0,
            ),
            loop_kernel(
                "onehot",
                vec![for_(
                    0,
                    n,
                    vec![for_(
                        1,
                        vocab,
                        vec![store(4, ix(0, &[(0, vocab as i64), (1, 1)]), onehot)],
                    )],
                )],
                2,
                0,
            ),
        ],
        arena_len: n * dim + n * vocab,
    }
}

#[test]
fn gathers_and_select_match() {
    for (seed, (n, vocab, dim)) in [(1, 1, 1), (3, 5, 7), (4097, 11, 9), (33, 256, 64)]
        .into_iter()
        .enumerate()
    {
        let p = gather_program(n, vocab, dim);
        let (got, want) = run_both(&p, 20 + seed as u64, 1.0, vocab as u64);
        assert_all_close(&p, &got, &want, 0.0);
    }
}

#[test]
fn out_of_range_token_is_refused_before_running() {
    let p = gather_program(4, 5, 3);
    let mut b = ProgramBuffers::new(&p).unwrap();
    b.set_tokens(&[0, 4, 5, 1]).unwrap();
    let mut backend = CpuBackend::new(&p).unwrap();
    match backend.execute(&mut b) {
        Err(ExecError::OutOfRange {
            position, value, ..
        }) => assert_eq!((position, value), (2, 5)),
        other => panic!("want OutOfRange, got {other:?}"),
    }
    b.set_tokens(&[0, 4, -1, 1]).unwrap();
    assert!(backend.execute(&mut b).is_err());
    b.set_tokens(&[0, 4, 3, 1]).unwrap();
    backend.execute(&mut b).unwrap();
}

#[test]
fn an_index_past_the_end_names_the_kernel_and_prints_it() {
    let p = KernelProgram {
        buffers: vec![
            f32buf("x", 8, Storage::Param(0)),
            f32buf("y", 8, Storage::Grad(0)),
        ],
        kernels: vec![loop_kernel(
            "shifted_copy",
            vec![for_(
                0,
                8,
                vec![store(1, ix(0, &[(0, 1)]), load(0, ix(1, &[(0, 1)])))],
            )],
            1,
            0,
        )],
        arena_len: 0,
    };
    let e = CpuBackend::new(&p).expect_err("out of bounds").to_string();
    assert!(e.contains("k0") && e.contains("shifted_copy"), "{e}");
    assert!(e.contains("b0[1..=8] outside its 8 elements"), "{e}");
    assert!(e.contains("b1[i0] = b0[i0 + 1]"), "the IR is printed: {e}");
}

#[test]
fn only_provably_disjoint_outer_loops_are_parallel() {
    let par = |body: Vec<Stmt>| {
        let p = KernelProgram {
            buffers: vec![
                f32buf("x", 64, Storage::Param(0)),
                f32buf("y", 64, Storage::Grad(0)),
            ],
            kernels: vec![loop_kernel("k", body, 2, 0)],
            arena_len: 0,
        };
        compile_program(&p).unwrap().loops[0].unwrap().parallel
    };
    let x = |o, t: &[(u32, i64)]| load(0, ix(o, t));
    // Row-wise: parallel.
    assert_eq!(
        par(vec![for_(
            0,
            8,
            vec![for_(
                1,
                8,
                vec![store(1, ix(0, &[(0, 8), (1, 1)]), x(0, &[(0, 8), (1, 1)]))]
            )]
        )]),
        Some(8)
    );
    // Every iteration writes element 0: serial.
    assert_eq!(
        par(vec![for_(
            0,
            8,
            vec![store(1, ix(0, &[]), x(0, &[(0, 1)]))]
        )]),
        None
    );
    // Rows overlap (stride 4, width 8): serial.
    assert_eq!(
        par(vec![for_(
            0,
            8,
            vec![for_(1, 8, vec![store(1, ix(0, &[(0, 4), (1, 1)]), c(1.0))])]
        )]),
        None
    );
    // In place, reading the element it writes: parallel; reading the
    // neighbour another iteration writes: serial.
    assert_eq!(
        par(vec![for_(
            0,
            64,
            vec![store(0, ix(0, &[(0, 1)]), x(0, &[(0, 1)]))]
        )]),
        Some(64)
    );
    assert_eq!(
        par(vec![for_(
            0,
            63,
            vec![store(0, ix(0, &[(0, 1)]), x(1, &[(0, 1)]))]
        )]),
        None
    );
}

fn library_program() -> KernelProgram {
    // matmuls of every transpose, GQA attention forward and two backwards
    // reading its output and row log-sum-exps, embedding backward.
    let (m, n, k) = (37, 29, 19);
    let shape = AttnShape {
        batch: 2,
        seq: 37,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        scale: 0.25,
    };
    let ql = shape.batch * shape.seq * shape.heads * shape.head_dim;
    let kvl = shape.batch * shape.seq * shape.kv_heads * shape.head_dim;
    let (vocab, dim) = (13, 7);
    let ntok = shape.batch * shape.seq;
    let mut buffers = vec![];
    let mut arena = 0;
    let mut add = |name: &str, len: usize, dtype: DType| {
        buffers.push(Buffer {
            name: name.into(),
            dtype,
            len,
            storage: if dtype == DType::I32 {
                Storage::Tokens
            } else {
                Storage::Arena { offset: arena }
            },
        });
        if dtype == DType::F32 {
            arena += len;
        }
        BufId(buffers.len() - 1)
    };
    let a = add("a", m * k, DType::F32);
    let b = add("b", k * n, DType::F32);
    let outs: Vec<BufId> = (0..4)
        .map(|i| add(&format!("c{i}"), m * n, DType::F32))
        .collect();
    let q = add("q", ql, DType::F32);
    let kk = add("k", kvl, DType::F32);
    let vv = add("v", kvl, DType::F32);
    let o = add("o", ql, DType::F32);
    let lse = add("lse", shape.batch * shape.heads * shape.seq, DType::F32);
    let dy = add("dy", ql, DType::F32);
    let grads: Vec<BufId> = ["dq", "dk", "dv", "dq2", "dk2", "dv2"]
        .iter()
        .enumerate()
        .map(|(i, name)| add(name, if i % 3 == 0 { ql } else { kvl }, DType::F32))
        .collect();
    let ids = add("ids", ntok, DType::I32);
    let gy = add("gy", ntok * dim, DType::F32);
    let gout = add("gout", vocab * dim, DType::F32);
    let mut kernels = vec![];
    for (i, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        kernels.push(Kernel::MatMul {
            a,
            b,
            out: outs[i],
            m,
            n,
            k,
            ta,
            tb,
        });
    }
    kernels.push(Kernel::Attention {
        q,
        k: kk,
        v: vv,
        out: o,
        lse,
        shape,
    });
    kernels.push(Kernel::AttentionBwd {
        q,
        k: kk,
        v: vv,
        o,
        lse,
        dy,
        dq: grads[0],
        dk: grads[1],
        dv: grads[2],
        shape,
    });
    // dy = the forward's output: o read twice by one kernel, and by a
    // second backward after the first.
    kernels.push(Kernel::AttentionBwd {
        q,
        k: kk,
        v: vv,
        o,
        lse,
        dy: o,
        dq: grads[3],
        dk: grads[4],
        dv: grads[5],
        shape,
    });
    kernels.push(Kernel::EmbeddingBwd {
        ids,
        dy: gy,
        out: gout,
        vocab,
        dim,
    });
    KernelProgram {
        buffers,
        kernels,
        arena_len: arena,
    }
}

#[test]
fn library_kernels_match() {
    let p = library_program();
    let (got, want) = run_both(&p, 7, 1.0, 13);
    assert_all_close(&p, &got, &want, 1e-5);
}

fn tiny(arch: Arch, activation: Activation, tied: bool) -> ModelConfig {
    ModelConfig {
        arch,
        vocab: 11,
        context: 9,
        d_model: 16,
        heads: 4,
        kv_heads: 2,
        head_dim: 4,
        layers: 2,
        ffn: 24,
        activation,
        norm: NormKind::RmsNorm,
        tied,
        rope_base: 10000.0,
        init_std: 0.2,
        norm_eps: 1e-5,
    }
}

fn train() -> TrainConfig {
    TrainConfig {
        optimizer: AdamW {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
        schedule: LrSchedule {
            decay: Decay::Constant,
            warmup_steps: 0,
            min_ratio: 1.0,
            total_steps: 100,
        },
        batch: 3,
        seed: 1,
        clip: Some(1.0),
        eval_every: 10,
        eval_batches: 1,
        checkpoint_every: 100,
        log_every: 1,
    }
}

/// One training step (and the forward program) of `model` on the backend
/// and on the interpreter, from the same random parameters, moments and
/// tokens.
fn check_step(model: &ModelConfig, seed: u64, options: JitOptions) {
    let train = train();
    let stage =
        gsc_compiler::compile_stage(model, &train, train.batch).unwrap_or_else(|e| panic!("{e}"));
    for (what, p) in [
        ("forward", &stage.forward_kernels),
        ("step", &stage.kernels),
    ] {
        let mut got = ProgramBuffers::new(p).unwrap();
        randomize(p, &mut got, seed, 0.5, model.vocab as u64);
        // Second moments are non-negative.
        for (i, b) in p.buffers.iter().enumerate() {
            if let Storage::AdamV(_) = b.storage {
                got.f32_mut(BufId(i))
                    .unwrap()
                    .iter_mut()
                    .for_each(|x| *x = x.abs() * 1e-3);
            }
        }
        let _ = got.set_lr(1e-2);
        let _ = got.set_step(3.0);
        let want = interpret(p, &got);
        let mut backend = CpuBackend::with_options(p, options).unwrap_or_else(|e| panic!("{e}"));
        backend.execute(&mut got).unwrap();
        for (i, b) in p.buffers.iter().enumerate() {
            if b.dtype != DType::F32 || matches!(b.storage, Storage::Arena { .. }) {
                continue;
            }
            let id = BufId(i);
            let (g, w) = (got.f32(id).unwrap(), want.f32(id).unwrap());
            let tol = match b.storage {
                // An update moves a parameter by about lr; compare the
                // moved amount to lr.
                Storage::Param(_) => 1e-2 * 1e-2,
                _ => 1e-3,
            };
            let floor = if matches!(b.storage, Storage::Param(_)) {
                1.0
            } else {
                1e-30
            };
            let (e, at) = max_rel_err(&g, &w, floor);
            assert!(
                e <= tol,
                "{what} of {:?}: b{i} ({}) error {e:.2e} at {at}: got {}, want {}",
                model.arch,
                b.name,
                g[at],
                w[at]
            );
        }
        assert!(got.loss().is_some_and(f32::is_finite), "{what}: loss");
    }
}

/// The reference interpreter in f64 run from `state` (every buffer,
/// temporaries included, written in id order so that overlapping arena
/// buffers end up as the backend's do), rounded back to f32 in the backend's
/// layout.
fn interpret(p: &KernelProgram, state: &ProgramBuffers) -> ProgramBuffers {
    let mut mem = Memory::<f64>::new(p);
    for (i, b) in p.buffers.iter().enumerate() {
        let id = BufId(i);
        match b.dtype {
            DType::F32 => {
                let v: Vec<f64> = state.f32(id).unwrap().iter().map(|&x| x as f64).collect();
                mem.write_buf(id, &v).unwrap();
            }
            DType::I32 => mem.write_buf_ints(id, state.i32(id).unwrap()).unwrap(),
        }
    }
    interp::run(p, &mut mem).unwrap_or_else(|e| panic!("{e}"));
    let mut out = ProgramBuffers::new(p).unwrap();
    for (i, b) in p.buffers.iter().enumerate() {
        let id = BufId(i);
        match b.dtype {
            DType::F32 => {
                let v = mem.read_buf(id).unwrap();
                for (o, x) in out.f32_mut(id).unwrap().iter_mut().zip(v) {
                    *o = x as f32;
                }
            }
            DType::I32 => out
                .i32_mut(id)
                .unwrap()
                .copy_from_slice(state.i32(id).unwrap()),
        }
    }
    out
}

#[test]
fn gpt_training_step_matches() {
    check_step(
        &tiny(Arch::Gpt, Activation::Gelu, true),
        31,
        JitOptions {
            simd: true,
            tabulate: true,
        },
    );
}

/// RoPE's cos/sin of (position, frequency) become constant tables.
#[test]
fn rope_angles_are_tabulated() {
    let stage =
        gsc_compiler::compile_stage(&tiny(Arch::Gpt, Activation::Gelu, true), &train(), 3).unwrap();
    let on = JitOptions {
        simd: true,
        tabulate: true,
    };
    let off = JitOptions {
        simd: true,
        tabulate: false,
    };
    assert!(!compile_program_with(&stage.kernels, on)
        .unwrap()
        .tables
        .is_empty());
    assert!(compile_program_with(&stage.kernels, off)
        .unwrap()
        .tables
        .is_empty());
}

#[test]
fn gpt_training_step_matches_without_simd() {
    check_step(
        &tiny(Arch::Gpt, Activation::Gelu, true),
        33,
        JitOptions {
            simd: false,
            tabulate: false,
        },
    );
}

/// LayerNorm (the GPT-2-style peer's norm) with a GELU MLP, and widths that
/// are not multiples of four lanes (d_model 30, ffn 26, RoPE half 5).
#[test]
fn gpt_layernorm_training_step_matches() {
    let mut m = tiny(Arch::Gpt, Activation::Gelu, true);
    m.norm = NormKind::LayerNorm;
    m.d_model = 30;
    m.heads = 3;
    m.kv_heads = 3;
    m.head_dim = 10;
    m.ffn = 26;
    check_step(
        &m,
        34,
        JitOptions {
            simd: true,
            tabulate: true,
        },
    );
}

#[test]
fn ngpt_training_step_matches() {
    check_step(
        &tiny(Arch::Ngpt, Activation::Swiglu, false),
        32,
        JitOptions {
            simd: true,
            tabulate: true,
        },
    );
}

/// Fills every F32 buffer with values uniform in [-scale, scale) and every
/// I32 buffer with values below `int_below`.
pub fn randomize(p: &KernelProgram, b: &mut ProgramBuffers, seed: u64, scale: f32, int_below: u64) {
    let mut r = SplitMix64::new(seed);
    for (i, buf) in p.buffers.iter().enumerate() {
        let id = BufId(i);
        match buf.dtype {
            DType::F32 => {
                for x in b.f32_mut(id).expect("F32").iter_mut() {
                    *x = r.symmetric_f32() * scale;
                }
            }
            DType::I32 => {
                for x in b.i32_mut(id).expect("I32") {
                    *x = r.below(int_below) as i32;
                }
            }
        }
    }
}

/// Largest |got − want| over the buffer, relative to the larger of `floor`
/// and the buffer's largest |want|; with the position of the worst element.
pub fn max_rel_err(got: &[f32], want: &[f32], floor: f64) -> (f64, usize) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(floor, |m, &w| m.max((w as f64).abs()));
    let mut worst = (0.0, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w as f64).abs() / scale;
        let e = if e.is_nan() { f64::INFINITY } else { e };
        if e > worst.0 {
            worst = (e, i);
        }
    }
    worst
}
