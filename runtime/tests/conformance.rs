//! The conformance suite: every backend against the reference interpreter
//! in f64, through the `Backend` and `Program` traits alone (programs loaded,
//! fed, run and read back as the training loop does): every kernel kind on
//! random inputs (odd extents, extents below and around the thread count),
//! whole training steps of small gpt and nGPT models, and programs sharing
//! parameters. A backend joins with one line, `conformance!(name, backend)`
//! (below the suite); tests of the CPU backend's own machinery follow, and
//! last the library kernels that have a loop-kernel form (`library_loops`).
//!
//! Tolerances: each test states its own, as the largest error relative to
//! the largest magnitude in the buffer (so cancellation near zero does not
//! blow up a relative error). f32 has a 6e-8 unit roundoff; a dot product or
//! row sum of n terms in f32 is off by about √n·6e-8 typically and n·6e-8 at
//! worst, and a training step chains a few dozen such kernels, so single
//! kernels are held to 1e-5 and whole steps to 1e-3 (grads, loss) / lr·1e-2
//! (updated parameters).

mod common;

use gsc_compiler::kernel::*;
use gsc_compiler::plan::*;
use gsc_runtime::backend::{Backend, BackendError, Program};
use gsc_runtime::interp::InterpBackend;
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

/// The distinct persistent buffers of `p` (the ones a `Program` exposes),
/// in buffer order.
fn persistent(p: &KernelProgram) -> Vec<&Buffer> {
    let mut seen = vec![];
    p.buffers
        .iter()
        .filter(|b| !matches!(b.storage, Storage::Arena { .. }))
        .filter(|b| {
            let new = !seen.contains(&b.storage);
            seen.push(b.storage);
            new
        })
        .collect()
}

/// Fills every persistent buffer of `p`, the same in each of `programs`:
/// F32 values uniform in [-scale, scale), I32 values below `int_below`.
fn randomize(
    p: &KernelProgram,
    programs: &mut [&mut Box<dyn Program>],
    seed: u64,
    scale: f32,
    int_below: u64,
) {
    let mut r = SplitMix64::new(seed);
    for b in persistent(p) {
        match b.dtype {
            DType::F32 => {
                let v: Vec<f32> = (0..b.len).map(|_| r.symmetric_f32() * scale).collect();
                programs
                    .iter_mut()
                    .for_each(|x| x.write(b.storage, &v).unwrap());
            }
            DType::I32 => {
                let v: Vec<i32> = (0..b.len).map(|_| r.below(int_below) as i32).collect();
                programs
                    .iter_mut()
                    .for_each(|x| x.write_ints(b.storage, &v).unwrap());
            }
        }
    }
}

/// The reference: `p` on the interpreter in f64.
fn oracle(p: &KernelProgram) -> Box<dyn Program> {
    InterpBackend::<f64>::default()
        .load(p)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `p` on the backend and on the interpreter from the same random
/// state; returns (backend, interpreter) programs.
fn run_both(
    backend: &dyn Backend,
    p: &KernelProgram,
    seed: u64,
    scale: f32,
    int_below: u64,
) -> (Box<dyn Program>, Box<dyn Program>) {
    let mut got = backend.load(p).unwrap_or_else(|e| panic!("{e}"));
    let mut want = oracle(p);
    randomize(p, &mut [&mut got, &mut want], seed, scale, int_below);
    want.run().unwrap_or_else(|e| panic!("{e}"));
    got.run().unwrap_or_else(|e| panic!("{e}"));
    (got, want)
}

/// Every persistent F32 buffer within `tol(storage)`, relative to the
/// larger of `floor(storage)` and the buffer's largest value.
fn assert_close(
    p: &KernelProgram,
    got: &dyn Program,
    want: &dyn Program,
    what: &str,
    tol: impl Fn(Storage) -> (f64, f64),
) {
    for b in persistent(p).into_iter().filter(|b| b.dtype == DType::F32) {
        let (g, w) = (got.read(b.storage).unwrap(), want.read(b.storage).unwrap());
        let (tol, floor) = tol(b.storage);
        let (e, at) = max_rel_err(&g, &w, floor);
        assert!(
            e <= tol,
            "{what}{} ({:?}): error {e:.2e} at {at}: got {}, want {}",
            b.name,
            b.storage,
            g[at],
            w[at]
        );
    }
}

/// Every persistent F32 buffer within `tol` (relative to the buffer's largest value).
fn assert_all_close(p: &KernelProgram, got: &dyn Program, want: &dyn Program, tol: f64) {
    assert_close(p, got, want, "", |_| (tol, 1e-30));
}

// The suite: each check runs on any backend.

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
            f32buf("y", n, Storage::AdamM(0)),
            f32buf("out", n, Storage::AdamV(0)),
            f32buf("out_t", n, Storage::Grad(0)),
        ],
        kernels: vec![loop_kernel(
            "elementwise",
            vec![for_(0, rows, vec![for_(1, cols, body)])],
            2,
            l + 1,
        )],
        arena_len: 0,
    }
}

