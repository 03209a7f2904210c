//! The transcendental functions of the kernel IR as MLIR functions of
//! `arith` and `math.fma` alone, on scalars or vectors: the range
//! reductions and polynomials of `gsc_kernel_ir::approx`, which the
//! Cranelift backend uses too, so that both CPU backends round alike, LLVM can
//! vectorise the loops that call them once they are inlined, and the GPU
//! code needs no vendor math library for them.

use gsc_kernel_ir::approx::*;
use std::fmt::Write;

/// A helper the emitted kernels call, by its MLIR symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Helper {
    Exp,
    Log,
    Tanh,
    Sin,
    Cos,
}

impl Helper {
    /// `gsc_exp`, or `gsc_exp_v16` for vectors of 16.
    pub fn symbol(self, width: Option<usize>) -> String {
        let name = match self {
            Helper::Exp => "gsc_exp",
            Helper::Log => "gsc_log",
            Helper::Tanh => "gsc_tanh",
            Helper::Sin => "gsc_sin",
            Helper::Cos => "gsc_cos",
        };
        match width {
            Some(n) => format!("{name}_v{n}"),
            None => name.to_string(),
        }
    }
}

/// An f32 literal MLIR reads back exactly (Rust's shortest round trip,
/// with the `.` MLIR's float syntax requires).
pub fn f32_literal(x: f32) -> String {
    if !x.is_finite() {
        return format!("0x{:08X}", x.to_bits());
    }
    let s = format!("{x:?}");
    if s.contains('.') {
        s
    } else if let Some((m, e)) = s.split_once('e') {
        format!("{m}.0e{e}")
    } else {
        format!("{s}.0")
    }
}

/// Builds one helper's body in SSA form, over scalars or vectors.
struct Body {
    text: String,
    next: usize,
    /// The float, integer and condition types: `f32`, `i32`, `i1`, or
    /// `vector<NxT>` of each.
    f: String,
    i: String,
    c: String,
    /// Lanes, for vector constants.
    width: Option<usize>,
}

impl Body {
    fn new(width: Option<usize>) -> Self {
        let ty = |t: &str| match width {
            Some(n) => format!("vector<{n}x{t}>"),
            None => t.to_string(),
        };
        Body {
            text: String::new(),
            next: 0,
            f: ty("f32"),
            i: ty("i32"),
            c: ty("i1"),
            width,
        }
    }

    fn constant(&mut self, literal: &str, ty: &str) -> String {
        match self.width {
            Some(_) => self.op(&format!("arith.constant dense<{literal}> : {ty}")),
            None => self.op(&format!("arith.constant {literal} : {ty}")),
        }
    }

    fn cmpf(&mut self, pred: &str, a: &str, b: &str) -> String {
        let f = self.f.clone();
        self.op(&format!("arith.cmpf {pred}, {a}, {b} : {f}"))
    }

    fn select(&mut self, cond: &str, a: &str, b: &str, ty: &str) -> String {
        let rhs = match self.width {
            Some(_) => format!("arith.select {cond}, {a}, {b} : {}, {ty}", self.c),
            None => format!("arith.select {cond}, {a}, {b} : {ty}"),
        };
        self.op(&rhs)
    }

    fn selectf(&mut self, cond: &str, a: &str, b: &str) -> String {
        let f = self.f.clone();
        self.select(cond, a, b, &f)
    }

    fn unary(&mut self, op: &str, x: &str) -> String {
        let f = self.f.clone();
        self.op(&format!("{op} {x} : {f}"))
    }

    fn convert(&mut self, op: &str, x: &str, from_float: bool) -> String {
        let (a, b) = if from_float {
            (self.f.clone(), self.i.clone())
        } else {
            (self.i.clone(), self.f.clone())
        };
        self.op(&format!("{op} {x} : {a} to {b}"))
    }

    fn fbin(&mut self, op: &str, a: &str, b: &str) -> String {
        let f = self.f.clone();
        self.bin(op, a, b, &f)
    }

    fn ibin(&mut self, op: &str, a: &str, b: &str) -> String {
        let i = self.i.clone();
        self.bin(op, a, b, &i)
    }

    fn bits_of(&mut self, x: &str) -> String {
        let (f, i) = (self.f.clone(), self.i.clone());
        self.bitcast(x, &f, &i)
    }

    fn float_of(&mut self, x: &str) -> String {
        let (f, i) = (self.f.clone(), self.i.clone());
        self.bitcast(x, &i, &f)
    }

    fn op(&mut self, rhs: &str) -> String {
        let name = format!("%t{}", self.next);
        self.next += 1;
        let _ = writeln!(self.text, "    {name} = {rhs}");
        name
    }

    fn fc(&mut self, x: f32) -> String {
        let f = self.f.clone();
        self.constant(&f32_literal(x), &f)
    }

    fn ic(&mut self, x: i32) -> String {
        let i = self.i.clone();
        self.constant(&x.to_string(), &i)
    }

    fn bin(&mut self, op: &str, a: &str, b: &str, ty: &str) -> String {
        self.op(&format!("arith.{op} {a}, {b} : {ty}"))
    }

