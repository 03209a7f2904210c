//! bfloat16: the top half of an f32 (8 exponent bits, 7 mantissa bits).
//! A `bf16` product in the kernel IR rounds its operands with [`round`];
//! every backend must round the same way, so these two functions are the
//! definition the interpreter, the CPU kernels and the tests share.

/// The bf16 nearest to `x` (ties to even), as its 16 bits. NaN stays NaN
/// (quiet); infinities and values that round past the largest finite bf16
/// become infinities, as the hardware conversions (`vcvtneps2bf16`) do.
#[inline(always)]
pub fn bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even.
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to the nearest bf16, as an f32 (the low 16 bits zero).
#[inline(always)]
pub fn round(x: f32) -> f32 {
    f32::from_bits(u32::from(bits(x)) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_with_ties_to_even() {
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: even mantissa wins.
        assert_eq!(round(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: up to even.
        assert_eq!(round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round(1.0 + 1.5 / 256.0), 1.0 + 2.0 / 256.0);
        assert_eq!(round(-3.0), -3.0);
        assert_eq!(round(0.1), 0.100_097_656);
        assert_eq!(round(f32::MAX), f32::INFINITY);
        assert_eq!(round(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(round(f32::NAN).is_nan());
        // 8 significant bits: relative error at most 2⁻⁸ for normal values,
        // and some value comes close to it.
        let mut worst: f32 = 0.0;
        for i in 1..10_000 {
            let x = i as f32 * 0.013_7 - 50.0;
            let err = (round(x) - x).abs() / x.abs();
            assert!(err <= 1.0 / 256.0, "{x}");
            worst = worst.max(err);
        }
        assert!(worst > 1.0 / 300.0, "{worst}");
    }
}