fn elementwise_functions_match_over_odd_and_tiny_extents(b: &dyn Backend) {
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
        let (got, want) = run_both(b, &p, seed as u64, 1.0, 1);
        assert_all_close(&p, got.as_ref(), want.as_ref(), 1e-5);
    }
}

/// Backends evaluate exp, tanh, sin and cos as inline polynomials: check
/// them pointwise over their whole useful range, exp and tanh relative to
/// each value (1e-6), sin and cos absolutely (1e-6; angles up to 8192 as
/// RoPE makes them).
fn inline_transcendentals_are_accurate_pointwise(b: &dyn Backend) {
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
    let mut prog = b.load(&p).unwrap_or_else(|e| panic!("{e}"));
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
    for (set, xs) in [xs, xs_small, xs_angles].into_iter().enumerate() {
        prog.write(Storage::Param(0), &xs).unwrap();
        prog.run().unwrap();
        let [exp, tanh, sin, cos] = [
            Storage::Grad(0),
            Storage::AdamM(0),
            Storage::AdamV(0),
            Storage::Grad(1),
        ]
        .map(|s| prog.read(s).unwrap());
        for (i, &x) in xs.iter().enumerate() {
            let e = exp[i] as f64;
            let t = tanh[i] as f64;
            let (we, wt) = ((x as f64).exp(), (x as f64).tanh());
            if set < 2 {
                assert!(((e - we) / we).abs() < 1e-6, "exp({x}) = {e}, want {we}");
                assert!(
                    ((t - wt) / wt).abs() < 1e-6 || (t - wt).abs() < 1e-37,
                    "tanh({x}) = {t}, want {wt}"
                );
            }
            let (sn, cs) = (sin[i] as f64, cos[i] as f64);
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
    prog.write(Storage::Param(0), &special).unwrap();
    prog.run().unwrap();
    let e = prog.read(Storage::Grad(0)).unwrap();
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
            f32buf("softmax", rows * cols, Storage::Grad(1)),
            f32buf("colsum", cols, Storage::Grad(0)),
            f32buf("mean_max", 1, Storage::Loss),
        ],
        kernels: vec![
            loop_kernel("softmax", vec![for_(0, rows, row)], 4, 3),
            loop_kernel("colsum", colsum, 2, 3),
            loop_kernel("mean_max", total, 2, 2),
        ],
        arena_len: 0,
    }
}

fn reductions_match(b: &dyn Backend) {
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
        let (got, want) = run_both(b, &p, 10 + seed as u64, 4.0, 1);
        assert_all_close(&p, got.as_ref(), want.as_ref(), 1e-5);
    }
}

