//! Choosing the next token from logits: temperature, top-k, top-p (nucleus)
//! and a seed, so a sample can be drawn again.

use crate::rng::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 takes the most likely token (greedy decoding).
    pub temperature: f64,
    /// Only the `k` most likely tokens are drawn from.
    pub top_k: Option<usize>,
    /// Only the most likely tokens whose probabilities sum to at least `p`.
    pub top_p: Option<f64>,
    pub seed: u64,
}

pub struct Sampler {
    how: Sampling,
    rng: SplitMix64,
    /// (probability, token), reused between draws.
    ranked: Vec<(f64, u32)>,
}

impl Sampler {
    pub fn new(how: Sampling) -> Sampler {
        Sampler {
            how,
            rng: SplitMix64::new(how.seed),
            ranked: Vec::new(),
        }
    }

    /// The next token given the logits of every candidate (`logits[i]` is
    /// token `i`'s).
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        let best = || {
            (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
                .unwrap_or(0) as u32
        };
        if self.how.temperature <= 0.0 || logits.len() < 2 {
            return best();
        }
        let t = self.how.temperature;
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        self.ranked.clear();
        self.ranked.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &z)| (((z as f64 - m) / t).exp(), i as u32)),
        );
        // Most likely first; ties by token id, so a seed always gives the same text.
        self.ranked
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut keep = self
            .how
            .top_k
            .unwrap_or(usize::MAX)
            .clamp(1, self.ranked.len());
        let total: f64 = self.ranked[..keep].iter().map(|r| r.0).sum();
        if let Some(p) = self.how.top_p {
            let mut acc = 0.0;
            for (i, r) in self.ranked[..keep].iter().enumerate() {
                acc += r.0 / total;
                if acc >= p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &self.ranked[..keep];
        let total: f64 = kept.iter().map(|r| r.0).sum();
        let mut u = self.rng.uniform() * total;
        for r in kept {
            u -= r.0;
            if u < 0.0 {
                return r.1;
            }
        }
        kept[keep - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(how: Sampling, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(how);
        (0..n).map(|_| s.next(logits)).collect()
    }

    const LOGITS: [f32; 5] = [1.0, 3.0, 2.5, -1.0, 0.0];

    fn sampling(temperature: f64) -> Sampling {
        Sampling {
            temperature,
            top_k: None,
            top_p: None,
            seed: 7,
        }
    }

    #[test]
    fn temperature_zero_is_the_argmax() {
        assert_eq!(draws(sampling(0.0), &LOGITS, 3), vec![1, 1, 1]);
    }

    #[test]
    fn top_k_and_top_p_keep_only_the_likeliest() {
        let k2 = Sampling {
            top_k: Some(2),
            ..sampling(1.0)
        };
        let got = draws(k2, &LOGITS, 500);
        assert!(got.iter().all(|&t| t == 1 || t == 2));
        assert!(got.contains(&1) && got.contains(&2));
        // p(1) ≈ 0.53, p(2) ≈ 0.32: 0.6 needs both, 0.5 only the first.
        let p = |p| Sampling {
            top_p: Some(p),
            ..sampling(1.0)
        };
        assert!(draws(p(0.5), &LOGITS, 200).iter().all(|&t| t == 1));
        let got = draws(p(0.6), &LOGITS, 500);
        assert!(got.iter().all(|&t| t == 1 || t == 2) && got.contains(&2));
    }

    #[test]
    fn draws_follow_the_softmax() {
        let n = 20_000;
        let got = draws(sampling(1.0), &LOGITS, n);
        let z: f64 = LOGITS.iter().map(|&x| (x as f64).exp()).sum();
        for (i, &l) in LOGITS.iter().enumerate() {
            let want = (l as f64).exp() / z;
            let seen = got.iter().filter(|&&t| t as usize == i).count() as f64 / n as f64;
            assert!((seen - want).abs() < 0.015, "token {i}: {seen} vs {want}");
        }
    }

    #[test]
    fn a_seed_gives_the_same_draws() {
        let a = draws(sampling(0.8), &LOGITS, 50);
        assert_eq!(a, draws(sampling(0.8), &LOGITS, 50));
        let other = Sampling {
            seed: 8,
            ..sampling(0.8)
        };
        assert_ne!(a, draws(other, &LOGITS, 50));
    }
}