    fn fma(&mut self, a: &str, b: &str, c: &str) -> String {
        let f = self.f.clone();
        self.op(&format!("math.fma {a}, {b}, {c} : {f}"))
    }

    /// Horner: `coeffs[0]·x^(n-1) + … + coeffs[n-1]`, fused.
    fn poly(&mut self, x: &str, coeffs: &[f32]) -> String {
        let mut acc = self.fc(coeffs[0]);
        for &c in &coeffs[1..] {
            let k = self.fc(c);
            acc = self.fma(&acc, x, &k);
        }
        acc
    }

    /// `p < q ? a : b` (an ordered compare, so a NaN in `p` or `q` picks `b`).
    fn select_less(&mut self, p: &str, q: &str, a: &str, b: &str) -> String {
        let lt = self.cmpf("olt", p, q);
        self.selectf(&lt, a, b)
    }

    /// Clamps `x` to `[lo, hi]`, letting a NaN through (compare and select,
    /// which x86 does in one `minps`/`maxps` each).
    fn clamp(&mut self, x: &str, lo: f32, hi: f32) -> String {
        let hi = self.fc(hi);
        let lo = self.fc(lo);
        let x = self.select_less(&hi, x, &hi, x);
        self.select_less(&x, &lo, &lo, &x)
    }

    fn bitcast(&mut self, x: &str, from: &str, to: &str) -> String {
        self.op(&format!("arith.bitcast {x} : {from} to {to}"))
    }

    fn finish(self, name: &str, result: &str) -> String {
        let f = &self.f;
        format!(
            "  func.func private @{name}(%x: {f}) -> {f} {{\n{}    return {result} : {f}\n  }}\n",
            self.text
        )
    }
}

fn exp(width: Option<usize>) -> String {
    let mut b = Body::new(width);
    let x = b.clamp("%x", EXP_CLAMP.0, EXP_CLAMP.1);
    let log2e = b.fc(std::f32::consts::LOG2_E);
    let magic = b.fc(ROUND_MAGIC);
    // n = round(x·log2 e), by adding 1.5·2²³: its low mantissa bits hold n.
    let shifted = b.fma(&x, &log2e, &magic);
    let n = b.fbin("subf", &shifted, &magic);
    let c1 = b.fc(LN2_HI);
    let c2 = b.fc(LN2_LO);
    let nc1 = b.fbin("mulf", &n, &c1);
    let r = b.fbin("subf", &x, &nc1);
    let nc2 = b.fbin("mulf", &n, &c2);
    let r = b.fbin("subf", &r, &nc2);
    let p = b.poly(&r, &EXP_POLY);
    let r2 = b.fbin("mulf", &r, &r);
    let y = b.fbin("mulf", &p, &r2);
    let y = b.fbin("addf", &y, &r);
    let one = b.fc(1.0);
    let y = b.fbin("addf", &y, &one);
    // 2ⁿ from n's bits: (n + 127) << 23.
    let ni = b.bits_of(&shifted);
    let bias = b.ic(127);
    let biased = b.ibin("addi", &ni, &bias);
    let shift = b.ic(23);
    let bits = b.ibin("shli", &biased, &shift);
    let scale = b.float_of(&bits);
    let out = b.fbin("mulf", &y, &scale);
    b.finish(&Helper::Exp.symbol(width), &out)
}

fn tanh(width: Option<usize>) -> String {
    let mut b = Body::new(width);
    let x = b.clamp("%x", -TANH_CLAMP, TANH_CLAMP);
    let x2 = b.fbin("mulf", &x, &x);
    let p = b.poly(&x2, &TANH_P);
    let p = b.fbin("mulf", &p, &x);
    let q = b.poly(&x2, &TANH_Q);
    let out = b.fbin("divf", &p, &q);
    b.finish(&Helper::Tanh.symbol(width), &out)
}

