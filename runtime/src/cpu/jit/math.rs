//! Transcendental functions for JIT code. `exp` and `tanh` are inlined as
//! branch-free polynomials (they run once per element of GELU and softmax);
//! `log`, `sin` and `cos` are calls into Rust's libm, which is accurate and
//! rare enough on the hot paths (once per row, or per RoPE element).
//!
//! `exp`: Cephes `expf` — range reduction by ln 2 in two parts, degree-5
//! polynomial, exponent built in the bits; about 2 ulp on [−87, 88].
//! `tanh`: Cephes `tanhf` — odd polynomial below 0.625, `1 − 2/(e^{2|x|}+1)`
//! above; about 2–3 ulp, selected without a branch.

use cranelift_codegen::ir::{
    condcodes::FloatCC, types, Endianness, FuncRef, InstBuilder, MemFlags, Type, Value,
};
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

/// `x` as a constant of type `ty` (F32, or F32X4 splatted).
fn konst(b: &mut FunctionBuilder, ty: Type, x: f32) -> Value {
    let c = b.ins().f32const(x);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

fn poly(b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
    let ty = b.func.dfg.value_type(x);
    let mut acc = konst(b, ty, coeffs[0]);
    for &c in &coeffs[1..] {
        let k = konst(b, ty, c);
        let t = b.ins().fmul(acc, x);
        acc = b.ins().fadd(t, k);
    }
    acc
}

/// `e^x` in f32 or f32x4 (NaN stays NaN; clamped to [−87.3, 88] first, so
/// the result is ≈1e-38 far below and ≈1.6e38 far above instead of 0 / ∞).
pub(super) fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let hi = konst(b, ty, 88.0);
    let lo = konst(b, ty, -87.3);
    let x = b.ins().fmin(x, hi);
    let x = b.ins().fmax(x, lo);
    let log2e = konst(b, ty, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    let c1 = konst(b, ty, 0.693_359_4);
    let c2 = konst(b, ty, -2.121_944_4e-4);
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
            0.5,
        ],
    );
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fmul(p, r2);
    let y = b.ins().fadd(y, r);
    let one = konst(b, ty, 1.0);
    let y = b.ins().fadd(y, one);
    let ity = if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    };
    let ni = b.ins().fcvt_to_sint_sat(ity, n);
    let bias = b.ins().iconst(types::I32, 127);
    let bias = if ty.is_vector() {
        b.ins().splat(ity, bias)
    } else {
        bias
    };
    let biased = b.ins().iadd(ni, bias);
    let shift = b.ins().iconst(types::I32, 23);
    let bits = b.ins().ishl(biased, shift);
    let flags = MemFlags::new().with_endianness(Endianness::Little);
    let scale = b.ins().bitcast(ty, flags, bits);
    b.ins().fmul(y, scale)
}

/// `tanh x` in f32 or f32x4.
pub(super) fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let z = b.ins().fabs(x);
    // Large |x|: 1 − 2/(e^{2z} + 1) (≥ 0), with x's sign.
    let z2 = b.ins().fadd(z, z);
    let e = exp(b, z2);
    let one = konst(b, ty, 1.0);
    let two = konst(b, ty, 2.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let big = b.ins().fsub(one, q);
    let sign_bit = konst(b, ty, -0.0);
    let sign = b.ins().band(x, sign_bit);
    let big = b.ins().bor(big, sign);
    // Small |x|: x + x³·P(x²).
    let s = b.ins().fmul(x, x);
    let p = poly(
        b,
        s,
        &[
            -5.704_988_7e-3,
            2.063_909e-2,
            -5.373_971_6e-2,
            1.333_144_2e-1,
            -3.333_328e-1,
        ],
    );
    let ps = b.ins().fmul(p, s);
    let pxs = b.ins().fmul(ps, x);
    let small = b.ins().fadd(pxs, x);
    let limit = konst(b, ty, 0.625);
    let is_big = b.ins().fcmp(FloatCC::GreaterThan, z, limit);
    if ty.is_vector() {
        let flags = MemFlags::new().with_endianness(Endianness::Little);
        let mask = b.ins().bitcast(ty, flags, is_big);
        b.ins().bitselect(mask, big, small)
    } else {
        b.ins().select(is_big, big, small)
    }
}
