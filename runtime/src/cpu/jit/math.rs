//! Transcendental functions for JIT code. `exp`, `tanh`, `sin` and `cos` are
//! inlined as branch-free polynomials (they run once per element of GELU,
//! softmax and RoPE), in f32 or f32x4 alike; `log` is a call into Rust's
//! libm (it runs once per row, in the cross-entropy).
//!
//! `exp`: Cephes `expf` — range reduction by ln 2 in two parts, degree-5
//! polynomial, exponent built in the bits; about 2 ulp on [−87, 88].
//! `tanh`: Eigen's rational approximation, below 4e-7 relative error.

use cranelift_codegen::ir::{
    condcodes::FloatCC, types, Endianness, FuncRef, InstBuilder, MemFlags, Type, Value,
};
use cranelift_frontend::FunctionBuilder;
use gsc_compiler::kernel::approx::*;

/// The imported libm entry points, as references inside one function.
pub(super) struct MathFns {
    pub log: FuncRef,
}

pub(super) extern "C" fn gsc_logf(x: f32) -> f32 {
    x.ln()
}

/// Symbol names the JIT module resolves to the functions above.
pub(super) const SYMBOLS: [(&str, extern "C" fn(f32) -> f32); 1] = [("gsc_logf", gsc_logf)];

/// `x` as a constant of type `ty` (F32, or F32X4 splatted).
fn konst(b: &mut FunctionBuilder, ty: Type, x: f32) -> Value {
    let c = b.ins().f32const(x);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// Whether the host has fused multiply-add (Cranelift emits `vfmadd` for
/// `fma` then; without it, it would need a libcall).
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `a·x + k`, fused where the host can.
fn mul_add(b: &mut FunctionBuilder, a: Value, x: Value, k: Value) -> Value {
    if has_fma() {
        b.ins().fma(a, x, k)
    } else {
        let t = b.ins().fmul(a, x);
        b.ins().fadd(t, k)
    }
}

/// Horner's rule, highest coefficient first.
fn poly(b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
    let ty = b.func.dfg.value_type(x);
    let mut acc = konst(b, ty, coeffs[0]);
    for &c in &coeffs[1..] {
        let k = konst(b, ty, c);
        acc = mul_add(b, acc, x, k);
    }
    acc
}

/// `p < q ? a : b`. Cranelift's x64 backend lowers `p < q ? p : q` to one
/// `minps` and `q < p ? p : q` to one `maxps`, where `fmin`/`fmax` take
/// seven instructions (they order ±0 and canonicalise NaN). With a NaN
/// operand the comparison is false and the result is `b`.
fn select_less(b: &mut FunctionBuilder, p: Value, q: Value, x: Value, y: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let lt = b.ins().fcmp(FloatCC::LessThan, p, q);
    if ty.is_vector() {
        let flags = MemFlags::new().with_endianness(Endianness::Little);
        let mask = b.ins().bitcast(ty, flags, lt);
        b.ins().bitselect(mask, x, y)
    } else {
        b.ins().select(lt, x, y)
    }
}

/// `x` clamped to `[lo, hi]`, a NaN `x` kept: `minps(hi, x)`, `maxps(lo, ·)`.
fn clamp(b: &mut FunctionBuilder, x: Value, lo: f32, hi: f32) -> Value {
    let ty = b.func.dfg.value_type(x);
    let hi = konst(b, ty, hi);
    let lo = konst(b, ty, lo);
    let x = select_less(b, hi, x, hi, x);
    select_less(b, x, lo, lo, x)
}

/// `e^x` in f32 or f32x4 (NaN stays NaN; clamped to [−87.3, 88] first, so
/// the result is ≈1e-38 far below and ≈1.6e38 far above instead of 0 / ∞).
///
/// `n = round(x·log2 e)` by adding and subtracting 1.5·2²³: the sum's low
/// mantissa bits are `n` itself (|n| ≤ 127), so `2ⁿ` is those bits plus the
/// exponent bias shifted into place — no `round` and no saturating
/// conversion, which Cranelift spells in seven instructions per vector.
pub(super) fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let x = clamp(b, x, EXP_CLAMP.0, EXP_CLAMP.1);
    let log2e = konst(b, ty, std::f32::consts::LOG2_E);
    let magic = konst(b, ty, ROUND_MAGIC);
    let shifted = mul_add(b, x, log2e, magic);
    let n = b.ins().fsub(shifted, magic);
    let c1 = konst(b, ty, LN2_HI);
    let c2 = konst(b, ty, LN2_LO);
    let nc1 = b.ins().fmul(n, c1);
    let r = b.ins().fsub(x, nc1);
    let nc2 = b.ins().fmul(n, c2);
    let r = b.ins().fsub(r, nc2);
    let p = poly(b, r, &EXP_POLY);
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
    let flags = MemFlags::new().with_endianness(Endianness::Little);
    let ni = b.ins().bitcast(ity, flags, shifted);
    let bias = b.ins().iconst(types::I32, 127);
    let bias = if ty.is_vector() {
        b.ins().splat(ity, bias)
    } else {
        bias
    };
    let biased = b.ins().iadd(ni, bias);
    let shift = b.ins().iconst(types::I32, 23);
    let bits = b.ins().ishl(biased, shift);
    let scale = b.ins().bitcast(ty, flags, bits);
    b.ins().fmul(y, scale)
}