fn sin_cos(cos: bool, width: Option<usize>) -> String {
    let mut b = Body::new(width);
    let ax = b.unary("math.absf", "%x");
    let fopi = b.fc(std::f32::consts::FRAC_2_PI * 2.0);
    let t = b.fbin("mulf", &ax, &fopi);
    // j = the even octant at or above |x|·4/π.
    let j = b.convert("arith.fptosi", &t, true);
    let one = b.ic(1);
    let j = b.ibin("addi", &j, &one);
    let not_one = b.ic(!1);
    let j = b.ibin("andi", &j, &not_one);
    let y = b.convert("arith.sitofp", &j, false);
    let mut r = ax;
    for dp in PI_4_PARTS {
        let c = b.fc(dp);
        let yc = b.fbin("mulf", &y, &c);
        r = b.fbin("subf", &r, &yc);
    }
    let z = b.fbin("mulf", &r, &r);
    let p = b.poly(&z, &SIN_POLY);
    let pz = b.fbin("mulf", &p, &z);
    let pzr = b.fbin("mulf", &pz, &r);
    let ps = b.fbin("addf", &pzr, &r);
    let q = b.poly(&z, &COS_POLY);
    let qz = b.fbin("mulf", &q, &z);
    let qzz = b.fbin("mulf", &qz, &z);
    let half = b.fc(0.5);
    let hz = b.fbin("mulf", &half, &z);
    let pc = b.fbin("subf", &qzz, &hz);
    let onef = b.fc(1.0);
    let pc = b.fbin("addf", &pc, &onef);
    let m = b.ibin("shrsi", &j, &one);
    let m = if cos { b.ibin("addi", &m, &one) } else { m };
    let odd = b.ibin("andi", &m, &one);
    let zero = b.ic(0);
    let i = b.i.clone();
    let swap = b.op(&format!("arith.cmpi ne, {odd}, {zero} : {i}"));
    let v = b.selectf(&swap, &pc, &ps);
    // The quadrant's sign, then (for sin) the argument's.
    let two = b.ic(2);
    let neg = b.ibin("andi", &m, &two);
    let thirty = b.ic(30);
    let neg = b.ibin("shli", &neg, &thirty);
    let vi = b.bits_of(&v);
    let vi = b.ibin("xori", &vi, &neg);
    let vi = if cos {
        vi
    } else {
        let xi = b.bits_of("%x");
        let sign_bit = b.ic(i32::MIN);
        let sign = b.ibin("andi", &xi, &sign_bit);
        b.ibin("xori", &vi, &sign)
    };
    let out = b.float_of(&vi);
    let name = if cos { Helper::Cos } else { Helper::Sin };
    b.finish(&name.symbol(width), &out)
}

/// Cephes' `logf`: x = m·2ᵉ with m in [√½, √2), log x = log m + e·log 2.
/// Zero gives −∞, negative arguments and NaN give NaN, +∞ gives +∞
/// (subnormal arguments are read as if normal).
fn log(width: Option<usize>) -> String {
    let mut b = Body::new(width);
    let bits = b.bits_of("%x");
    let c23 = b.ic(23);
    let exp_bits = b.ibin("shrui", &bits, &c23);
    let c255 = b.ic(255);
    let exp_bits = b.ibin("andi", &exp_bits, &c255);
    let c126 = b.ic(126);
    let e = b.ibin("subi", &exp_bits, &c126);
    let mant_mask = b.ic(0x807f_ffff_u32 as i32);
    let half_bits = b.ic(0x3f00_0000);
    let mb = b.ibin("andi", &bits, &mant_mask);
    let mb = b.ibin("ori", &mb, &half_bits);
    let m = b.float_of(&mb);
    let ef = b.convert("arith.sitofp", &e, false);
    // m in [0.5, 1): below √½ take 2m − 1 and e − 1, else m − 1.
    let sqrt_half = b.fc(std::f32::consts::FRAC_1_SQRT_2);
    let small = b.cmpf("olt", &m, &sqrt_half);
    let onef = b.fc(1.0);
    let ef1 = b.fbin("subf", &ef, &onef);
    let ef = b.selectf(&small, &ef1, &ef);
    let m2 = b.fbin("addf", &m, &m);
    let m = b.selectf(&small, &m2, &m);
    let m = b.fbin("subf", &m, &onef);
    let z = b.fbin("mulf", &m, &m);
    let p = b.poly(&m, &LOG_POLY);
    let mz = b.fbin("mulf", &m, &z);
    let y = b.fbin("mulf", &mz, &p);
    let q1 = b.fc(LN2_LO);
    let y = b.fma(&ef, &q1, &y);
    let mhalf = b.fc(-0.5);
    let y = b.fma(&z, &mhalf, &y);
    let r = b.fbin("addf", &m, &y);
    let q2 = b.fc(LN2_HI);
    let r = b.fma(&ef, &q2, &r);
    // Edges: 0 → −∞, x < 0 or NaN → NaN, +∞ → +∞.
    let zero = b.fc(0.0);
    let ninf = b.fc(f32::NEG_INFINITY);
    let pinf = b.fc(f32::INFINITY);
    let nan = b.fc(f32::NAN);
    let pos = b.cmpf("ogt", "%x", &zero);
    let is_zero = b.cmpf("oeq", "%x", &zero);
    let is_inf = b.cmpf("oeq", "%x", &pinf);
    let bad = b.selectf(&is_zero, &ninf, &nan);
    let r = b.selectf(&pos, &r, &bad);
    let out = b.selectf(&is_inf, &pinf, &r);
    b.finish(&Helper::Log.symbol(width), &out)
}

/// The MLIR text of `helper`, a private function `(f32) -> f32`, or
/// `(vector<Nxf32>) -> vector<Nxf32>` lane by lane for `width` N.
pub fn definition(helper: Helper, width: Option<usize>) -> String {
    match helper {
        Helper::Exp => exp(width),
        Helper::Log => log(width),
        Helper::Tanh => tanh(width),
        Helper::Sin => sin_cos(false, width),
        Helper::Cos => sin_cos(true, width),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_read_back_exactly() {
        assert_eq!(f32_literal(1.0), "1.0");
        assert_eq!(f32_literal(1e-5), "1.0e-5");
        assert_eq!(f32_literal(-2.5e20), "-2.5e20");
        assert_eq!(f32_literal(f32::NEG_INFINITY), "0xFF800000");
        assert_eq!(f32_literal(0.1), "0.1");
    }
}
