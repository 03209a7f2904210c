//! The plan of a whole `.gs` file: the data, and for every run (the growth
//! schedules and the comparison baselines) its stages with concrete shapes
//! and the growth steps between them.

use super::{ModelConfig, TrainConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub file: String,
    pub data: DataPlan,
    pub runs: Vec<RunPlan>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataPlan {
    pub name: String,
    pub files: Vec<DataFile>,
    pub tokenizer: Tokenizer,
    /// The tokenizer's vocabulary size.
    pub vocab: usize,
    /// Fraction of the text, taken from its end, held out for validation.
    pub val_fraction: f64,
    /// The tokens of each split: known before the text is tokenised only
    /// for the byte tokenizer (one per byte); None for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_tokens: Option<u64>,
}

impl DataPlan {
    /// The bytes of the training and validation splits: validation starts
    /// at byte ⌊(1 − val)·len⌋ (tiny Shakespeare: 1,003,854). Tokenizers
    /// other than bytes move the cut to the next UTF-8 character boundary.
    pub fn split_bytes(&self) -> (u64, u64) {
        let bytes: u64 = self.files.iter().map(|f| f.bytes).sum();
        let train = (bytes as f64 * (1.0 - self.val_fraction)).floor() as u64;
        (train, bytes - train)
    }
}

/// How the text becomes tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// One token per byte (vocabulary 256).
    Bytes,
    /// A byte-level BPE of exactly `vocab` tokens, trained at run time on
    /// the training split.
    Bpe { vocab: usize },
    /// A Hugging Face `tokenizer.json`.
    File {
        /// As written in the `.gs` file.
        path: String,
        /// Resolved against the `.gs` file's folder; what the runtime opens.
        resolved: String,
        /// One more than its largest token id.
        vocab: usize,
    },
}

