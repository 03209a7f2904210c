//! Growing a model in place (growth.md): parameters and Adam moments of a
//! stage mapped to the next stage's shapes, so that the grown model computes
//! the same function wherever the plan declared the step exact.
//!
//! Every step is a set of index maps, one per kind of axis (the residual
//! stream, the query/key-value heads, the FFN units, the vocabulary): each
//! parameter's axes are remapped, new units take fresh initial values, and
//! output-side weights of new units start at zero where exactness needs it
//! (under `ramp` they are fresh too: the stage's gate, 0 at the growth,
//! keeps the new units silent).
//! Adam's first moment follows the same linear map as the parameter and the
//! second moment the squared map — the moments the grown model would have
//! had, had it been trained all along (gradients map like the weights).

mod maps;

use gsc_compiler::init::init_params;
use gsc_compiler::plan::{
    Arch, Axis, GrowthStep, Method, ModelConfig, OptimizerPolicy, ParamRole, ParamSpec, Split,
};
use maps::AxisMap;

/// Parameters and Adam moments of one model, in `ModelConfig::params()` order.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelState {
    pub config: ModelConfig,
    pub params: Vec<Vec<f64>>,
    pub m: Vec<Vec<f64>>,
    pub v: Vec<Vec<f64>>,
}

impl ModelState {
    /// A model trained from scratch: fresh parameters, zero moments.
    pub fn init(config: &ModelConfig, seed: u64) -> Self {
        let params = init_params(config, seed);
        let zeros: Vec<Vec<f64>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        ModelState {
            config: config.clone(),
            params,
            m: zeros.clone(),
            v: zeros,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrowError {
    #[error("growing {axis} by {method} is not supported by the runtime: {why}")]
    Unsupported {
        axis: &'static str,
        method: String,
        why: String,
    },
    #[error("the model does not match the growth step: {0}")]
    Mismatch(String),
}

/// Which of a model's sizes an axis of a parameter has.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dim {
    Resid,
    Q,
    Kv,
    Ffn,
    Vocab,
}

fn dims(role: ParamRole) -> &'static [Dim] {
    use Dim::*;
    match role {
        ParamRole::TokenEmbedding | ParamRole::LmHead => &[Vocab, Resid],
        ParamRole::Wq => &[Q, Resid],
        ParamRole::Wk | ParamRole::Wv => &[Kv, Resid],
        ParamRole::Wo => &[Resid, Q],
        ParamRole::WUp | ParamRole::WGate => &[Ffn, Resid],
        ParamRole::WDown => &[Resid, Ffn],
        ParamRole::NormGain | ParamRole::NormBias | ParamRole::AlphaAttn | ParamRole::AlphaMlp => {
            &[Resid]
        }
        ParamRole::SQk => &[Q],
        ParamRole::SU | ParamRole::SV => &[Ffn],
        ParamRole::SZ => &[Vocab],
    }
}

fn is_vector(role: ParamRole) -> bool {
    dims(role).len() == 1
}

/// The maps of one step, per kind of axis, plus per-role adjustments.
struct StepMaps {
    resid: AxisMap,
    q: AxisMap,
    kv: AxisMap,
    ffn: AxisMap,
    vocab: AxisMap,
    /// Weights whose new units must start at zero for the step to be exact.
    zero_new: Vec<ParamRole>,
    /// Extra scale of whole parameters (stored scales, norm gains).
    role_scale: Vec<(ParamRole, f64)>,
    /// Extra scale of the final norm's gain and bias (HyperCloning with a
    /// tied embedding).
    final_norm_scale: f64,
    /// Per-role coefficient overrides for one kind of axis (reading vs writing side).
    role_map: Vec<(ParamRole, Dim, AxisMap)>,
}

impl StepMaps {
    fn identity(m: &ModelConfig) -> Self {
        StepMaps {
            resid: AxisMap::identity(m.d_model),
            q: AxisMap::identity(m.q_dim()),
            kv: AxisMap::identity(m.kv_dim()),
            ffn: AxisMap::identity(m.ffn),
            vocab: AxisMap::identity(m.vocab),
            zero_new: Vec::new(),
            role_scale: Vec::new(),
            final_norm_scale: 1.0,
            role_map: Vec::new(),
        }
    }