/// `tanh x` in f32 or f32x4: Eigen's rational approximation (odd degree-13
/// numerator over even degree-6 denominator) on x clamped to ±7.905, beyond
/// which tanh is ±1 in f32; below 4e-7 relative error everywhere, one
/// division and no exponential (GELU and σ run it once per element).
pub(super) fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let x = clamp(b, x, -TANH_CLAMP, TANH_CLAMP);
    let x2 = b.ins().fmul(x, x);
    let p = poly(b, x2, &TANH_P);
    let p = b.ins().fmul(p, x);
    let q = poly(b, x2, &TANH_Q);
    b.ins().fdiv(p, q)
}

/// `sin x` (or `cos x` with `cos`) in f32 or f32x4: Cephes `sinf`/`cosf`.
/// The argument is reduced by multiples of π/4 in three parts (exact
/// products for |x| ≤ 8192), then a degree-7 sine or degree-8 cosine
/// polynomial on [−π/4, π/4] is chosen per quadrant; about 1e-7 absolute
/// error for |x| ≤ 8192 (RoPE angles are positions times frequencies ≤ 1,
/// so that covers contexts up to 8192). Branch-free.
pub(super) fn sin_cos(b: &mut FunctionBuilder, x: Value, cos: bool) -> Value {
    let ty = b.func.dfg.value_type(x);
    let vector = ty.is_vector();
    let ity = if vector { types::I32X4 } else { types::I32 };
    let int = |b: &mut FunctionBuilder, v: i64| {
        let c = b.ins().iconst(types::I32, v);
        if vector {
            b.ins().splat(ity, c)
        } else {
            c
        }
    };
    let ax = b.ins().fabs(x);
    let fopi = konst(b, ty, std::f32::consts::FRAC_2_PI * 2.0);
    let t = b.ins().fmul(ax, fopi);
    // j = trunc(|x|·4/π) rounded up to even; y = j as float.
    let j = b.ins().fcvt_to_sint_sat(ity, t);
    let one = int(b, 1);
    let j = b.ins().iadd(j, one);
    let not_one = int(b, !1);
    let j = b.ins().band(j, not_one);
    let y = b.ins().fcvt_from_sint(ty, j);
    let mut r = ax;
    for dp in PI_4_PARTS {
        let c = konst(b, ty, dp);
        let yc = b.ins().fmul(y, c);
        r = b.ins().fsub(r, yc);
    }
    let z = b.ins().fmul(r, r);
    // sin r = r + r·z·P(z); cos r = 1 − z/2 + z²·Q(z).
    let p = poly(b, z, &SIN_POLY);
    let pz = b.ins().fmul(p, z);
    let pzr = b.ins().fmul(pz, r);
    let ps = b.ins().fadd(pzr, r);
    let q = poly(b, z, &COS_POLY);
    let qz = b.ins().fmul(q, z);
    let qzz = b.ins().fmul(qz, z);
    let half = konst(b, ty, 0.5);
    let hz = b.ins().fmul(half, z);
    let pc = b.ins().fsub(qzz, hz);
    let onef = konst(b, ty, 1.0);
    let pc = b.ins().fadd(pc, onef);
    // |x| = m·π/2 + r with m = j/2: sin(mπ/2 + r) is sin r, cos r, −sin r,
    // −cos r for m mod 4 = 0..3; cos(θ) = sin(θ + π/2) is m + 1.
    let shift1 = b.ins().iconst(types::I32, 1);
    let m = b.ins().sshr(j, shift1);
    let m = if cos { b.ins().iadd(m, one) } else { m };
    let odd = b.ins().band(m, one);
    let zero = int(b, 0);
    let swap = b
        .ins()
        .icmp(cranelift_codegen::ir::condcodes::IntCC::NotEqual, odd, zero);
    let v = if vector {
        let flags = MemFlags::new().with_endianness(Endianness::Little);
        let mask = b.ins().bitcast(ty, flags, swap);
        b.ins().bitselect(mask, pc, ps)
    } else {
        b.ins().select(swap, pc, ps)
    };
    // Sign: bit 1 of m, moved to bit 31, and for sin the sign of x.
    let two = int(b, 2);
    let neg = b.ins().band(m, two);
    let shift30 = b.ins().iconst(types::I32, 30);
    let neg = b.ins().ishl(neg, shift30);
    let flags = MemFlags::new().with_endianness(Endianness::Little);
    let neg = b.ins().bitcast(ty, flags, neg);
    let v = b.ins().bxor(v, neg);
    if cos {
        v
    } else {
        let sign_bit = konst(b, ty, -0.0);
        let sign = b.ins().band(x, sign_bit);
        b.ins().bxor(v, sign)
    }
}
