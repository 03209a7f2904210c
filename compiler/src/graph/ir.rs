//! The model graph IR of one stage: SSA tensors with static shapes and the ops
//! that produce them. Every shape is concrete; growth makes a new graph.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TensorId(pub usize);

/// `F32` is the stage's training float; the reference interpreter may run it
/// in f64 (gradient checks), every other backend in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    I32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// The node that produces it.
    pub producer: usize,
    /// A name for people and tests, e.g. `layers.0.h_attn` for a residual state.
    pub label: Option<String>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What the runtime feeds a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Input {
    /// Parameter `i` of `ModelConfig::params()`.
    Param(usize),
    AdamM(usize),
    AdamV(usize),
    /// Token ids, `[batch · context]`.
    Tokens,
    /// Next-token ids, `[batch · context]`.
    Targets,
    /// The learning rate of this step (peak · schedule multiplier), a scalar.
    Lr,
    /// The optimizer step count, 1-based, for Adam's bias correction.
    Step,
    /// Per-head gate `[heads]` of a stage whose heads grew by a ramp (Masked
    /// Structural Growth): multiplies each head's attention output before
    /// Wo. Written by the runtime every step; not a parameter.
    HeadGate,
    /// Per-unit gate `[ffn]` of a stage whose FFN grew by a ramp: multiplies
    /// the FFN activation before Wdown.
    FfnGate,
    /// The gradient of parameter `i`, given rather than computed: the
    /// optimizer step of a data-parallel run applies the gradients summed
    /// over every rank.
    Grad(usize),
}

/// What a program hands back; `Param`, `AdamM` and `AdamV` replace the
/// corresponding input (the optimizer's in-place update).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Output {
    Loss,
    Logits,
    /// `‖(grad₀, grad₁, …)‖₂`, before clipping: what the runtime logs.
    GradNorm,
    Grad(usize),
    Param(usize),
    AdamM(usize),
    AdamV(usize),
}