    fn map(&self, role: ParamRole, dim: Dim) -> AxisMap {
        if let Some((_, _, m)) = self
            .role_map
            .iter()
            .find(|(r, d, _)| *r == role && *d == dim)
        {
            return m.clone();
        }
        let m = match dim {
            Dim::Resid => &self.resid,
            Dim::Q => &self.q,
            Dim::Kv => &self.kv,
            Dim::Ffn => &self.ffn,
            Dim::Vocab => &self.vocab,
        };
        // Vectors along the residual stream are copied, not mixed by E's coefficients.
        if dim == Dim::Resid && is_vector(role) {
            return AxisMap {
                src: m.src.clone(),
                coef: vec![1.0; m.len()],
            };
        }
        m.clone()
    }

    fn scale(&self, spec: &ParamSpec) -> f64 {
        let role = spec.role;
        let last =
            matches!(role, ParamRole::NormGain | ParamRole::NormBias) && spec.layer.is_none();
        let s: f64 = self
            .role_scale
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, s)| s)
            .product();
        if last {
            s * self.final_norm_scale
        } else {
            s
        }
    }
}

/// Applies one growth step to `state`. New units draw their values from a
/// fresh initialisation of the grown model seeded with `seed`.
pub fn grow(state: &ModelState, step: &GrowthStep, seed: u64) -> Result<ModelState, GrowError> {
    let old = &state.config;
    if step.axis.size(old) != step.from {
        return Err(GrowError::Mismatch(format!(
            "{} is {} but the step grows it from {}",
            step.axis.name(),
            step.axis.size(old),
            step.from
        )));
    }
    let new = old.grown_by(step.axis, step.to, &step.method);
    let unsupported = |why: &str| GrowError::Unsupported {
        axis: step.axis.name(),
        method: step.method.describe(),
        why: why.to_string(),
    };
    let fresh = init_params(&new, seed);
    let out = if step.axis == Axis::Layers {
        grow_layers(state, &new, step, &fresh)?
    } else {
        let maps = step_maps(old, &new, step).map_err(|w| unsupported(&w))?;
        remap_all(state, &new, step, &maps, &fresh, seed)
    };
    Ok(out)
}

