//! Host code from MLIR called directly, without the runtime: a column sum
//! (the vectorised outer loop: 16 columns at a time, then one at a time)
//! with the vector `exp` helper and the outer index as a float, over
//! extents that leave remainders, run in two parts of the outer range as
//! two threads would, against the same sums in f64.

use gsc_kernel_ir::*;

fn buffer(name: &str, len: usize, storage: Storage) -> Buffer {
    Buffer {
        name: name.into(),
        dtype: DType::F32,
        len,
        storage,
    }
}

fn ix(terms: &[(u32, i64)]) -> Index {
    Index {
        affine: Affine {
            offset: 0,
            terms: terms.iter().map(|&(v, c)| (Var(v), c)).collect(),
        },
        gather: None,
    }
}

/// `out[c] = Σ_r exp(x[r, c]) · x[r, c] + c` over a `rows × cols` x.
fn column_program(rows: usize, cols: usize) -> KernelProgram {
    let x = || Expr::Load {
        buf: BufId(0),
        index: ix(&[(1, cols as i64), (0, 1)]),
    };
    let term = Expr::Binary(
        BinaryFn::Mul,
        Box::new(Expr::Unary(UnaryFn::Exp, Box::new(x()))),
        Box::new(x()),
    );
    let body = vec![Stmt::For {
        var: Var(0),
        extent: cols,
        body: vec![
            Stmt::Reduce {
                local: Local(0),
                op: ReduceFn::Sum,
                var: Var(1),
                extent: rows,
                body: vec![],
                value: term,
            },
            Stmt::Store {
                buf: BufId(1),
                index: ix(&[(0, 1)]),
                value: Expr::Binary(
                    BinaryFn::Add,
                    Box::new(Expr::Local(Local(0))),
                    Box::new(Expr::Var(Var(0))),
                ),
            },
        ],
    }];
    KernelProgram {
        buffers: vec![
            buffer("x", rows * cols, Storage::Param(0)),
            buffer("out", cols, Storage::Grad(0)),
        ],
        kernels: vec![Kernel::Loop(LoopKernel {
            name: "colsum".into(),
            body,
            num_vars: 2,
            num_locals: 1,
        })],
        arena_len: 0,
    }
}

#[test]
fn a_vectorised_column_sum_matches_f64_over_split_ranges() {
    for (rows, cols) in [(5, 37), (3, 16), (7, 15), (2, 50)] {
        let p = column_program(rows, cols);
        let text = gsc_mlir::kernel_mlir(&p, gsc_mlir::Target::Cpu).expect("lowers");
        assert!(
            text.contains("vector.load") && text.contains("@gsc_exp_v16"),
            "the column loop is vectorised:\n{text}"
        );
        let code = gsc_mlir::compile_cpu(&p).expect("compiles");
        let (entry, addr) = &code.entries[0];
        assert_eq!(entry.parallel, Some(cols));
        // SAFETY: the entry's ABI (gsc_mlir::cpu), over the two buffers
        // below, which have the program's lengths.
        let f = unsafe {
            std::mem::transmute::<*const u8, unsafe extern "C" fn(*const *mut u8, i64, i64)>(*addr)
        };
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let mut out = vec![f32::NAN; cols];
        let table = [x.as_mut_ptr() as *mut u8, out.as_mut_ptr() as *mut u8];
        let split = cols * 3 / 5;
        // SAFETY: disjoint parts of the parallel outer loop.
        unsafe {
            f(table.as_ptr(), 0, split as i64);
            f(table.as_ptr(), split as i64, cols as i64);
        }
        for c in 0..cols {
            let want: f64 = (0..rows)
                .map(|r| {
                    let v = f64::from(x[r * cols + c]);
                    v.exp() * v
                })
                .sum::<f64>()
                + c as f64;
            let got = f64::from(out[c]);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{rows}×{cols} column {c}: {got} against {want}"
            );
        }
    }
}
