//! The single-precision approximations every code generator uses for the
//! kernel IR's transcendental functions (Cephes' `expf`, `sinf`, `cosf`,
//! `logf`; Eigen's rational `tanh`), kept in one place so that the
//! Cranelift and MLIR backends compute the same function to the last bit.
//! Polynomials are in Horner order, highest power first.

/// `exp` clamps its argument to this range (`e^88` is near f32's largest).
pub const EXP_CLAMP: (f32, f32) = (-87.3, 88.0);
/// 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
pub const ROUND_MAGIC: f32 = 12_582_912.0;
/// ln 2 split in two (Cody–Waite), for `x − n·ln 2` without cancellation.
pub const LN2_HI: f32 = 0.693_359_4;
pub const LN2_LO: f32 = -2.121_944_4e-4;
/// `exp(r) ≈ 1 + r + r²·P(r)` on |r| ≤ ln2/2.
pub const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `tanh` clamps to ±this (where it is ±1 in f32), then `x·P(x²)/Q(x²)`.
pub const TANH_CLAMP: f32 = 7.905_311;
pub const TANH_P: [f32; 7] = [
    -2.760_768_5e-16,
    2.000_188e-13,
    -8.604_672e-11,
    5.122_297e-8,
    1.485_722_4e-5,
    6.372_619_3e-4,
    4.893_524_6e-3,
];
pub const TANH_Q: [f32; 4] = [1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3];

/// π/4 split in three (Cody–Waite), for the octant reduction of sin and cos.
pub const PI_4_PARTS: [f32; 3] = [0.785_156_25, 2.418_756_5e-4, 3.774_895e-8];
/// `sin(r) ≈ r + r³·P(r²)` and `cos(r) ≈ 1 − r²/2 + r⁴·Q(r²)` on |r| ≤ π/4.
pub const SIN_POLY: [f32; 3] = [-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1];
pub const COS_POLY: [f32; 3] = [2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2];

/// `log(1 + m) ≈ m − m²/2 + m³·P(m)` on m in [√½ − 1, √2 − 1].
pub const LOG_POLY: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