fn step_maps(old: &ModelConfig, new: &ModelConfig, step: &GrowthStep) -> Result<StepMaps, String> {
    let mut s = StepMaps::identity(old);
    let ngpt = old.arch == Arch::Ngpt;
    let (from, to) = (step.from, step.to);
    match step.axis {
        Axis::DModel => {
            let hypercloning = step.method == Method::Copy && !ngpt;
            s.resid = match step.method {
                Method::Isometric { split } => maps::isometric(from, to, split == Split::Uneven),
                // nGPT cannot divide by n (its rows stay unit-norm): there
                // HyperCloning is the isometric map, copies scaled by 1/√n.
                // `gsc check` refuses `copy` here; the built-in doubling
                // baseline plans it.
                Method::Copy if ngpt => maps::isometric(from, to, false),
                Method::Copy => {
                    // HyperCloning: h′ = [h; …; h] with n whole copies. What
                    // writes the stream (embedding rows, Wo, Wdown) is copied,
                    // what reads it sums n copies back up, so it is divided by
                    // n; norms see the same mean and variance, so their gains
                    // (and eps) stay as they are.
                    if to % from != 0 {
                        return Err(
                            "HyperCloning copies the residual stream a whole number of times"
                                .into(),
                        );
                    }
                    let n = (to / from) as f64;
                    let reads = maps::copy(from, to, true);
                    for role in [
                        ParamRole::Wq,
                        ParamRole::Wk,
                        ParamRole::Wv,
                        ParamRole::WUp,
                        ParamRole::WGate,
                        ParamRole::LmHead,
                    ] {
                        s.role_map.push((role, Dim::Resid, reads.clone()));
                    }
                    if !old.head_untied() {
                        // The tied embedding also reads: the final norm's
                        // output, divided by n, makes up for its copies.
                        s.final_norm_scale = 1.0 / n;
                    }
                    maps::copy(from, to, false)
                }
                Method::Zero => {
                    // New coordinates of every matrix start at zero: E = [I; 0].
                    s.zero_new.extend([
                        ParamRole::TokenEmbedding,
                        ParamRole::LmHead,
                        ParamRole::Wq,
                        ParamRole::Wk,
                        ParamRole::Wv,
                        ParamRole::Wo,
                        ParamRole::WUp,
                        ParamRole::WGate,
                        ParamRole::WDown,
                    ]);
                    maps::extend(from, to)
                }
                _ => return Err("d_model grows by isometric, copy or zero".into()),
            };
            // rms(Eh) = rms(h)·√(d/d′): gains absorb it; nGPT's stored scales
            // with a 1/√d in their scale, and s_v (multiplied by √d), keep
            // their effective value.
            let r = (from as f64 / to as f64).sqrt();
            if !hypercloning {
                for role in [ParamRole::NormGain, ParamRole::NormBias] {
                    s.role_scale.push((role, r));
                }
            }
            if ngpt {
                for role in [
                    ParamRole::AlphaAttn,
                    ParamRole::AlphaMlp,
                    ParamRole::SQk,
                    ParamRole::SZ,
                    ParamRole::SV,
                ] {
                    s.role_scale.push((role, r));
                }
            }
        }
        Axis::Ffn => match step.method {
            Method::Copy => {
                s.ffn = maps::copy(from, to, false);
                // The side that sums the copies back up divides by their count.
                let split = maps::copy(from, to, true);
                let role = if ngpt {
                    ParamRole::SU
                } else {
                    ParamRole::WDown
                };
                s.role_map.push((role, Dim::Ffn, split));
            }
            Method::Zero => {
                s.ffn = maps::extend(from, to);
                s.zero_new.push(if ngpt {
                    ParamRole::SU
                } else {
                    ParamRole::WDown
                });
            }
            // Fresh weights on both sides: the stage's gate, 0 at the
            // growth, keeps the new units silent until it ramps up.
            Method::Ramp { .. } => s.ffn = maps::extend(from, to),
            _ => return Err("ffn grows by copy, zero or ramp".into()),
        },
        Axis::Heads => {
            let hd = old.head_dim;
            let mha = old.kv_heads == old.heads;
            let factor = (to % from == 0).then_some(to / from);
            // Ramped heads sit where zero-initialised ones do (the plan's
            // gate marks the same positions), with fresh weights throughout.
            let heads = match (step.method, mha) {
                (Method::Zero | Method::Ramp { .. }, true) => maps::extend(from, to),
                (Method::Zero | Method::Ramp { .. }, false) => {
                    maps::grouped_heads(from, to, old.kv_heads, None)
                }
                (Method::Copy, _) => {
                    let n = factor.ok_or("copying heads needs a whole factor")?;
                    if mha {
                        maps::duplicate(from, n, 1.0 / n as f64)
                    } else {
                        maps::grouped_heads(from, to, old.kv_heads, Some(n))
                    }
                }
                _ => return Err("heads grow by zero, copy or ramp".into()),
            };
            // Queries (and s_qk) are copied as they are; the output projection
            // of copies is divided by their count (gpt) or left to nGPT's Norm.
            let reads = AxisMap {
                src: heads.src.clone(),
                coef: vec![1.0; heads.len()],
            };
            s.q = reads.blocks(hd);
            let writes = if ngpt { reads.clone() } else { heads.clone() };
            s.role_map.push((ParamRole::Wo, Dim::Q, writes.blocks(hd)));
            if mha {
                s.kv = reads.blocks(hd);
            }
            if step.method == Method::Zero {
                if ngpt {
                    return Err(
                        "nGPT keeps Wo's columns at unit norm, so new heads cannot start at zero"
                            .into(),
                    );
                }
                s.zero_new.push(ParamRole::Wo);
            }
        }
        Axis::KvHeads => {
            let n = (to % from == 0)
                .then_some(to / from)
                .ok_or("kv_heads grow by a whole factor")?;
            s.kv = maps::duplicate(from, n, 1.0).blocks(old.head_dim);
        }
        Axis::Context => {}
        Axis::Layers => unreachable!("layers are grown by grow_layers"),
    }
    debug_assert_eq!(s.resid.len(), new.d_model);
    Ok(s)
}

fn spec_index(specs: &[ParamSpec], name: &str) -> Option<usize> {
    specs.iter().position(|p| p.name == name)
}