/// nGPT's column normalisation after an in-place update: per column, a
/// strided sum of squares, then a strided in-place read-modify-write.
fn column_normalisation_in_place_matches(b: &dyn Backend) {
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
        let (got, want) = run_both(b, &p, 50 + seed as u64, 1.0, 1);
        assert_all_close(&p, got.as_ref(), want.as_ref(), 1e-5);
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
            f32buf("x", n * dim, Storage::Grad(0)),
            f32buf("probs", n * vocab, Storage::Logits),
            f32buf("dlogits", n * vocab, Storage::Grad(1)),
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
        arena_len: 0,
    }
}

fn gathers_and_select_match(b: &dyn Backend) {
    for (seed, (n, vocab, dim)) in [(1, 1, 1), (3, 5, 7), (4097, 11, 9), (33, 256, 64)]
        .into_iter()
        .enumerate()
    {
        let p = gather_program(n, vocab, dim);
        let (got, want) = run_both(b, &p, 20 + seed as u64, 1.0, vocab as u64);
        assert_all_close(&p, got.as_ref(), want.as_ref(), 0.0);
    }
}

/// A token outside the vocabulary fails the run before any kernel writes.
fn out_of_range_token_is_refused_before_running(b: &dyn Backend) {
    let p = gather_program(4, 5, 3);
    let mut prog = b.load(&p).unwrap_or_else(|e| panic!("{e}"));
    let untouched = vec![7.0; 4 * 3];
    prog.write(Storage::Grad(0), &untouched).unwrap();
    prog.write_ints(Storage::Tokens, &[0, 4, 5, 1]).unwrap();
    let e = prog.run().expect_err("token 5 of a vocabulary of 5");
    assert!(
        e.message.contains("tokens") && e.message.contains("position 2"),
        "the error names the buffer and the position: {e}"
    );
    assert_eq!(prog.read(Storage::Grad(0)).unwrap(), untouched);
    prog.write_ints(Storage::Tokens, &[0, 4, -1, 1]).unwrap();
    assert!(prog.run().is_err());
    prog.write_ints(Storage::Tokens, &[0, 4, 3, 1]).unwrap();
    prog.run().unwrap();
}

