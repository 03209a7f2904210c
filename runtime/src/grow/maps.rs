//! Index maps along one axis of a parameter: for every index of the grown
//! axis, the old index it copies (or none: a new unit) and a coefficient.

/// `src[j]` is the old index new index `j` reads (scaled by `coef[j]`), or
/// `None` for a new unit that gets fresh values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AxisMap {
    pub src: Vec<Option<usize>>,
    pub coef: Vec<f64>,
}

impl AxisMap {
    pub fn identity(n: usize) -> Self {
        AxisMap {
            src: (0..n).map(Some).collect(),
            coef: vec![1.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.src.len()
    }

    /// The same sources with every coefficient multiplied by `s`.
    pub fn scaled(&self, s: f64) -> Self {
        AxisMap {
            src: self.src.clone(),
            coef: self.coef.iter().map(|c| c * s).collect(),
        }
    }

    /// For every index, whether the growth added it: a new unit, or a copy
    /// of an old index whose first image is an earlier index.
    pub fn added(&self) -> Vec<bool> {
        let mut seen = std::collections::HashSet::new();
        self.src
            .iter()
            .map(|s| s.is_none_or(|s| !seen.insert(s)))
            .collect()
    }

    /// Repeats each entry `block` times: a map over heads → a map over their rows.
    pub fn blocks(&self, block: usize) -> Self {
        let mut src = Vec::with_capacity(self.len() * block);
        let mut coef = Vec::with_capacity(self.len() * block);
        for (s, c) in self.src.iter().zip(&self.coef) {
            for t in 0..block {
                src.push(s.map(|s| s * block + t));
                coef.push(*c);
            }
        }
        AxisMap { src, coef }
    }
}

/// An onto map `from → to` (to ≥ from): index `j < from` is itself, the extra
/// indices are spread over the old ones as evenly as possible.
pub fn replication(from: usize, to: usize) -> Vec<usize> {
    let extra = to - from;
    (0..to)
        .map(|j| {
            if j < from {
                j
            } else if extra <= from {
                (j - from) * from / extra
            } else {
                (j - from) % from
            }
        })
        .collect()
}

/// How many new indices read each old one.
pub fn copies(g: &[usize], from: usize) -> Vec<usize> {
    let mut n = vec![0; from];
    for &i in g {
        n[i] += 1;
    }
    n
}

/// The isometric residual map E (growth.md): `E[j, g(j)] = c_j` with
/// `Σ_{g(j)=i} c_j² = 1`, so EᵀE = I. Even: every copy 1/√n. Uneven: copies
/// get unequal coefficients (0.8 and 0.6 for a pair), which breaks the
/// symmetry between them while staying exact.
pub fn isometric(from: usize, to: usize, uneven: bool) -> AxisMap {
    let g = replication(from, to);
    let n = copies(&g, from);
    let mut rank = vec![0usize; from];
    let coef = g
        .iter()
        .map(|&i| {
            let k = rank[i];
            rank[i] += 1;
            if !uneven || n[i] == 1 {
                1.0 / (n[i] as f64).sqrt()
            } else if n[i] == 2 {
                [0.8, 0.6][k]
            } else {
                // Weights n, n-1, …, 1, normalised to unit length.
                let norm = (1..=n[i]).map(|w| (w * w) as f64).sum::<f64>().sqrt();
                (n[i] - k) as f64 / norm
            }
        })
        .collect();
    AxisMap {
        src: g.into_iter().map(Some).collect(),
        coef,
    }
}

/// Zero-extension: old indices kept, new ones fresh (and zeroed by the caller
/// where exactness needs it).
pub fn extend(from: usize, to: usize) -> AxisMap {
    AxisMap {
        src: (0..to).map(|j| (j < from).then_some(j)).collect(),
        coef: vec![1.0; to],
    }
}

/// Net2Net copies: every new index reads an old one; `divide` scales each copy
/// by 1 / (number of copies), for the side that sums the copies back up.
pub fn copy(from: usize, to: usize, divide: bool) -> AxisMap {
    let g = replication(from, to);
    let n = copies(&g, from);
    let coef = g
        .iter()
        .map(|&i| if divide { 1.0 / n[i] as f64 } else { 1.0 })
        .collect();
    AxisMap {
        src: g.into_iter().map(Some).collect(),
        coef,
    }
}

/// Grouped-query heads `heads → heads'` with `kv` groups fixed: each group
/// keeps its old heads first and gains new slots (fresh, or copies of its own
/// heads when `copy` is some factor), so every query head stays with its K/V.
pub fn grouped_heads(heads: usize, to: usize, kv: usize, copy: Option<usize>) -> AxisMap {
    let (g_old, g_new) = (heads / kv, to / kv);
    let mut src = Vec::with_capacity(to);
    let mut coef = Vec::with_capacity(to);
    for h in 0..to {
        let (group, slot) = (h / g_new, h % g_new);
        match copy {
            Some(n) => {
                src.push(Some(group * g_old + slot / n));
                coef.push(1.0 / n as f64);
            }
            None => {
                src.push((slot < g_old).then_some(group * g_old + slot));
                coef.push(1.0);
            }
        }
    }
    AxisMap { src, coef }
}

/// Whole-number duplication `from → from·n`, copies adjacent: j ↦ j / n.
pub fn duplicate(from: usize, n: usize, coef: f64) -> AxisMap {
    AxisMap {
        src: (0..from * n).map(|j| Some(j / n)).collect(),
        coef: vec![coef; from * n],
    }
}

/// Applies one map per axis to a row-major tensor. Entries that read a new
/// unit on any axis come from `fresh` (same shape as the result).
pub fn remap(
    old: &[f64],
    old_shape: &[usize],
    maps: &[AxisMap],
    fresh: &[f64],
    square_coef: bool,
) -> Vec<f64> {
    let new_shape: Vec<usize> = maps.iter().map(AxisMap::len).collect();
    let total: usize = new_shape.iter().product();
    let mut out = vec![0.0; total];
    let rank = new_shape.len();
    let mut idx = vec![0usize; rank];
    for (flat, o) in out.iter_mut().enumerate() {
        let mut rem = flat;
        for a in (0..rank).rev() {
            idx[a] = rem % new_shape[a];
            rem /= new_shape[a];
        }
        let mut src_flat = 0;
        let mut coef = 1.0;
        let mut new_unit = false;
        for a in 0..rank {
            match maps[a].src[idx[a]] {
                Some(s) => {
                    src_flat = src_flat * old_shape[a] + s;
                    coef *= maps[a].coef[idx[a]];
                }
                None => new_unit = true,
            }
        }
        *o = if new_unit {
            fresh[flat]
        } else if square_coef {
            coef * coef * old[src_flat]
        } else {
            coef * old[src_flat]
        };
    }
    out
}