fn remap_all(
    state: &ModelState,
    new: &ModelConfig,
    step: &GrowthStep,
    maps: &StepMaps,
    fresh: &[Vec<f64>],
    seed: u64,
) -> ModelState {
    let old_specs = state.config.params();
    let mut out = ModelState {
        config: new.clone(),
        params: Vec::new(),
        m: Vec::new(),
        v: Vec::new(),
    };
    for (i, spec) in new.params().iter().enumerate() {
        let Some(o) = spec_index(&old_specs, &spec.name) else {
            // Cannot happen: only layer growth adds parameters.
            out.params.push(fresh[i].clone());
            out.m.push(vec![0.0; fresh[i].len()]);
            out.v.push(vec![0.0; fresh[i].len()]);
            continue;
        };
        let s = maps.scale(spec);
        let mut axis_maps: Vec<AxisMap> = dims(spec.role)
            .iter()
            .map(|d| maps.map(spec.role, *d))
            .collect();
        if s != 1.0 {
            axis_maps[0] = axis_maps[0].scaled(s);
        }
        let zero_fresh = maps.zero_new.contains(&spec.role);
        let fresh_p: Vec<f64> = if zero_fresh {
            vec![0.0; fresh[i].len()]
        } else {
            fresh[i].clone()
        };
        let old_shape = &old_specs[o].shape;
        let mut p = maps::remap(&state.params[o], old_shape, &axis_maps, &fresh_p, false);
        if step.noise > 0.0 && state.config.arch == Arch::Gpt && step.axis == Axis::DModel {
            add_projected_noise(&mut p, spec, &maps.resid, step.noise, seed ^ i as u64);
        }
        let zeros = vec![0.0; p.len()];
        let (mut m, mut v) = match step.optimizer {
            OptimizerPolicy::Reset => (zeros.clone(), zeros.clone()),
            _ => (
                maps::remap(&state.m[o], old_shape, &axis_maps, &zeros, false),
                maps::remap(&state.v[o], old_shape, &axis_maps, &zeros, true),
            ),
        };
        match step.optimizer {
            OptimizerPolicy::ZeroNew => zero_grown_entries(&mut m, &mut v, &spec.shape, old_shape),
            OptimizerPolicy::Asymmetric => zero_added_entries(&mut m, &mut v, &axis_maps),
            OptimizerPolicy::Map | OptimizerPolicy::Reset => {}
        }
        out.params.push(p);
        out.m.push(m);
        out.v.push(v);
    }
    out
}

/// `zero_new`: moments of every entry beyond the old extent of an axis restart.
fn zero_grown_entries(m: &mut [f64], v: &mut [f64], shape: &[usize], old_shape: &[usize]) {
    let rank = shape.len();
    for flat in 0..m.len() {
        let mut rem = flat;
        let mut grown = false;
        for a in (0..rank).rev() {
            grown |= rem % shape[a] >= old_shape[a];
            rem /= shape[a];
        }
        if grown {
            m[flat] = 0.0;
            v[flat] = 0.0;
        }
    }
}

/// `asymmetric`: moments of every entry the growth added restart — an entry
/// is added when, on some axis, it is a new unit or a copy of an old index
/// whose first image came earlier. Each original keeps its mapped moments.
fn zero_added_entries(m: &mut [f64], v: &mut [f64], maps: &[AxisMap]) {
    let added: Vec<Vec<bool>> = maps.iter().map(AxisMap::added).collect();
    let shape: Vec<usize> = maps.iter().map(AxisMap::len).collect();
    for flat in 0..m.len() {
        let mut rem = flat;
        let mut grown = false;
        for a in (0..shape.len()).rev() {
            grown |= added[a][rem % shape[a]];
            rem /= shape[a];
        }
        if grown {
            m[flat] = 0.0;
            v[flat] = 0.0;
        }
    }
}

