//! The transcendental functions of the kernel IR as MLIR functions of
//! `arith` and `math.fma` alone: the same range reductions and polynomials
//! as the Cranelift backend (Cephes' `expf`, `sinf`, `cosf`, `logf`; Eigen's
//! rational `tanh`), so that both CPU backends round alike, LLVM can
//! vectorise the loops that call them once they are inlined, and the GPU
//! code needs no vendor math library for them.

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
    pub fn symbol(self) -> &'static str {
        match self {
            Helper::Exp => "gsc_exp",
            Helper::Log => "gsc_log",
            Helper::Tanh => "gsc_tanh",
            Helper::Sin => "gsc_sin",
            Helper::Cos => "gsc_cos",
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

/// Builds one helper's body in SSA form.
struct Body {
    text: String,
    next: usize,
}

impl Body {
    fn new() -> Self {
        Body {
            text: String::new(),
            next: 0,
        }
    }

    fn op(&mut self, rhs: &str) -> String {
        let name = format!("%t{}", self.next);
        self.next += 1;
        let _ = writeln!(self.text, "    {name} = {rhs}");
        name
    }

    fn f(&mut self, x: f32) -> String {
        self.op(&format!("arith.constant {} : f32", f32_literal(x)))
    }

    fn i(&mut self, x: i32) -> String {
        self.op(&format!("arith.constant {x} : i32"))
    }

    fn bin(&mut self, op: &str, a: &str, b: &str, ty: &str) -> String {
        self.op(&format!("arith.{op} {a}, {b} : {ty}"))
    }

    fn fma(&mut self, a: &str, b: &str, c: &str) -> String {
        self.op(&format!("math.fma {a}, {b}, {c} : f32"))
    }

    /// Horner: `coeffs[0]·x^(n-1) + … + coeffs[n-1]`, fused.
    fn poly(&mut self, x: &str, coeffs: &[f32]) -> String {
        let mut acc = self.f(coeffs[0]);
        for &c in &coeffs[1..] {
            let k = self.f(c);
            acc = self.fma(&acc, x, &k);
        }
        acc
    }

    /// `p < q ? a : b` (an ordered compare, so a NaN in `p` or `q` picks `b`).
    fn select_less(&mut self, p: &str, q: &str, a: &str, b: &str) -> String {
        let lt = self.op(&format!("arith.cmpf olt, {p}, {q} : f32"));
        self.op(&format!("arith.select {lt}, {a}, {b} : f32"))
    }

    /// Clamps `x` to `[lo, hi]`, letting a NaN through (compare and select,
    /// which x86 does in one `minps`/`maxps` each).
    fn clamp(&mut self, x: &str, lo: f32, hi: f32) -> String {
        let hi = self.f(hi);
        let lo = self.f(lo);
        let x = self.select_less(&hi, x, &hi, x);
        self.select_less(&x, &lo, &lo, &x)
    }

    fn bitcast(&mut self, x: &str, from: &str, to: &str) -> String {
        self.op(&format!("arith.bitcast {x} : {from} to {to}"))
    }

    fn finish(self, name: &str, result: &str) -> String {
        format!(
            "  func.func private @{name}(%x: f32) -> f32 {{\n{}    return {result} : f32\n  }}\n",
            self.text
        )
    }
}

fn exp() -> String {
    let mut b = Body::new();
    let x = b.clamp("%x", -87.3, 88.0);
    let log2e = b.f(std::f32::consts::LOG2_E);
    let magic = b.f(12_582_912.0);
    // n = round(x·log2 e), by adding 1.5·2²³: its low mantissa bits hold n.
    let shifted = b.fma(&x, &log2e, &magic);
    let n = b.bin("subf", &shifted, &magic, "f32");
    let c1 = b.f(0.693_359_4);
    let c2 = b.f(-2.121_944_4e-4);
    let nc1 = b.bin("mulf", &n, &c1, "f32");
    let r = b.bin("subf", &x, &nc1, "f32");
    let nc2 = b.bin("mulf", &n, &c2, "f32");
    let r = b.bin("subf", &r, &nc2, "f32");
    let p = b.poly(
        &r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ],
    );
    let r2 = b.bin("mulf", &r, &r, "f32");
    let y = b.bin("mulf", &p, &r2, "f32");
    let y = b.bin("addf", &y, &r, "f32");
    let one = b.f(1.0);
    let y = b.bin("addf", &y, &one, "f32");
    // 2ⁿ from n's bits: (n + 127) << 23.
    let ni = b.bitcast(&shifted, "f32", "i32");
    let bias = b.i(127);
    let biased = b.bin("addi", &ni, &bias, "i32");
    let shift = b.i(23);
    let bits = b.bin("shli", &biased, &shift, "i32");
    let scale = b.bitcast(&bits, "i32", "f32");
    let out = b.bin("mulf", &y, &scale, "f32");
    b.finish(Helper::Exp.symbol(), &out)
}