fn an_index_past_the_end_names_the_kernel_and_prints_it(b: &dyn Backend) {
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
    let e = match b.load(&p) {
        Ok(_) => panic!("a program indexing past a buffer's end was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("k0") && e.contains("shifted_copy"), "{e}");
    assert!(e.contains("b0[1..=8] outside its 8 elements"), "{e}");
    assert!(e.contains("b1[i0] = b0[i0 + 1]"), "the IR is printed: {e}");
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
    // Every buffer persistent, so that a `Program` can fill and read it.
    let mut buffers = vec![];
    let mut add = |name: &str, len: usize, dtype: DType| {
        let storage = match dtype {
            DType::I32 => Storage::Tokens,
            DType::F32 => Storage::Param(buffers.len()),
        };
        buffers.push(Buffer {
            name: name.into(),
            dtype,
            len,
            storage,
        });
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
            batch: 1,
            bf16: false,
        });
    }
    // Batches of products, each operand its matrices one after another.
    for (ta, tb) in [(true, false), (false, true)] {
        let (m, n, k, batch) = (9, 5, 6, 3);
        kernels.push(Kernel::MatMul {
            a: add(&format!("ba{ta}"), batch * m * k, DType::F32),
            b: add(&format!("bb{ta}"), batch * k * n, DType::F32),
            out: add(&format!("bc{ta}"), batch * m * n, DType::F32),
            m,
            n,
            k,
            ta,
            tb,
            batch,
            bf16: false,
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
        arena_len: 0,
    }
}

fn library_kernels_match(b: &dyn Backend) {
    let p = library_program();
    let (got, want) = run_both(b, &p, 7, 1.0, 13);
    assert_all_close(&p, got.as_ref(), want.as_ref(), 1e-5);
}

/// bf16 products, every transpose and a batch: the CPU backend (its
/// AVX512_BF16 kernel where the CPU has one) rounds the operands as the
/// interpreter does and sums in f32. The CUDA backend refuses them.
#[test]
fn cpu_bf16_products_match() {
    let mut p = library_program();
    p.kernels.retain(|k| matches!(k, Kernel::MatMul { .. }));
    for k in &mut p.kernels {
        if let Kernel::MatMul { bf16, .. } = k {
            *bf16 = true;
        }
    }
    let (got, want) = run_both(&gsc_runtime::backend::Cpu, &p, 7, 1.0, 13);
    assert_all_close(&p, got.as_ref(), want.as_ref(), 1e-5);
}

/// Wider than `common::tiny`, with grouped queries.
fn tiny(arch: Arch, activation: Activation, tied: bool) -> ModelConfig {
    ModelConfig {
        context: 9,
        d_model: 16,
        heads: 4,
        kv_heads: 2,
        ffn: 24,
        init_std: 0.2,
        ..common::tiny(arch, NormKind::RmsNorm, activation, tied)
    }
}

fn train() -> TrainConfig {
    TrainConfig {
        batch: 3,
        ..common::train_config(1e-2, 0.1, Some(1.0))
    }
}

/// The source of the programs a training-step check runs.
type Load<'a> = &'a dyn Fn(&KernelProgram) -> Result<Box<dyn Program>, BackendError>;

/// Random parameters, moments (second moments non-negative) and tokens for
/// `p`, in each of `programs`, with lr 1e-2 at step 3 where `p` has them.
fn training_state(
    p: &KernelProgram,
    programs: &mut [&mut Box<dyn Program>],
    seed: u64,
    vocab: usize,
) {
    randomize(p, programs, seed, 0.5, vocab as u64);
    for b in persistent(p) {
        let v: Vec<f32> = match b.storage {
            Storage::AdamV(_) => {
                let v = programs[0].read(b.storage).unwrap();
                v.iter().map(|x| x.abs() * 1e-3).collect()
            }
            Storage::Lr => vec![1e-2],
            Storage::Step => vec![3.0],
            _ => continue,
        };
        programs
            .iter_mut()
            .for_each(|x| x.write(b.storage, &v).unwrap());
    }
}

/// One training step (and the forward program) of `model` on the backend
/// and on the interpreter, from the same random parameters, moments and
/// tokens.
fn check_step(load: Load, model: &ModelConfig, seed: u64) {
    let train = train();
    let stage =
        gsc_compiler::compile_stage(model, &train, train.batch).unwrap_or_else(|e| panic!("{e}"));
    for (what, p) in [
        ("forward", &stage.forward_kernels),
        ("step", &stage.kernels),
    ] {
        let mut got = load(p).unwrap_or_else(|e| panic!("{e}"));
        let mut want = oracle(p);
        training_state(p, &mut [&mut got, &mut want], seed, model.vocab);
        want.run().unwrap_or_else(|e| panic!("{e}"));
        got.run().unwrap_or_else(|e| panic!("{e}"));
        let what = format!("{what} of {:?}: ", model.arch);
        assert_close(p, got.as_ref(), want.as_ref(), &what, |s| match s {
            // An update moves a parameter by about lr; compare the moved
            // amount to lr.
            Storage::Param(_) => (1e-2 * 1e-2, 1.0),
            _ => (1e-3, 1e-30),
        });
        let loss = got.read(Storage::Loss).unwrap()[0];
        assert!(loss.is_finite(), "{what}loss {loss}");
    }
}

fn gpt_training_step_matches(b: &dyn Backend) {
    check_step(&|p| b.load(p), &tiny(Arch::Gpt, Activation::Gelu, true), 31);
}

/// LayerNorm (the GPT-2-style peer's norm) with a GELU MLP, and widths that
/// are not multiples of four lanes (d_model 30, ffn 26, RoPE half 5).
fn gpt_layernorm_training_step_matches(b: &dyn Backend) {
    let mut m = tiny(Arch::Gpt, Activation::Gelu, true);
    m.norm = NormKind::LayerNorm;
    m.d_model = 30;
    m.heads = 3;
    m.kv_heads = 3;
    m.head_dim = 10;
    m.ffn = 26;
    check_step(&|p| b.load(p), &m, 34);
}

fn ngpt_training_step_matches(b: &dyn Backend) {
    check_step(
        &|p| b.load(p),
        &tiny(Arch::Ngpt, Activation::Swiglu, false),
        32,
    );
}

/// A forward program loaded sharing a training step's parameters reads them
/// where the step updates them, and writes through to them; a program of no
/// backend is refused as an owner.
fn parameters_are_shared_in_place(b: &dyn Backend) {
    let model = tiny(Arch::Gpt, Activation::Gelu, true);
    let train = train();
    let stage =
        gsc_compiler::compile_stage(&model, &train, train.batch).unwrap_or_else(|e| panic!("{e}"));
    let (step_p, fwd_p) = (&stage.kernels, &stage.forward_kernels);
    let mut step = b.load(step_p).unwrap_or_else(|e| panic!("{e}"));
    let mut fwd = b
        .load_sharing(fwd_p, step.as_ref())
        .unwrap_or_else(|e| panic!("{e}"));
    training_state(step_p, &mut [&mut step], 41, model.vocab);
    step.run().unwrap();
    // The same forward program, fed a copy of the updated parameters, and
    // both the same batch.
    let mut copied = b.load(fwd_p).unwrap();
    let mut r = SplitMix64::new(42);
    for buf in persistent(fwd_p) {
        match buf.storage {
            Storage::Param(_) => {
                let values = step.read(buf.storage).unwrap();
                copied.write(buf.storage, &values).unwrap();
            }
            Storage::Tokens | Storage::Targets => {
                let ids: Vec<i32> = (0..buf.len)
                    .map(|_| r.below(model.vocab as u64) as i32)
                    .collect();
                for x in [&mut fwd, &mut copied] {
                    x.write_ints(buf.storage, &ids).unwrap();
                }
            }
            _ => {}
        }
    }
    fwd.run().unwrap();
    copied.run().unwrap();
    // Equal but for the rounding of parameters to f32 in the copy (an f64
    // interpreter holds them wider); the step moved them by about lr.
    for s in [Storage::Loss, Storage::Logits] {
        let (e, at) = max_rel_err(&fwd.read(s).unwrap(), &copied.read(s).unwrap(), 1e-30);
        assert!(e <= 1e-5, "{s:?}: error {e:.2e} at {at}");
    }
    let zeros = vec![0.0; step.read(Storage::Param(0)).unwrap().len()];
    fwd.write(Storage::Param(0), &zeros).unwrap();
    assert_eq!(step.read(Storage::Param(0)).unwrap(), zeros);
    assert!(b.load_sharing(fwd_p, &Stranger).is_err());
}

/// A program of no backend.
struct Stranger;

impl Program for Stranger {
    fn write(&mut self, _: Storage, _: &[f32]) -> Result<(), BackendError> {
        Ok(())
    }

    fn write_ints(&mut self, _: Storage, _: &[i32]) -> Result<(), BackendError> {
        Ok(())
    }

    fn read(&self, _: Storage) -> Result<Vec<f32>, BackendError> {
        Ok(vec![])
    }

    fn run(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn code(&self) -> &'static str {
        "none"
    }
}

/// Largest |got − want| over the buffer, relative to the larger of `floor`
/// and the buffer's largest |want|; with the position of the worst element.
fn max_rel_err(got: &[f32], want: &[f32], floor: f64) -> (f64, usize) {
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

/// Every check of the suite as a test of `backend`, in module `name`:
/// `conformance!(cpu, Cpu)` makes `cpu::reductions_match` and
/// the rest.
macro_rules! conformance {
    (@tests $backend:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                super::$check(&$backend);
            }
        )*
    };
    ($name:ident, $backend:expr) => {
        mod $name {
            conformance!(@tests $backend;
                elementwise_functions_match_over_odd_and_tiny_extents,
                inline_transcendentals_are_accurate_pointwise,
                reductions_match,
                column_normalisation_in_place_matches,
                gathers_and_select_match,
                out_of_range_token_is_refused_before_running,
                an_index_past_the_end_names_the_kernel_and_prints_it,
                library_kernels_match,
                gpt_training_step_matches,
                gpt_layernorm_training_step_matches,
                ngpt_training_step_matches,
                parameters_are_shared_in_place,
            );
        }
    };
}

/// `B` running what a GPU runs: every program rewritten by
/// `library::for_gpu` (attention as products and loop kernels, the
/// embedding gradient as a loop kernel) before `B` loads it.
struct ForGpu<B>(B);

impl<B: Backend> Backend for ForGpu<B> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn load(&self, p: &KernelProgram) -> Result<Box<dyn Program>, BackendError> {
        self.0.load(&library::for_gpu(p))
    }

    fn load_sharing(
        &self,
        p: &KernelProgram,
        owner: &dyn Program,
    ) -> Result<Box<dyn Program>, BackendError> {
        self.0.load_sharing(&library::for_gpu(p), owner)
    }
}