impl Tokenizer {
    /// As a plan shows it.
    pub fn describe(&self) -> String {
        match self {
            Tokenizer::Bytes => "bytes tokenizer".into(),
            Tokenizer::Bpe { .. } => "BPE tokenizer trained on the training split".into(),
            Tokenizer::File { path, .. } => format!("tokenizer {path}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// As written in the `.gs` file.
    pub path: String,
    /// Resolved against the `.gs` file's folder; what the runtime opens.
    pub resolved: String,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// A `grow` block of the file.
    Schedule,
    /// `compare … = scratch(…)`: the final shape trained from scratch.
    Scratch,
    /// `compare … = doubling(…)`: HyperCloning-style ×2 width growth.
    Doubling,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub name: String,
    pub kind: RunKind,
    pub stages: Vec<StagePlan>,
    pub totals: Totals,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub steps: u64,
    pub tokens: u64,
    pub flops: f64,
    /// False when the last stage trains until a target with no cap.
    pub bounded: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub name: String,
    /// Growth applied to the previous stage's model before this stage trains.
    pub growth: Vec<GrowthStep>,
    /// The `lr_scale` option of each step of `growth`, in its order (1 where
    /// a step has none); empty when no step has one. The stage's peak LR
    /// already includes these factors (and those of earlier stages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lr_scale: Vec<f64>,
    /// The gates of the units this stage's growth added by `ramp` (Masked
    /// Structural Growth): at most one per axis (`heads`, `ffn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Global step at which the stage starts.
    pub first_step: u64,
    /// Steps the stage trains; for `until` stages, the cap (None if uncapped).
    pub steps: Option<u64>,
    pub until: Option<Target>,
    pub param_count: usize,
    pub flops_per_token: f64,
}

impl StagePlan {
    pub fn tokens_per_step(&self) -> u64 {
        (self.train.batch * self.model.context) as u64
    }

    pub fn tokens(&self) -> Option<u64> {
        self.steps.map(|s| s * self.tokens_per_step())
    }

    pub fn flops(&self) -> Option<f64> {
        self.tokens().map(|t| t as f64 * self.flops_per_token)
    }

    /// The gate of `axis`, if the stage has one.
    pub fn gate(&self, axis: Axis) -> Option<&Gate> {
        self.gates.iter().find(|g| g.axis == axis)
    }
}

/// A gate over the units of one axis (`heads` or `ffn`, shared by every
/// layer) in the stage entered by a `ramp` growth: it multiplies each head's
/// attention output before Wo, or each FFN unit's activation before Wdown.
/// The old units' entries are 1, the new ones' the ramp's value
/// ([`Gate::ramp`]), so at the growth (value 0) the grown model computes
/// exactly the old function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub axis: Axis,
    /// The ramp's length: the new units are fully on from the stage's
    /// `steps`-th training step on.
    pub steps: u64,
    /// The axis' size in the stage (the gate's length).
    pub size: usize,
    /// The new units, in ascending order.
    pub new_units: Vec<usize>,
}

impl Gate {
    /// The new units' value at global training step `step` (0-based, the
    /// step about to run) of a stage starting at `first_step`:
    /// `min(1, (step − first_step + 1) / steps)` — `1/steps` on the stage's
    /// first step, 1 from its `steps`-th on. Before the stage (the growth
    /// check) it is 0. It depends on the step alone, so a resumed run
    /// recomputes it.
    pub fn ramp(&self, first_step: u64, step: u64) -> f64 {
        if step < first_step {
            return 0.0;
        }
        ((step - first_step + 1) as f64 / self.steps.max(1) as f64).min(1.0)
    }

    /// The gate's entries when the new units stand at `ramp`.
    pub fn values(&self, ramp: f64) -> Vec<f64> {
        let mut v = vec![1.0; self.size];
        for &u in &self.new_units {
            v[u] = ramp;
        }
        v
    }
}

/// Stop a stage early once the validation loss reaches `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub metric: String,
    pub value: f64,
    /// `<` rather than `<=`.
    pub strict: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    DModel,
    Heads,
    KvHeads,
    Ffn,
    Layers,
    Context,
}

impl Axis {
    pub const ALL: [(&'static str, Axis); 6] = [
        ("d_model", Axis::DModel),
        ("heads", Axis::Heads),
        ("kv_heads", Axis::KvHeads),
        ("ffn", Axis::Ffn),
        ("layers", Axis::Layers),
        ("context", Axis::Context),
    ];

    pub fn name(self) -> &'static str {
        Axis::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    pub fn size(self, m: &ModelConfig) -> usize {
        match self {
            Axis::DModel => m.d_model,
            Axis::Heads => m.heads,
            Axis::KvHeads => m.kv_heads,
            Axis::Ffn => m.ffn,
            Axis::Layers => m.layers,
            Axis::Context => m.context,
        }
    }

    pub fn set(self, m: &mut ModelConfig, size: usize) {
        match self {
            Axis::DModel => m.d_model = size,
            Axis::Heads => m.heads = size,
            Axis::KvHeads => m.kv_heads = size,
            Axis::Ffn => m.ffn = size,
            Axis::Layers => m.layers = size,
            Axis::Context => m.context = size,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Every copy of a coordinate gets the same coefficient 1/√n.
    Even,
    /// Copies get unequal coefficients (still Σc² = 1): breaks symmetry exactly.
    Uneven,
}

/// How new units are initialised (growth.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// Residual width by an isometric replication map E (EᵀE = I).
    Isometric { split: Split },
    /// Copies of existing units: for `d_model` HyperCloning's duplicate and
    /// divide (h′ = [h; …; h], the weights that read the stream divided by
    /// the factor), for FFN units Net2Net, for heads whole duplicates.
    Copy,
    /// New units whose output weights (or gates) start at zero.
    Zero,
    /// New blocks with Wo = Wdown = 0 (gpt) or α = 0 (ngpt).
    Identity,
    /// New blocks copied from their neighbours (G_stack); not function-preserving.
    Stack,
    /// New units behind a mask ramped 0 → 1 over `steps` (MSG).
    Ramp { steps: u64 },
    /// Context: RoPE has no parameters, nothing to initialise.
    Extend,
}

impl Method {
    pub fn describe(&self) -> String {
        match self {
            Method::Isometric { split: Split::Even } => "isometric(split = even)".into(),
            Method::Isometric {
                split: Split::Uneven,
            } => "isometric(split = uneven)".into(),
            Method::Copy => "copy".into(),
            Method::Zero => "zero".into(),
            Method::Identity => "identity".into(),
            Method::Stack => "stack".into(),
            Method::Ramp { steps } => format!("ramp({steps} steps)"),
            Method::Extend => "extend".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerPolicy {
    /// Adam moments follow the parameters through the same map.
    Map,
    /// Moments follow the map, then every entry past the old size of a
    /// grown axis restarts at zero.
    ZeroNew,
    /// Moments follow the map, then every entry the growth added restarts at
    /// zero: copies (every image of an old index but its first) and new units
    /// alike; the original coordinates keep their mapped moments.
    Asymmetric,
    /// All moments restart at zero.
    Reset,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthStep {
    pub axis: Axis,
    pub from: usize,
    pub to: usize,
    pub method: Method,
    /// For `layers`: indices in the grown stack where the new blocks sit.
    pub positions: Vec<usize>,
    /// Std of symmetry-breaking noise (projected off the map's range where exact).
    pub noise: f64,
    pub optimizer: OptimizerPolicy,
    pub rewarm_steps: u64,
    /// Whether the grown model computes exactly the same function.
    pub exact: bool,
    /// Every parameter whose shape changes, or that is new.
    pub changes: Vec<ParamChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamChange {
    /// Parameter name in the grown model; per-layer names use `*` for
    /// "every block" and list the blocks in `layers`.
    pub param: String,
    pub from: Option<Vec<usize>>,
    pub to: Vec<usize>,
}