fn tanh() -> String {
    let mut b = Body::new();
    let x = b.clamp("%x", -7.905_311, 7.905_311);
    let x2 = b.bin("mulf", &x, &x, "f32");
    let p = b.poly(
        &x2,
        &[
            -2.760_768_5e-16,
            2.000_188e-13,
            -8.604_672e-11,
            5.122_297e-8,
            1.485_722_4e-5,
            6.372_619_3e-4,
            4.893_524_6e-3,
        ],
    );
    let p = b.bin("mulf", &p, &x, "f32");
    let q = b.poly(
        &x2,
        &[1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3],
    );
    let out = b.bin("divf", &p, &q, "f32");
    b.finish(Helper::Tanh.symbol(), &out)
}

fn sin_cos(cos: bool) -> String {
    let mut b = Body::new();
    let ax = b.op("math.absf %x : f32");
    let fopi = b.f(std::f32::consts::FRAC_2_PI * 2.0);
    let t = b.bin("mulf", &ax, &fopi, "f32");
    // j = the even octant at or above |x|·4/π.
    let j = b.op(&format!("arith.fptosi {t} : f32 to i32"));
    let one = b.i(1);
    let j = b.bin("addi", &j, &one, "i32");
    let not_one = b.i(!1);
    let j = b.bin("andi", &j, &not_one, "i32");
    let y = b.op(&format!("arith.sitofp {j} : i32 to f32"));
    let mut r = ax;
    for dp in [0.785_156_25f32, 2.418_756_5e-4, 3.774_895e-8] {
        let c = b.f(dp);
        let yc = b.bin("mulf", &y, &c, "f32");
        r = b.bin("subf", &r, &yc, "f32");
    }
    let z = b.bin("mulf", &r, &r, "f32");
    let p = b.poly(&z, &[-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1]);
    let pz = b.bin("mulf", &p, &z, "f32");
    let pzr = b.bin("mulf", &pz, &r, "f32");
    let ps = b.bin("addf", &pzr, &r, "f32");
    let q = b.poly(&z, &[2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2]);
    let qz = b.bin("mulf", &q, &z, "f32");
    let qzz = b.bin("mulf", &qz, &z, "f32");
    let half = b.f(0.5);
    let hz = b.bin("mulf", &half, &z, "f32");
    let pc = b.bin("subf", &qzz, &hz, "f32");
    let onef = b.f(1.0);
    let pc = b.bin("addf", &pc, &onef, "f32");
    let m = b.bin("shrsi", &j, &one, "i32");
    let m = if cos {
        b.bin("addi", &m, &one, "i32")
    } else {
        m
    };
    let odd = b.bin("andi", &m, &one, "i32");
    let zero = b.i(0);
    let swap = b.op(&format!("arith.cmpi ne, {odd}, {zero} : i32"));
    let v = b.op(&format!("arith.select {swap}, {pc}, {ps} : f32"));
    // The quadrant's sign, then (for sin) the argument's.
    let two = b.i(2);
    let neg = b.bin("andi", &m, &two, "i32");
    let thirty = b.i(30);
    let neg = b.bin("shli", &neg, &thirty, "i32");
    let vi = b.bitcast(&v, "f32", "i32");
    let vi = b.bin("xori", &vi, &neg, "i32");
    let vi = if cos {
        vi
    } else {
        let xi = b.bitcast("%x", "f32", "i32");
        let sign_bit = b.i(i32::MIN);
        let sign = b.bin("andi", &xi, &sign_bit, "i32");
        b.bin("xori", &vi, &sign, "i32")
    };
    let out = b.bitcast(&vi, "i32", "f32");
    let name = if cos { Helper::Cos } else { Helper::Sin };
    b.finish(name.symbol(), &out)
}

