//! Transcendental functions for JIT code. `exp` and `tanh` are inlined as
//! branch-free polynomials (they run once per element of GELU and softmax);
//! `log`, `sin` and `cos` are calls into Rust's libm, which is accurate and
//! rare enough on the hot paths (once per row, or per RoPE element).
//!
//! `exp`: Cephes `expf` — range reduction by ln 2 in two parts, degree-5
//! polynomial, exponent built in the bits; about 2 ulp on [−87, 88].
//! `tanh`: Cephes `tanhf` — odd polynomial below 0.625, `1 − 2/(e^{2|x|}+1)`
//! above; about 2–3 ulp, selected without a branch.

use cranelift_codegen::ir::{condcodes::FloatCC, types, FuncRef, InstBuilder, MemFlags, Value};
use cranelift_frontend::FunctionBuilder;

/// The imported libm entry points, as references inside one function.
pub(super) struct MathFns {
    pub log: FuncRef,
    pub sin: FuncRef,
    pub cos: FuncRef,
}

pub(super) extern "C" fn gsc_logf(x: f32) -> f32 {
    x.ln()
}

pub(super) extern "C" fn gsc_sinf(x: f32) -> f32 {
    x.sin()
}

pub(super) extern "C" fn gsc_cosf(x: f32) -> f32 {
    x.cos()
}

/// Symbol names the JIT module resolves to the functions above.
pub(super) const SYMBOLS: [(&str, extern "C" fn(f32) -> f32); 3] = [
    ("gsc_logf", gsc_logf),
    ("gsc_sinf", gsc_sinf),
    ("gsc_cosf", gsc_cosf),
];

fn poly(b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
    let mut acc = b.ins().f32const(coeffs[0]);
    for &c in &coeffs[1..] {
        let k = b.ins().f32const(c);
        let t = b.ins().fmul(acc, x);
        acc = b.ins().fadd(t, k);
    }
    acc
}

/// `e^x` in f32 (NaN stays NaN; clamped to [−87.3, 88] first, so the result
/// is ≈1e-38 far below and ≈1.6e38 far above instead of 0 / ∞).
pub(super) fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let hi = b.ins().f32const(88.0);
    let lo = b.ins().f32const(-87.3);
    let x = b.ins().fmin(x, hi);
    let x = b.ins().fmax(x, lo);
    let log2e = b.ins().f32const(std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    let c1 = b.ins().f32const(0.693_359_4);
    let c2 = b.ins().f32const(-2.121_944_4e-4);
    let nc1 = b.ins().fmul(n, c1);
    let r = b.ins().fsub(x, nc1);
    let nc2 = b.ins().fmul(n, c2);
    let r = b.ins().fsub(r, nc2);
    let p = poly(
        b,
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.000_000_1e-1,
        ],
    );
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fmul(p, r2);
    let y = b.ins().fadd(y, r);
    let one = b.ins().f32const(1.0);
    let y = b.ins().fadd(y, one);
    let ni = b.ins().fcvt_to_sint_sat(types::I32, n);
    let biased = b.ins().iadd_imm(ni, 127);
    let bits = b.ins().ishl_imm(biased, 23);
    let scale = b.ins().bitcast(types::F32, MemFlags::new(), bits);
    b.ins().fmul(y, scale)
}

/// `tanh x` in f32.
pub(super) fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let z = b.ins().fabs(x);
    // Large |x|: 1 − 2/(e^{2z} + 1), with x's sign.
    let z2 = b.ins().fadd(z, z);
    let e = exp(b, z2);
    let one = b.ins().f32const(1.0);
    let two = b.ins().f32const(2.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let big = b.ins().fsub(one, q);
    let big = b.ins().fcopysign(big, x);
    // Small |x|: x + x³·P(x²).
    let s = b.ins().fmul(x, x);
    let p = poly(
        b,
        s,
        &[
            -5.704_988_7e-3,
            2.063_908_9e-2,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328_2e-1,
        ],
    );
    let ps = b.ins().fmul(p, s);
    let pxs = b.ins().fmul(ps, x);
    let small = b.ins().fadd(pxs, x);
    let limit = b.ins().f32const(0.625);
    let is_big = b.ins().fcmp(FloatCC::GreaterThan, z, limit);
    b.ins().select(is_big, big, small)
}
