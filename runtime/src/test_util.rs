//! Helpers shared by the unit tests.

use crate::rng::SplitMix64;

/// `len` values uniform in [-1, 1) from `seed`.
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..len).map(|_| r.symmetric_f32()).collect()
}

/// Every element within `tol` of the reference, relative to the larger of
/// 1 and the reference's magnitude.
pub fn assert_close(got: &[f32], want: &[f32], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs() / (w as f64).abs().max(1.0);
        assert!(
            err <= tol,
            "{what}: element {i} is {g}, want {w} (error {err:.2e})"
        );
    }
}