/// Cephes' `logf`: x = m·2ᵉ with m in [√½, √2), log x = log m + e·log 2.
/// Zero gives −∞, negative arguments and NaN give NaN, +∞ gives +∞
/// (subnormal arguments are read as if normal).
fn log() -> String {
    let mut b = Body::new();
    let bits = b.bitcast("%x", "f32", "i32");
    let c23 = b.i(23);
    let exp_bits = b.bin("shrui", &bits, &c23, "i32");
    let c255 = b.i(255);
    let exp_bits = b.bin("andi", &exp_bits, &c255, "i32");
    let c126 = b.i(126);
    let e = b.bin("subi", &exp_bits, &c126, "i32");
    let mant_mask = b.i(0x807f_ffff_u32 as i32);
    let half_bits = b.i(0x3f00_0000);
    let mb = b.bin("andi", &bits, &mant_mask, "i32");
    let mb = b.bin("ori", &mb, &half_bits, "i32");
    let m = b.bitcast(&mb, "i32", "f32");
    let ef = b.op(&format!("arith.sitofp {e} : i32 to f32"));
    // m in [0.5, 1): below √½ take 2m − 1 and e − 1, else m − 1.
    let sqrt_half = b.f(std::f32::consts::FRAC_1_SQRT_2);
    let small = b.op(&format!("arith.cmpf olt, {m}, {sqrt_half} : f32"));
    let onef = b.f(1.0);
    let ef1 = b.bin("subf", &ef, &onef, "f32");
    let ef = b.op(&format!("arith.select {small}, {ef1}, {ef} : f32"));
    let m2 = b.bin("addf", &m, &m, "f32");
    let m = b.op(&format!("arith.select {small}, {m2}, {m} : f32"));
    let m = b.bin("subf", &m, &onef, "f32");
    let z = b.bin("mulf", &m, &m, "f32");
    let p = b.poly(
        &m,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let mz = b.bin("mulf", &m, &z, "f32");
    let y = b.bin("mulf", &mz, &p, "f32");
    let q1 = b.f(-2.121_944_4e-4);
    let y = b.fma(&ef, &q1, &y);
    let mhalf = b.f(-0.5);
    let y = b.fma(&z, &mhalf, &y);
    let r = b.bin("addf", &m, &y, "f32");
    let q2 = b.f(0.693_359_4);
    let r = b.fma(&ef, &q2, &r);
    // Edges: 0 → −∞, x < 0 or NaN → NaN, +∞ → +∞.
    let zero = b.f(0.0);
    let ninf = b.f(f32::NEG_INFINITY);
    let pinf = b.f(f32::INFINITY);
    let nan = b.f(f32::NAN);
    let pos = b.op(&format!("arith.cmpf ogt, %x, {zero} : f32"));
    let is_zero = b.op(&format!("arith.cmpf oeq, %x, {zero} : f32"));
    let is_inf = b.op(&format!("arith.cmpf oeq, %x, {pinf} : f32"));
    let bad = b.op(&format!("arith.select {is_zero}, {ninf}, {nan} : f32"));
    let r = b.op(&format!("arith.select {pos}, {r}, {bad} : f32"));
    let out = b.op(&format!("arith.select {is_inf}, {pinf}, {r} : f32"));
    b.finish(Helper::Log.symbol(), &out)
}

/// The MLIR text of `helper`, a private function `(f32) -> f32`.
pub fn definition(helper: Helper) -> String {
    match helper {
        Helper::Exp => exp(),
        Helper::Log => log(),
        Helper::Tanh => tanh(),
        Helper::Sin => sin_cos(false),
        Helper::Cos => sin_cos(true),
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