impl Output {
    /// The input whose storage this output overwrites.
    pub fn updates(self) -> Option<Input> {
        match self {
            Output::Param(i) => Some(Input::Param(i)),
            Output::AdamM(i) => Some(Input::AdamM(i)),
            Output::AdamV(i) => Some(Input::AdamV(i)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, the tanh approximation.
    Gelu,
    /// `x·sigmoid(x)`.
    Silu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// `(x, dy) → dy · gelu'(x)`.
    GeluBwd,
    /// `(x, dy) → dy · silu'(x)`.
    SiluBwd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// Causal self-attention over `batch` sequences of `seq` tokens; q is
/// `[batch·seq, heads, head_dim]`, k and v `[batch·seq, kv_heads, head_dim]`.
/// Query head `h` reads kv head `h / (heads / kv_heads)` (GQA).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attn {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` before the softmax.
    pub scale: f64,
}

/// Rotary embedding on `[batch·seq, heads, head_dim]`, rotate-half pairing
/// `(j, j + head_dim/2)`, angle `pos · base^(−2j/head_dim)`, `pos` = index in
/// the sequence. `inverse` rotates by the negative angle: the transpose, which
/// is the backward.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    pub seq: usize,
    pub base: f64,
    pub inverse: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Input(Input),
    /// A scalar constant.
    Const(f64),
    /// `(table [V, d], ids [N]) → [N, d]`.
    Embedding,
    /// `(ids [N], dy [N, d]) → [vocab, d]`, scatter-add of rows.
    EmbeddingBwd {
        vocab: usize,
    },
    /// `op(a) · op(b)` on matrices, `op` transposing where its flag is set.
    MatMul {
        ta: bool,
        tb: bool,
    },
    /// `(q, k, v) → (out, lse)`: `lse` `[batch, heads, seq]` holds each
    /// query row's log-sum-exp of its scaled scores, for the backward.
    Attention(Attn),
    /// `(q, k, v, out, lse, dy) → (dq, dk, dv)`, `out` and `lse` the forward's.
    AttentionBwd(Attn),
    Rope(Rope),
    Unary(UnaryOp),
    /// NumPy broadcasting (shapes aligned at the trailing end).
    Binary(BinaryOp),
    /// Broadcast to `shape`.
    Expand {
        shape: Vec<usize>,
    },
    /// Reduce to `shape`, which must broadcast to the input's shape: the
    /// adjoint of `Expand` (`[N, d] → [N, 1]` per row, `→ [d]` over rows, `→ []`).
    Reduce {
        op: ReduceOp,
        shape: Vec<usize>,
    },
    /// Same elements, new shape (a view: no kernel, no copy).
    Reshape {
        shape: Vec<usize>,
    },
    /// `x / √(mean(x²) + eps)` over the last axis (no gain: that is a `mul`).
    RmsNorm {
        eps: f64,
    },
    /// `(x, dy) → dx`.
    RmsNormBwd {
        eps: f64,
    },
    /// `(x − mean) / √(var + eps)` over the last axis.
    LayerNorm {
        eps: f64,
    },
    LayerNormBwd {
        eps: f64,
    },
    /// `x / ‖x‖₂` along `axis` (nGPT's `Norm`, no epsilon, as in NVIDIA/ngpt).
    L2Norm {
        axis: usize,
    },
    L2NormBwd {
        axis: usize,
    },
    /// Over the last axis.
    Softmax,
    /// `(y, dy) → dx` from the softmax's output `y`.
    SoftmaxBwd,
    /// `(logits [N, V], targets [N]) → []`: mean over tokens of `−log softmax`, natural log.
    CrossEntropy,
    /// `(logits, targets, dloss []) → dlogits`.
    CrossEntropyBwd,
}

impl Op {
    /// The mnemonic used by the printers.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input(Input::Param(_)) => "param",
            Op::Input(Input::AdamM(_)) => "adam_m",
            Op::Input(Input::AdamV(_)) => "adam_v",
            Op::Input(Input::Tokens) => "tokens",
            Op::Input(Input::Targets) => "targets",
            Op::Input(Input::Lr) => "lr",
            Op::Input(Input::Step) => "step",
            Op::Input(Input::HeadGate) => "head_gate",
            Op::Input(Input::FfnGate) => "ffn_gate",
            Op::Input(Input::Grad(_)) => "grad",
            Op::Const(_) => "const",
            Op::Embedding => "embedding",
            Op::EmbeddingBwd { .. } => "embedding_bwd",
            Op::MatMul { .. } => "matmul",
            Op::Attention(_) => "attention",
            Op::AttentionBwd(_) => "attention_bwd",
            Op::Rope(r) if r.inverse => "rope_bwd",
            Op::Rope(_) => "rope",
            Op::Unary(u) => match u {
                UnaryOp::Neg => "neg",
                UnaryOp::Exp => "exp",
                UnaryOp::Log => "log",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Tanh => "tanh",
                UnaryOp::Gelu => "gelu",
                UnaryOp::Silu => "silu",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
                BinaryOp::Max => "max",
                BinaryOp::Min => "min",
                BinaryOp::GeluBwd => "gelu_bwd",
                BinaryOp::SiluBwd => "silu_bwd",
            },
            Op::Expand { .. } => "expand",
            Op::Reduce {
                op: ReduceOp::Sum, ..
            } => "reduce_sum",
            Op::Reduce {
                op: ReduceOp::Max, ..
            } => "reduce_max",
            Op::Reshape { .. } => "reshape",
            Op::RmsNorm { .. } => "rmsnorm",
            Op::RmsNormBwd { .. } => "rmsnorm_bwd",
            Op::LayerNorm { .. } => "layernorm",
            Op::LayerNormBwd { .. } => "layernorm_bwd",
            Op::L2Norm { .. } => "l2norm",
            Op::L2NormBwd { .. } => "l2norm_bwd",
            Op::Softmax => "softmax",
            Op::SoftmaxBwd => "softmax_bwd",
            Op::CrossEntropy => "cross_entropy",
            Op::CrossEntropyBwd => "cross_entropy_bwd",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

/// A parameter input as the graph sees it (name and shape of a `ParamSpec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("invalid model: {0}")]
    Model(String),
}

fn shape_err(op: &Op, detail: impl Into<String>) -> GraphError {
    GraphError::Shape {
        op: op.mnemonic(),
        detail: detail.into(),
    }
}

/// `a` and `b` broadcast NumPy-style (trailing alignment); the result shape.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_end(a, rank - 1 - i);
        let db = dim_from_end(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Dimension `k` counted from the end (0 = last), 1 past the front.
fn dim_from_end(s: &[usize], k: usize) -> usize {
    if k < s.len() {
        s[s.len() - 1 - k]
    } else {
        1
    }
}

/// Whether `small` broadcasts to `big`.
pub fn broadcasts_to(small: &[usize], big: &[usize]) -> bool {
    small.len() <= big.len() && broadcast_shapes(small, big).as_deref() == Some(big)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub tensors: Vec<Tensor>,
    pub nodes: Vec<Node>,
    pub params: Vec<ParamInfo>,
    pub outputs: Vec<(Output, TensorId)>,
}

impl Graph {
    pub fn tensor(&self, t: TensorId) -> &Tensor {
        &self.tensors[t.0]
    }

    pub fn shape(&self, t: TensorId) -> &[usize] {
        &self.tensors[t.0].shape
    }

    pub fn producer(&self, t: TensorId) -> &Node {
        &self.nodes[self.tensors[t.0].producer]
    }

    pub fn output(&self, o: Output) -> Option<TensorId> {
        self.outputs.iter().find(|(k, _)| *k == o).map(|(_, t)| *t)
    }

    /// The tensor fed by input `i`, if the graph has it.
    pub fn input(&self, i: Input) -> Option<TensorId> {
        self.nodes
            .iter()
            .find(|n| n.op == Op::Input(i))
            .map(|n| n.outputs[0])
    }

    pub fn set_label(&mut self, t: TensorId, label: impl Into<String>) {
        self.tensors[t.0].label = Some(label.into());
    }

    /// Declares an input of the program.
    pub fn add_input(&mut self, input: Input, shape: Vec<usize>, dtype: DType) -> TensorId {
        self.push(Op::Input(input), vec![], vec![(shape, dtype)])[0]
    }

    /// A scalar constant; equal constants share one node.
    pub fn constant(&mut self, value: f64) -> TensorId {
        let existing = self
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Const(v) if v.to_bits() == value.to_bits()));
        if let Some(n) = existing {
            return n.outputs[0];
        }
        self.push(Op::Const(value), vec![], vec![(vec![], DType::F32)])[0]
    }

    /// Adds a node after checking its inputs; returns its outputs.
    pub fn add(&mut self, op: Op, inputs: Vec<TensorId>) -> Result<Vec<TensorId>, GraphError> {
        let types = self.infer(&op, &inputs)?;
        Ok(self.push(op, inputs, types))
    }

    /// `add` for the ops with one result.
    pub fn add1(&mut self, op: Op, inputs: Vec<TensorId>) -> Result<TensorId, GraphError> {
        let outs = self.add(op, inputs)?;
        Ok(outs[0])
    }

    fn push(
        &mut self,
        op: Op,
        inputs: Vec<TensorId>,
        types: Vec<(Vec<usize>, DType)>,
    ) -> Vec<TensorId> {
        let producer = self.nodes.len();
        let outputs: Vec<TensorId> = types
            .into_iter()
            .map(|(shape, dtype)| {
                self.tensors.push(Tensor {
                    shape,
                    dtype,
                    producer,
                    label: None,
                });
                TensorId(self.tensors.len() - 1)
            })
            .collect();
        self.nodes.push(Node {
            op,
            inputs,
            outputs: outputs.clone(),
        });
        outputs
    }

    /// Drops the nodes whose results reach no output (inputs always stay:
    /// they are the program's interface) and renumbers the tensors.
    pub fn prune(&mut self) {
        let mut live = vec![false; self.tensors.len()];
        for (_, t) in &self.outputs {
            live[t.0] = true;
        }
        let mut keep = vec![false; self.nodes.len()];
        for (ni, node) in self.nodes.iter().enumerate().rev() {
            if matches!(node.op, Op::Input(_)) || node.outputs.iter().any(|t| live[t.0]) {
                keep[ni] = true;
                node.inputs.iter().for_each(|t| live[t.0] = true);
            }
        }
        let mut new_id = vec![TensorId(0); self.tensors.len()];
        let mut tensors = vec![];
        let mut nodes = vec![];
        for (node, _) in self.nodes.iter().zip(&keep).filter(|(_, k)| **k) {
            let producer = nodes.len();
            let outputs = node
                .outputs
                .iter()
                .map(|t| {
                    tensors.push(Tensor {
                        producer,
                        ..self.tensors[t.0].clone()
                    });
                    new_id[t.0] = TensorId(tensors.len() - 1);
                    new_id[t.0]
                })
                .collect();
            // Producers come first, so every input is renumbered already.
            let inputs = node.inputs.iter().map(|t| new_id[t.0]).collect();
            nodes.push(Node {
                op: node.op.clone(),
                inputs,
                outputs,
            });
        }
        for (_, t) in &mut self.outputs {
            *t = new_id[t.0];
        }
        self.tensors = tensors;
        self.nodes = nodes;
    }

    /// Shape and dtype inference: the forward half of every op's rule.
    fn infer(&self, op: &Op, ins: &[TensorId]) -> Result<Vec<(Vec<usize>, DType)>, GraphError> {
        let arity = match op {
            Op::Input(_) | Op::Const(_) => 0,
            Op::Unary(_)
            | Op::Expand { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Rope(_)
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::L2Norm { .. }
            | Op::Softmax => 1,
            Op::Embedding
            | Op::EmbeddingBwd { .. }
            | Op::MatMul { .. }
            | Op::Binary(_)
            | Op::RmsNormBwd { .. }
            | Op::LayerNormBwd { .. }
            | Op::L2NormBwd { .. }
            | Op::SoftmaxBwd
            | Op::CrossEntropy => 2,
            Op::Attention(_) | Op::CrossEntropyBwd => 3,
            Op::AttentionBwd(_) => 6,
        };
        if ins.len() != arity {
            return Err(shape_err(
                op,
                format!("takes {arity} inputs, got {}", ins.len()),
            ));
        }
        if let Some(bad) = ins.iter().find(|t| t.0 >= self.tensors.len()) {
            return Err(shape_err(op, format!("unknown tensor %{}", bad.0)));
        }
        let s = |i: usize| self.shape(ins[i]).to_vec();
        let is_f = |i: usize| self.tensor(ins[i]).dtype == DType::F32;
        let int_ids = |i: usize| self.tensor(ins[i]).dtype == DType::I32 && s(i).len() == 1;
        let float_inputs = |idx: &[usize]| idx.iter().all(|&i| is_f(i));
        let f = |shape: Vec<usize>| Ok(vec![(shape, DType::F32)]);
        match op {
            Op::Input(_) | Op::Const(_) => Err(shape_err(
                op,
                "inputs and constants are declared, not added",
            )),
            Op::Embedding => {
                let (t, ids) = (s(0), s(1));
                if t.len() != 2 || !is_f(0) || !int_ids(1) {
                    return Err(shape_err(op, "wants (table [V, d] f32, ids [N] i32)"));
                }
                f(vec![ids[0], t[1]])
            }
            Op::EmbeddingBwd { vocab } => {
                let (ids, dy) = (s(0), s(1));
                if !int_ids(0) || dy.len() != 2 || dy[0] != ids[0] || !is_f(1) {
                    return Err(shape_err(op, "wants (ids [N] i32, dy [N, d])"));
                }
                f(vec![*vocab, dy[1]])
            }
            Op::MatMul { ta, tb } => {
                let (a, b) = (s(0), s(1));
                if a.len() != 2 || b.len() != 2 || !float_inputs(&[0, 1]) {
                    return Err(shape_err(op, "wants two f32 matrices"));
                }
                let (m, ka) = if *ta { (a[1], a[0]) } else { (a[0], a[1]) };
                let (kb, n) = if *tb { (b[1], b[0]) } else { (b[0], b[1]) };
                if ka != kb {
                    return Err(shape_err(
                        op,
                        format!("inner dimensions {ka} and {kb} differ"),
                    ));
                }
                f(vec![m, n])
            }
            Op::Attention(a) | Op::AttentionBwd(a) => {
                let n = a.batch * a.seq;
                let q = vec![n, a.heads, a.head_dim];
                let kv = vec![n, a.kv_heads, a.head_dim];
                let lse = vec![a.batch, a.heads, a.seq];
                let grouped = a.kv_heads > 0 && a.heads % a.kv_heads == 0;
                let fwd = matches!(op, Op::Attention(_));
                // The backward's forward output, row log-sum-exps and dy.
                let saved_ok =
                    fwd || (s(3) == q && s(4) == lse && s(5) == q && float_inputs(&[3, 4, 5]));
                if s(0) != q
                    || s(1) != kv
                    || s(2) != kv
                    || !saved_ok
                    || !grouped
                    || !float_inputs(&[0, 1, 2])
                {
                    return Err(shape_err(
                        op,
                        format!(
                            "wants q {q:?}, k and v {kv:?}, heads a multiple of kv_heads \
                             (and for the backward out {q:?}, lse {lse:?}, dy {q:?})"
                        ),
                    ));
                }
                if fwd {
                    Ok(vec![(q, DType::F32), (lse, DType::F32)])
                } else {
                    Ok(vec![
                        (q, DType::F32),
                        (kv.clone(), DType::F32),
                        (kv, DType::F32),
                    ])
                }
            }
            Op::Rope(r) => {
                let x = s(0);
                if x.len() != 3 || r.seq == 0 || x[0] % r.seq != 0 || x[2] % 2 != 0 || !is_f(0) {
                    return Err(shape_err(op, "wants [batch·seq, heads, even head_dim]"));
                }
                f(x)
            }
            Op::Unary(_) | Op::Softmax | Op::RmsNorm { .. } | Op::LayerNorm { .. } => {
                if !is_f(0) || (s(0).is_empty() && !matches!(op, Op::Unary(_))) {
                    return Err(shape_err(op, "wants an f32 tensor with a last axis"));
                }
                f(s(0))
            }
            Op::L2Norm { axis } => {
                if !is_f(0) || *axis >= s(0).len() {
                    return Err(shape_err(op, "axis out of range"));
                }
                f(s(0))
            }
            Op::L2NormBwd { axis } => {
                if !float_inputs(&[0, 1]) || s(0) != s(1) || *axis >= s(0).len() {
                    return Err(shape_err(op, "wants (x, dy) of one shape"));
                }
                f(s(0))
            }
            Op::RmsNormBwd { .. } | Op::LayerNormBwd { .. } | Op::SoftmaxBwd => {
                if !float_inputs(&[0, 1]) || s(0) != s(1) || s(0).is_empty() {
                    return Err(shape_err(op, "wants two f32 tensors of one shape"));
                }
                f(s(0))
            }
            Op::Binary(_) => {
                if !float_inputs(&[0, 1]) {
                    return Err(shape_err(op, "wants f32 operands"));
                }
                match broadcast_shapes(&s(0), &s(1)) {
                    Some(out) => f(out),
                    None => Err(shape_err(
                        op,
                        format!("{:?} and {:?} do not broadcast", s(0), s(1)),
                    )),
                }
            }
            Op::Expand { shape } => {
                if !is_f(0) || !broadcasts_to(&s(0), shape) {
                    return Err(shape_err(
                        op,
                        format!("{:?} does not broadcast to {shape:?}", s(0)),
                    ));
                }
                f(shape.clone())
            }
            Op::Reduce { shape, .. } => {
                if !is_f(0) || !broadcasts_to(shape, &s(0)) {
                    return Err(shape_err(
                        op,
                        format!("{shape:?} does not broadcast to {:?}", s(0)),
                    ));
                }
                f(shape.clone())
            }
            Op::Reshape { shape } => {
                if shape.iter().product::<usize>() != s(0).iter().product::<usize>() {
                    return Err(shape_err(
                        op,
                        format!("{:?} has not as many elements as {shape:?}", s(0)),
                    ));
                }
                Ok(vec![(shape.clone(), self.tensor(ins[0]).dtype)])
            }
            Op::CrossEntropy => {
                let (l, t) = (s(0), s(1));
                if l.len() != 2 || !is_f(0) || !int_ids(1) || t[0] != l[0] {
                    return Err(shape_err(op, "wants (logits [N, V], targets [N] i32)"));
                }
                f(vec![])
            }
            Op::CrossEntropyBwd => {
                let (l, t, d) = (s(0), s(1), s(2));
                if l.len() != 2 || !is_f(0) || !int_ids(1) || t[0] != l[0] || !d.is_empty() {
                    return Err(shape_err(
                        op,
                        "wants (logits [N, V], targets [N] i32, dloss [])",
                    ));
                }
                f(l)
            }
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        })
    }
}

/// `16x64xf32`, or `f32` for a scalar: MLIR's tensor type spelling.
pub fn type_string(shape: &[usize], dtype: DType) -> String {
    let mut s = String::new();
    for d in shape {
        s.push_str(&format!("{d}x"));
    }
    s.push_str(&dtype.to_string());
    s
}