/// The MLIR backend running what a GPU runs, each program also lowered to
/// PTX, which is saved in `$GSC_PTX_DIR` when that is set: the PTX the
/// `cuda` conformance tests run on a GPU by a test binary without MLIR.
#[cfg(feature = "mlir")]
struct MlirForGpu;

#[cfg(feature = "mlir")]
impl MlirForGpu {
    fn lower(p: &KernelProgram) -> Result<(), BackendError> {
        let err = |message: String| BackendError {
            backend: "mlir",
            message,
        };
        let options = gsc_mlir::CudaOptions::for_chip("sm_80").map_err(|e| err(e.to_string()))?;
        let ptx = gsc_runtime::run::artifact::PtxProgram::compile(p, "conformance", &options)
            .map_err(|e| err(e.to_string()))?;
        match std::env::var_os("GSC_PTX_DIR") {
            Some(dir) => {
                gsc_runtime::cuda::ptx::save(std::path::Path::new(&dir), &ptx).map_err(err)
            }
            None => Ok(()),
        }
    }
}

#[cfg(feature = "mlir")]
impl Backend for MlirForGpu {
    fn name(&self) -> &'static str {
        "mlir"
    }

    fn load(&self, p: &KernelProgram) -> Result<Box<dyn Program>, BackendError> {
        let loaded = ForGpu(gsc_runtime::backend::Mlir).load(p)?;
        Self::lower(p)?;
        Ok(loaded)
    }

    fn load_sharing(
        &self,
        p: &KernelProgram,
        owner: &dyn Program,
    ) -> Result<Box<dyn Program>, BackendError> {
        let loaded = ForGpu(gsc_runtime::backend::Mlir).load_sharing(p, owner)?;
        Self::lower(p)?;
        Ok(loaded)
    }
}