/// Symmetry breaking that stays exact (growth.md): noise on the reading side,
/// projected off the range of E, W′ += N(I − P) with P the projection onto
/// it, since (I − P)E = 0. Each old index's copies span one direction of
/// that range: P = EEᵀ for the isometric map, EEᵀ/n for HyperCloning's
/// coefficient-1 copies.
fn add_projected_noise(w: &mut [f64], spec: &ParamSpec, e: &AxisMap, std: f64, seed: u64) {
    let reads = matches!(
        spec.role,
        ParamRole::Wq
            | ParamRole::Wk
            | ParamRole::Wv
            | ParamRole::WUp
            | ParamRole::WGate
            | ParamRole::LmHead
    );
    if !reads {
        return;
    }
    let cols = e.len();
    let mut rng = gsc_compiler::init::rng::SplitMix64::new(seed);
    let groups = {
        let old = e.src.iter().flatten().max().map_or(0, |m| m + 1);
        let mut g: Vec<Vec<usize>> = vec![Vec::new(); old];
        for (j, s) in e.src.iter().enumerate() {
            if let Some(s) = s {
                g[*s].push(j);
            }
        }
        g
    };
    for row in w.chunks_mut(cols) {
        let n: Vec<f64> = (0..cols).map(|_| std * rng.normal()).collect();
        for group in &groups {
            // (N P)[k] = c_k Σ_{j in k's group} N[j] c_j / Σ_{j in k's group} c_j²
            let dot: f64 = group.iter().map(|&j| n[j] * e.coef[j]).sum();
            let norm: f64 = group.iter().map(|&j| e.coef[j] * e.coef[j]).sum();
            for &k in group {
                row[k] += n[k] - dot * e.coef[k] / norm;
            }
        }
    }
}

/// New blocks at `step.positions` of the grown stack, with zero moments; the
/// others keep their parameters and moments (zeroed under `reset`), renumbered.
fn grow_layers(
    state: &ModelState,
    new: &ModelConfig,
    step: &GrowthStep,
    fresh: &[Vec<f64>],
) -> Result<ModelState, GrowError> {
    let old_specs = state.config.params();
    let new_specs = new.params();
    // Old index of every block of the grown stack (None for the new ones).
    let mut source = Vec::with_capacity(new.layers);
    let mut next_old = 0;
    for l in 0..new.layers {
        if step.positions.contains(&l) {
            source.push(None);
        } else {
            source.push(Some(next_old));
            next_old += 1;
        }
    }
    if next_old != state.config.layers {
        return Err(GrowError::Mismatch(format!(
            "positions {:?} do not fit {} → {} layers",
            step.positions, step.from, step.to
        )));
    }
    let rename = |spec: &ParamSpec, to_layer: usize| {
        spec.name.replacen(
            &format!("layers.{}.", spec.layer.unwrap_or(0)),
            &format!("layers.{to_layer}."),
            1,
        )
    };
    let mut out = ModelState {
        config: new.clone(),
        params: Vec::new(),
        m: Vec::new(),
        v: Vec::new(),
    };
    for (i, spec) in new_specs.iter().enumerate() {
        let old_name = match (spec.layer, spec.layer.map(|l| source[l])) {
            (Some(_), Some(Some(o))) => Some(rename(spec, o)),
            (Some(l), Some(None)) => match step.method {
                // G_stack: the new block copies the one below it (in the old stack).
                Method::Stack => Some(rename(
                    spec,
                    source[..l]
                        .iter()
                        .rev()
                        .flatten()
                        .next()
                        .copied()
                        .unwrap_or(0),
                )),
                _ => None,
            },
            _ => Some(spec.name.clone()),
        };
        let zeros = vec![0.0; spec.numel()];
        match old_name.and_then(|n| spec_index(&old_specs, &n)) {
            Some(o) if spec.layer.is_some_and(|l| source[l].is_none()) => {
                // A stacked copy: the weights, with fresh moments.
                out.params.push(state.params[o].clone());
                out.m.push(zeros.clone());
                out.v.push(zeros);
            }
            Some(o) if step.optimizer == OptimizerPolicy::Reset => {
                out.params.push(state.params[o].clone());
                out.m.push(zeros.clone());
                out.v.push(zeros);
            }
            Some(o) => {
                out.params.push(state.params[o].clone());
                out.m.push(state.m[o].clone());
                out.v.push(state.v[o].clone());
            }
            None => {
                let mut p = fresh[i].clone();
                // The identity block: its writes to the residual stream start at zero.
                let silent = match new.arch {
                    Arch::Gpt => matches!(spec.role, ParamRole::Wo | ParamRole::WDown),
                    Arch::Ngpt => matches!(spec.role, ParamRole::AlphaAttn | ParamRole::AlphaMlp),
                };
                if silent {
                    p.iter_mut().for_each(|x| *x = 0.0);
                }
                out.params.push(p);
                out.m.push(zeros.clone());
                out.v.push(zeros);
            }
        }
    }
    Ok(out)
}