/// GPU 0 with the PTX of `$GSC_PTX_DIR` (saved by the `mlir_gpu_form`
/// tests of a build with MLIR).
#[cfg(feature = "cuda")]
fn gpu() -> gsc_runtime::cuda::Cuda {
    let dir = std::env::var_os("GSC_PTX_DIR").expect("GSC_PTX_DIR names the conformance PTX");
    let ptx = gsc_runtime::cuda::ptx::load_dir(std::path::Path::new(&dir)).unwrap();
    gsc_runtime::cuda::Cuda::open(0, ptx).unwrap_or_else(|e| panic!("{e}"))
}

conformance!(cpu, gsc_runtime::backend::Cpu);
conformance!(cpu_gpu_form, super::ForGpu(gsc_runtime::backend::Cpu));
#[cfg(feature = "mlir")]
conformance!(mlir, gsc_runtime::backend::Mlir);
#[cfg(feature = "mlir")]
conformance!(mlir_gpu_form, super::MlirForGpu);
#[cfg(feature = "cuda")]
conformance!(cuda, super::gpu());

/// The oracle shares parameters the same way (the training loop relies on it).
#[test]
fn the_interpreter_shares_parameters_in_place() {
    parameters_are_shared_in_place(&InterpBackend::<f64>::default());
}

/// The CPU backend's own machinery: what its JIT proves and generates, and
/// a training step without SIMD.
mod cpu_jit {
    use super::*;
    use gsc_runtime::backend::Cpu;
    use gsc_runtime::cpu::jit::{compile_program, compile_program_with, JitOptions};

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

    /// RoPE's cos/sin of (position, frequency) become constant tables.
    #[test]
    fn rope_angles_are_tabulated() {
        let stage =
            gsc_compiler::compile_stage(&tiny(Arch::Gpt, Activation::Gelu, true), &train(), 3)
                .unwrap();
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
        let scalar = JitOptions {
            simd: false,
            tabulate: false,
        };
        check_step(
            &|p| Cpu.load_with(p, scalar),
            &tiny(Arch::Gpt, Activation::Gelu, true),
            33,
        );
    }
}

/// Library kernels written as loop kernels (`gsc_kernel_ir::library`, what
/// the PTX carries for the embedding gradient) compute what the library
/// kernel computes: the interpreter runs both, and with the `mlir` feature
/// the MLIR backend runs the loop form through the same MLIR lowering the
/// GPU code takes.
mod library_loops {
    use gsc_compiler::kernel::library::embedding_bwd_as_loops;
    use gsc_compiler::kernel::*;
    use gsc_runtime::backend::Backend;
    use gsc_runtime::interp::InterpBackend;

    fn embedding_bwd_program(tokens: usize, vocab: usize, dim: usize) -> KernelProgram {
        let buffer = |name: &str, dtype, len, storage| Buffer {
            name: String::from(name),
            dtype,
            len,
            storage,
        };
        KernelProgram {
            buffers: vec![
                buffer("ids", DType::I32, tokens, Storage::Tokens),
                buffer("dy", DType::F32, tokens * dim, Storage::Param(0)),
                buffer("out", DType::F32, vocab * dim, Storage::Grad(0)),
            ],
            kernels: vec![Kernel::EmbeddingBwd {
                ids: BufId(0),
                dy: BufId(1),
                out: BufId(2),
                vocab,
                dim,
            }],
            arena_len: 0,
        }
    }

    fn run(backend: &dyn Backend, p: &KernelProgram, ids: &[i32], dy: &[f32]) -> Vec<f32> {
        let mut prog = backend.load(p).unwrap_or_else(|e| panic!("{e}"));
        prog.write_ints(Storage::Tokens, ids).unwrap();
        prog.write(Storage::Param(0), dy).unwrap();
        prog.run().unwrap();
        prog.read(Storage::Grad(0)).unwrap()
    }

    fn check(backend: &dyn Backend) {
        // Repeated ids (rows summed), unused rows (zero), odd sizes.
        for (tokens, vocab, dim) in [(37, 11, 5), (8, 3, 16), (1, 1, 1)] {
            let p = embedding_bwd_program(tokens, vocab, dim);
            let looped = embedding_bwd_as_loops(&p);
            assert!(matches!(looped.kernels[0], Kernel::Loop(_)));
            let ids: Vec<i32> = (0..tokens)
                .map(|n| ((n * 7) % vocab.max(1)) as i32)
                .collect();
            let dy: Vec<f32> = (0..tokens * dim).map(|i| (i % 13) as f32 - 6.0).collect();
            let want = run(&InterpBackend::<f64>::default(), &p, &ids, &dy);
            let got = run(backend, &looped, &ids, &dy);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{} {tokens}×{vocab}×{dim} element {i}: {g} against {w}",
                    backend.name()
                );
            }
        }
    }

    #[test]
    fn the_embedding_gradient_as_a_loop_matches_the_library_kernel() {
        check(&InterpBackend::<f64>::default());
    }

    #[cfg(feature = "mlir")]
    #[test]
    fn the_embedding_gradient_loop_through_mlir_matches() {
        check(&gsc_runtime::backend::Mlir);
    }
}
