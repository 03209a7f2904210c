//! Fusion: graph IR → kernel IR.
//!
//! Every tensor is either *stored* (it gets a buffer) or *inlined* (its
//! expression is substituted where it is loaded). Stored are: program inputs
//! and outputs, results and operands of library calls (matmul, attention,
//! embedding scatter) and of RoPE, and tensors used more than once (except a
//! cheap elementwise op on stored operands with a scalar, which is recomputed).
//! Each stored tensor computed by an elementwise or reduction op is a *root*;
//! roots of one shape that read a common buffer (or each other) share one loop
//! kernel, e.g. AdamW's new m, v and parameter. Reductions an inlined op needs
//! (a row's mean square, max, sum of exponentials) become scalars hoisted to
//! the outermost loop they depend on, so RMSNorm is one kernel with one row
//! reduction. Where inlining would recompute a reduction inside another
//! reduction, the tensor is stored instead and lowering starts over.

use crate::graph::{self, BinaryOp, Graph, Input, Op, Output, ReduceOp, TensorId, UnaryOp};
use gsc_kernel_ir::*;
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("lowering to kernels failed (internal): {0}")]
    Internal(String),
}

/// Why one attempt at lowering stopped.
enum Bail {
    /// Store this tensor and try again.
    Materialize(TensorId),
    /// Give this root a kernel of its own and try again.
    Split(TensorId),
    Internal(String),
}

type R<T> = Result<T, Bail>;

fn internal<T>(s: impl Into<String>) -> R<T> {
    Err(Bail::Internal(s.into()))
}

/// √(2/π), GELU's tanh approximation.
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_K: f64 = 0.044715;

/// `σ(a) = ½ + ½·tanh(a/2)` (`= 1 / (1 + e^{−a})`): backends evaluate tanh
/// as one rational function, cheaper than an exponential and a division.
fn sigmoid(a: Expr) -> Expr {
    half_plus_half_tanh(mul(c(0.5), a))
}

/// `½ + ½·tanh(u)`.
fn half_plus_half_tanh(u: Expr) -> Expr {
    add(c(0.5), mul(c(0.5), un(UnaryFn::Tanh, u)))
}

/// Lowers a graph to kernels with a buffer plan.
pub fn lower(g: &Graph) -> Result<KernelProgram, LowerError> {
    let mut seen = HashSet::new();
    if let Some((o, _)) = g.outputs.iter().find(|(_, t)| !seen.insert(*t)) {
        return Err(LowerError::Internal(format!(
            "output {o:?} shares its tensor with another output"
        )));
    }
    let mut stored_extra = HashSet::new();
    let mut no_merge = HashSet::new();
    loop {
        match try_lower(g, &stored_extra, &no_merge) {
            Ok(p) => return Ok(p),
            Err(Bail::Materialize(t)) if stored_extra.insert(t) => {}
            Err(Bail::Split(t)) if no_merge.insert(t) => {}
            Err(Bail::Materialize(t) | Bail::Split(t)) => {
                return Err(LowerError::Internal(format!("no progress at %{}", t.0)))
            }
            Err(Bail::Internal(s)) => return Err(LowerError::Internal(s)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Const(f64),
    Inline,
    /// A view of another tensor's buffer (a reshape).
    Alias(TensorId),
    Stored,
}

fn is_library(op: &Op) -> bool {
    matches!(
        op,
        Op::MatMul { .. } | Op::Attention(_) | Op::AttentionBwd(_) | Op::EmbeddingBwd { .. }
    )
}

/// How every tensor is lowered, and how many times each is used.
fn kinds(g: &Graph, extra: &HashSet<TensorId>) -> (Vec<Kind>, Vec<usize>) {
    let n = g.tensors.len();
    let mut uses = vec![0usize; n];
    let mut hard = vec![false; n];
    for node in &g.nodes {
        for t in &node.inputs {
            uses[t.0] += 1;
        }
        let pinned = is_library(&node.op) || matches!(node.op, Op::Rope(_) | Op::Input(_));
        if pinned {
            node.outputs.iter().for_each(|t| hard[t.0] = true);
        }
        if is_library(&node.op) || matches!(node.op, Op::Rope(_) | Op::Reshape { .. }) {
            node.inputs.iter().for_each(|t| hard[t.0] = true);
        }
    }
    let outputs: HashSet<TensorId> = g.outputs.iter().map(|(_, t)| *t).collect();
    for t in &outputs {
        hard[t.0] = true;
    }
    // A reshape that is an output is a view too when its input exists only
    // for it: the input is then stored in the output's buffer.
    let view_ok = |t: TensorId, x: TensorId| {
        !outputs.contains(&t)
            || (uses[x.0] == 1
                && !outputs.contains(&x)
                && !matches!(g.producer(x).op, Op::Input(_)))
    };
    let mut kind = vec![Kind::Inline; n];
    let mut recomputed = vec![false; n];
    for node in &g.nodes {
        for &t in &node.outputs {
            kind[t.0] = match node.op {
                Op::Const(c) => Kind::Const(c),
                Op::Reshape { .. } if view_ok(t, node.inputs[0]) => Kind::Alias(node.inputs[0]),
                _ if hard[t.0] || extra.contains(&t) => Kind::Stored,
                // A multiply-used elementwise op whose operands are stored (or
                // themselves recomputed this way) and that reads at most one
                // full-size buffer (a gradient times the clip factor, u · s_u)
                // costs no more bandwidth to recompute than to reload, and
                // saves its memory.
                Op::Unary(_) | Op::Binary(_) | Op::Expand { .. }
                    if uses[t.0] > 1
                        && node.inputs.iter().all(|i| {
                            recomputed[i.0]
                                || matches!(
                                    kind[i.0],
                                    Kind::Const(_) | Kind::Stored | Kind::Alias(_)
                                )
                        })
                        && full_loads(g, &kind, &recomputed, t) <= 1 =>
                {
                    recomputed[t.0] = true;
                    Kind::Inline
                }
                _ if uses[t.0] > 1 => Kind::Stored,
                _ => Kind::Inline,
            };
        }
    }
    (kind, uses)
}

/// How many buffers of `t`'s own size its recomputation reads.
fn full_loads(g: &Graph, kind: &[Kind], recomputed: &[bool], t: TensorId) -> usize {
    let numel = g.tensor(t).numel();
    g.producer(t)
        .inputs
        .iter()
        .map(|&i| match kind[i.0] {
            Kind::Inline if recomputed[i.0] => full_loads(g, kind, recomputed, i),
            Kind::Stored | Kind::Alias(_) if g.tensor(i).numel() == numel => 1,
            _ => 0,
        })
        .sum()
}

/// The root whose value is a state update (an optimizer output).
fn is_state(g: &Graph, t: TensorId) -> bool {
    g.outputs
        .iter()
        .any(|(o, x)| *x == t && o.updates().is_some())
}

/// Loop order of a root: dims in order, except that a normalisation along a
/// non-last axis (nGPT's unit columns) runs that axis innermost, so that each
/// column's norm is computed once and read before it is overwritten.
fn required_order(g: &Graph, t: TensorId) -> Option<Vec<usize>> {
    let rank = g.shape(t).len();
    match g.producer(t).op {
        Op::L2Norm { axis } | Op::L2NormBwd { axis } if axis + 1 < rank => {
            let mut order: Vec<usize> = (0..rank).filter(|&d| d != axis).collect();
            order.push(axis);
            Some(order)
        }
        _ => None,
    }
}

struct Group {
    roots: Vec<TensorId>,
    shape: Vec<usize>,
    state: bool,
    order: Option<Vec<usize>>,
    reads: HashSet<TensorId>,
}

enum Pending {
    Ready(Kernel),
    Rope(TensorId),
    Loop(usize),
}

fn try_lower(
    g: &Graph,
    extra: &HashSet<TensorId>,
    no_merge: &HashSet<TensorId>,
) -> R<KernelProgram> {
    let (kind, uses) = kinds(g, extra);
    let (mut buffers, buf_of) = assign_buffers(g, &kind)?;
    let resolve = |mut t: TensorId| {
        while let Kind::Alias(s) = kind[t.0] {
            t = s;
        }
        t
    };
    let mut pending: Vec<Pending> = vec![];
    let mut groups: Vec<Group> = vec![];
    let mut group_kernel: Vec<usize> = vec![];
    let mut made_in: HashMap<TensorId, usize> = HashMap::new();
    for node in &g.nodes {
        // Library calls read and write stored tensors only (see `kinds`).
        let buf = |t: &TensorId| buf_of.get(&resolve(*t)).copied();
        let ins: Vec<BufId> = node.inputs.iter().filter_map(buf).collect();
        let outs: Vec<BufId> = node.outputs.iter().filter_map(buf).collect();
        let kernel = match &node.op {
            Op::Input(_) | Op::Const(_) => continue,
            Op::Reshape { .. } if kind[node.outputs[0].0] != Kind::Stored => continue,
            Op::MatMul { ta, tb } => {
                let a = g.shape(node.inputs[0]);
                let o = g.shape(node.outputs[0]);
                Pending::Ready(Kernel::MatMul {
                    a: ins[0],
                    b: ins[1],
                    out: outs[0],
                    m: o[0],
                    n: o[1],
                    k: if *ta { a[0] } else { a[1] },
                    ta: *ta,
                    tb: *tb,
                    batch: 1,
                    bf16: false,
                })
            }
            Op::Attention(a) => Pending::Ready(Kernel::Attention {
                q: ins[0],
                k: ins[1],
                v: ins[2],
                out: outs[0],
                lse: outs[1],
                shape: attn_shape(a),
            }),
            Op::AttentionBwd(a) => Pending::Ready(Kernel::AttentionBwd {
                q: ins[0],
                k: ins[1],
                v: ins[2],
                o: ins[3],
                lse: ins[4],
                dy: ins[5],
                dq: outs[0],
                dk: outs[1],
                dv: outs[2],
                shape: attn_shape(a),
            }),
            Op::EmbeddingBwd { vocab } => Pending::Ready(Kernel::EmbeddingBwd {
                ids: ins[0],
                dy: ins[1],
                out: outs[0],
                vocab: *vocab,
                dim: g.shape(node.inputs[1])[1],
            }),
            Op::Rope(_) => Pending::Rope(node.outputs[0]),
            _ => {
                let t = node.outputs[0];
                if kind[t.0] != Kind::Stored {
                    continue;
                }
                let reads = frontier(g, &kind, t, &resolve);
                let state = is_state(g, t);
                let order = required_order(g, t);
                // No group created before the last kernel `t` reads from can take it.
                let limit = reads
                    .iter()
                    .filter_map(|r| made_in.get(r))
                    .max()
                    .copied()
                    .unwrap_or(0);
                let mut candidates = (0..groups.len())
                    .rev()
                    .take_while(|&gi| group_kernel[gi] >= limit);
                let chosen = candidates.find(|&gi| {
                    let gr = &groups[gi];
                    let own = |r: &TensorId| gr.roots.contains(r);
                    // Roots share a kernel when that saves memory traffic (a
                    // common operand, or one reads the other), and scalar
                    // bookkeeping (clip factor, bias corrections) goes together.
                    let related = gr.shape.is_empty()
                        || reads
                            .iter()
                            .any(|r| own(r) || (gr.reads.contains(r) && !g.shape(*r).is_empty()));
                    let deps_ok = reads
                        .iter()
                        .all(|r| own(r) || made_in.get(r).is_none_or(|&k| k < group_kernel[gi]));
                    let orders_ok = gr.order.is_none() || order.is_none() || gr.order == order;
                    !no_merge.contains(&t)
                        && gr.shape == g.shape(t)
                        && gr.state == state
                        && orders_ok
                        && related
                        && deps_ok
                });
                match chosen {
                    Some(gi) => {
                        let gr = &mut groups[gi];
                        gr.roots.push(t);
                        gr.reads.extend(reads);
                        if gr.order.is_none() {
                            gr.order = order;
                        }
                        made_in.insert(t, group_kernel[gi]);
                        continue;
                    }
                    None => {
                        groups.push(Group {
                            roots: vec![t],
                            shape: g.shape(t).to_vec(),
                            state,
                            order,
                            reads,
                        });
                        group_kernel.push(pending.len());
                        Pending::Loop(groups.len() - 1)
                    }
                }
            }
        };
        for t in &node.outputs {
            made_in.insert(*t, pending.len());
        }
        pending.push(kernel);
    }
    let mut kernels = vec![];
    for p in pending {
        kernels.push(match p {
            Pending::Ready(k) => k,
            Pending::Rope(t) => rope_kernel(g, t, &buf_of, &resolve)?,
            Pending::Loop(gi) => {
                let gr = &groups[gi];
                Kernel::Loop(
                    Emitter::new(g, &kind, &uses, &buf_of, &gr.roots)
                        .emit(&gr.shape, gr.order.clone())?,
                )
            }
        });
    }
    let arena_len = plan_arena(&mut buffers, &kernels);
    Ok(KernelProgram {
        buffers,
        kernels,
        arena_len,
    })
}

/// The stored tensors `t`'s expression reads, through inlined ones.
fn frontier(
    g: &Graph,
    kind: &[Kind],
    t: TensorId,
    resolve: &impl Fn(TensorId) -> TensorId,
) -> HashSet<TensorId> {
    let mut out = HashSet::new();
    let mut stack: Vec<TensorId> = g.producer(t).inputs.clone();
    let mut seen = HashSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x) {
            continue;
        }
        match kind[x.0] {
            Kind::Const(_) => {}
            Kind::Inline => stack.extend(g.producer(x).inputs.iter().copied()),
            Kind::Alias(_) | Kind::Stored => {
                out.insert(resolve(x));
            }
        }
    }
    out
}

fn attn_shape(a: &graph::Attn) -> AttnShape {
    AttnShape {
        batch: a.batch,
        seq: a.seq,
        heads: a.heads,
        kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        scale: a.scale,
    }
}

fn dtype(d: graph::DType) -> DType {
    match d {
        graph::DType::F32 => DType::F32,
        graph::DType::I32 => DType::I32,
    }
}

/// One buffer per stored tensor; state updates write their input's buffer.
fn assign_buffers(g: &Graph, kind: &[Kind]) -> R<(Vec<Buffer>, HashMap<TensorId, BufId>)> {
    let mut buffers: Vec<Buffer> = vec![];
    let mut buf_of: HashMap<TensorId, BufId> = HashMap::new();
    let mut by_storage: HashMap<Storage, BufId> = HashMap::new();
    let pname = |i: usize| g.params.get(i).map(|p| p.name.clone()).unwrap_or_default();
    let output_of: HashMap<TensorId, Output> = g
        .outputs
        .iter()
        .map(|&(o, mut t)| {
            // An output that is a view names the storage of what it views.
            while let Kind::Alias(s) = kind[t.0] {
                t = s;
            }
            (t, o)
        })
        .collect();
    for node in &g.nodes {
        for &t in &node.outputs {
            if kind[t.0] != Kind::Stored {
                continue;
            }
            let (storage, name) = match (&node.op, output_of.get(&t)) {
                (Op::Input(i), _) => match *i {
                    Input::Param(i) => (Storage::Param(i), format!("param[{}]", pname(i))),
                    Input::AdamM(i) => (Storage::AdamM(i), format!("adam_m[{}]", pname(i))),
                    Input::AdamV(i) => (Storage::AdamV(i), format!("adam_v[{}]", pname(i))),
                    Input::Tokens => (Storage::Tokens, "tokens".into()),
                    Input::Targets => (Storage::Targets, "targets".into()),
                    Input::Lr => (Storage::Lr, "lr".into()),
                    Input::Step => (Storage::Step, "step".into()),
                    Input::HeadGate => (Storage::HeadGate, "head_gate".into()),
                    Input::FfnGate => (Storage::FfnGate, "ffn_gate".into()),
                    Input::Grad(i) => (Storage::Grad(i), format!("grad[{}]", pname(i))),
                },
                (_, Some(o)) => match *o {
                    Output::Loss => (Storage::Loss, "loss".into()),
                    Output::Logits => (Storage::Logits, "logits".into()),
                    Output::GradNorm => (Storage::GradNorm, "grad_norm".into()),
                    Output::Grad(i) => (Storage::Grad(i), format!("grad[{}]", pname(i))),
                    Output::Param(i) => (Storage::Param(i), String::new()),
                    Output::AdamM(i) => (Storage::AdamM(i), String::new()),
                    Output::AdamV(i) => (Storage::AdamV(i), String::new()),
                },
                _ => (Storage::Arena { offset: 0 }, format!("%{}", t.0)),
            };
            let is_arena = matches!(storage, Storage::Arena { .. });
            if let (false, Some(&b)) = (is_arena, by_storage.get(&storage)) {
                buf_of.insert(t, b);
                continue;
            }
            if name.is_empty() {
                return internal(format!("state output %{} has no input to update", t.0));
            }
            let tensor = g.tensor(t);
            buffers.push(Buffer {
                name,
                dtype: dtype(tensor.dtype),
                len: tensor.numel(),
                storage,
            });
            let b = BufId(buffers.len() - 1);
            if !is_arena {
                by_storage.insert(storage, b);
            }
            buf_of.insert(t, b);
        }
    }
    Ok((buffers, buf_of))
}

fn aff_var(v: Var) -> Affine {
    Affine {
        offset: 0,
        terms: vec![(v, 1)],
    }
}

fn aff_add(a: &mut Affine, b: &Affine, scale: i64) {
    a.offset += b.offset * scale;
    for &(v, c) in &b.terms {
        match a.terms.iter_mut().find(|(w, _)| *w == v) {
            Some(t) => t.1 += c * scale,
            None => a.terms.push((v, c * scale)),
        }
    }
    a.terms.retain(|t| t.1 != 0);
}

fn row_major_strides(shape: &[usize]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1] as i64;
    }
    strides
}

/// The index of one dimension while lowering: affine, or a gather through an
/// integer tensor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Ix {
    aff: Affine,
    gather: Option<(TensorId, Affine)>,
}

impl Ix {
    fn var(v: Var) -> Ix {
        Ix {
            aff: aff_var(v),
            gather: None,
        }
    }
    fn zero() -> Ix {
        Ix {
            aff: Affine::default(),
            gather: None,
        }
    }
}

/// `idx` (an index into `out`) mapped into an operand of shape `inp` that
/// broadcasts to `out`.
fn broadcast_index(idx: &[Ix], out: &[usize], inp: &[usize]) -> Vec<Ix> {
    let lead = out.len() - inp.len();
    (0..inp.len())
        .map(|d| {
            if inp[d] == 1 && out[d + lead] != 1 {
                Ix::zero()
            } else {
                idx[d + lead].clone()
            }
        })
        .collect()
}

fn with_axis(idx: &[Ix], axis: usize, v: Var) -> Vec<Ix> {
    let mut i = idx.to_vec();
    i[axis] = Ix::var(v);
    i
}

fn row_key(idx: &[Ix], axis: usize) -> Vec<Ix> {
    let mut i = idx.to_vec();
    i[axis] = Ix::zero();
    i
}

fn c(v: f64) -> Expr {
    Expr::Const(v)
}
fn un(f: UnaryFn, a: Expr) -> Expr {
    Expr::Unary(f, Box::new(a))
}
fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::Binary(f, Box::new(a), Box::new(b))
}
fn add(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Add, a, b)
}
fn sub(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Sub, a, b)
}
fn mul(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Mul, a, b)
}
fn div(a: Expr, b: Expr) -> Expr {
    bin(BinaryFn::Div, a, b)
}

#[derive(Clone, Copy, PartialEq)]
enum ScopeKind {
    Top,
    For,
    Reduce,
}

struct Scope {
    kind: ScopeKind,
    stmts: Vec<Stmt>,
}

type MemoKey = (TensorId, &'static str, Vec<Ix>);

/// Builds one loop kernel from its roots.
struct Emitter<'a> {
    g: &'a Graph,
    kind: &'a [Kind],
    buf_of: &'a HashMap<TensorId, BufId>,
    uses: &'a [usize],
    roots: &'a [TensorId],
    scopes: Vec<Scope>,
    var_level: Vec<usize>,
    local_level: Vec<usize>,
    /// Scalars already computed: (tensor, what, index) → local, valid while its scope is open.
    memo: HashMap<MemoKey, Expr>,
    fused: BTreeSet<usize>,
}

impl<'a> Emitter<'a> {
    fn new(
        g: &'a Graph,
        kind: &'a [Kind],
        uses: &'a [usize],
        buf_of: &'a HashMap<TensorId, BufId>,
        roots: &'a [TensorId],
    ) -> Self {
        Emitter {
            g,
            kind,
            uses,
            buf_of,
            roots,
            scopes: vec![Scope {
                kind: ScopeKind::Top,
                stmts: vec![],
            }],
            var_level: vec![],
            local_level: vec![],
            memo: HashMap::new(),
            fused: BTreeSet::new(),
        }
    }

    fn emit(mut self, shape: &[usize], order: Option<Vec<usize>>) -> R<LoopKernel> {
        let order = order.unwrap_or_else(|| (0..shape.len()).collect());
        let mut idx = vec![Ix::zero(); shape.len()];
        let mut loops = vec![];
        for &d in &order {
            let v = self.push_scope(ScopeKind::For);
            loops.push((v, shape[d]));
            idx[d] = Ix::var(v);
        }
        for &root in self.roots {
            self.fused.insert(self.g.tensor(root).producer);
            let e = self.compute(root, &idx)?;
            let e = self.let_(e);
            self.memo.insert((root, "value", idx.clone()), e.clone());
            let index = self.index(root, self.g.shape(root), &idx)?;
            let buf = self.buf_of[&root];
            self.place(
                self.scopes.len() - 1,
                Stmt::Store {
                    buf,
                    index,
                    value: e,
                },
            );
        }
        while let Some((var, extent)) = loops.pop() {
            let body = self.pop_scope();
            let last = self.scopes.len() - 1;
            self.scopes[last]
                .stmts
                .push(Stmt::For { var, extent, body });
        }
        let mut names: Vec<&str> = vec![];
        for n in &self.fused {
            let m = self.g.nodes[*n].op.mnemonic();
            if !names.contains(&m) {
                names.push(m);
            }
        }
        Ok(LoopKernel {
            name: names.join("+"),
            body: self.scopes.pop().map(|s| s.stmts).unwrap_or_default(),
            num_vars: self.var_level.len() as u32,
            num_locals: self.local_level.len() as u32,
        })
    }

    fn push_scope(&mut self, kind: ScopeKind) -> Var {
        let level = self.scopes.len();
        self.scopes.push(Scope {
            kind,
            stmts: vec![],
        });
        self.var_level.push(level);
        Var(self.var_level.len() as u32 - 1)
    }

    fn pop_scope(&mut self) -> Vec<Stmt> {
        let level = self.scopes.len() - 1;
        let local_level = &self.local_level;
        let var_level = &self.var_level;
        self.memo
            .retain(|_, e| level_of(e, var_level, local_level, usize::MAX) < level);
        self.scopes.pop().map(|s| s.stmts).unwrap_or_default()
    }

    fn place(&mut self, level: usize, s: Stmt) {
        self.scopes[level].stmts.push(s);
    }

    fn new_local(&mut self, level: usize) -> Local {
        self.local_level.push(level);
        Local(self.local_level.len() as u32 - 1)
    }

    /// Binds `e` to a local at the outermost scope it depends on.
    fn let_(&mut self, e: Expr) -> Expr {
        if matches!(
            e,
            Expr::Local(_) | Expr::Const(_) | Expr::Var(_) | Expr::Load { .. }
        ) {
            return e;
        }
        let level = level_of(&e, &self.var_level, &self.local_level, usize::MAX);
        let local = self.new_local(level);
        self.place(level, Stmt::Let { local, value: e });
        Expr::Local(local)
    }

    /// `op` over `0..extent` of `f(var)`, hoisted as far out as it can go.
    /// `inlined` is the tensor this reduction belongs to: if the reduction
    /// would land inside another reduction (recomputed per iteration), that
    /// tensor is stored instead.
    fn reduce(
        &mut self,
        op: ReduceFn,
        extent: usize,
        inlined: Option<TensorId>,
        f: impl FnOnce(&mut Self, Var) -> R<Expr>,
    ) -> R<Expr> {
        let depth = self.scopes.len();
        let var = self.push_scope(ScopeKind::Reduce);
        let value = f(self, var)?;
        let body = self.pop_scope();
        let mut level = level_of(&value, &self.var_level, &self.local_level, depth);
        visit_stmts(&body, &mut |s| {
            let e = match s {
                Stmt::Let { value, .. }
                | Stmt::Reduce { value, .. }
                | Stmt::Store { value, .. } => value,
                Stmt::For { .. } => return,
            };
            level = level.max(level_of(e, &self.var_level, &self.local_level, depth));
        });
        if let Some(t) = inlined {
            if self.scopes[level].kind == ScopeKind::Reduce {
                return Err(if self.roots.contains(&t) {
                    Bail::Split(t)
                } else {
                    Bail::Materialize(t)
                });
            }
        }
        let local = self.new_local(level);
        self.place(
            level,
            Stmt::Reduce {
                local,
                op,
                var,
                extent,
                body,
                value,
            },
        );
        Ok(Expr::Local(local))
    }

    fn index(&self, t: TensorId, shape: &[usize], idx: &[Ix]) -> R<Index> {
        let strides = row_major_strides(shape);
        let mut out = Index::default();
        for (d, ix) in idx.iter().enumerate() {
            aff_add(&mut out.affine, &ix.aff, strides[d]);
            if let Some((ids, at)) = &ix.gather {
                if out.gather.is_some() {
                    return internal(format!("two gathers indexing %{}", t.0));
                }
                out.gather = Some(Gather {
                    buf: self.buf_of[&self.resolve(*ids)],
                    at: at.clone(),
                    scale: strides[d],
                });
            }
        }
        Ok(out)
    }

    fn resolve(&self, mut t: TensorId) -> TensorId {
        while let Kind::Alias(s) = self.kind[t.0] {
            t = s;
        }
        t
    }

    /// The value of `t` at `idx`, an expression over stored buffers.
    fn value(&mut self, t: TensorId, idx: &[Ix]) -> R<Expr> {
        match self.kind[t.0] {
            Kind::Const(v) => return Ok(c(v)),
            Kind::Stored | Kind::Alias(_) if !self.roots.contains(&t) => {
                let buf = self.buf_of[&self.resolve(t)];
                let index = self.index(t, self.g.shape(t), idx)?;
                return Ok(Expr::Load { buf, index });
            }
            _ => {}
        }
        if let Some(e) = self.memo.get(&(t, "value", idx.to_vec())) {
            return Ok(e.clone());
        }
        self.fused.insert(self.g.tensor(t).producer);
        let e = self.compute(t, idx)?;
        if self.uses[t.0] < 2 {
            return Ok(e);
        }
        // A recomputed tensor read twice at one index is computed once.
        let e = self.let_(e);
        self.memo.insert((t, "value", idx.to_vec()), e.clone());
        Ok(e)
    }

    fn compute(&mut self, t: TensorId, idx: &[Ix]) -> R<Expr> {
        let g = self.g;
        let node = g.producer(t);
        let x = &node.inputs;
        let out_shape = g.shape(t);
        let last = out_shape.len().saturating_sub(1);
        let operand = |i: usize| broadcast_index(idx, out_shape, g.shape(x[i]));
        Ok(match &node.op {
            Op::Embedding => {
                let row = Ix {
                    aff: Affine::default(),
                    gather: Some((x[1], idx[0].aff.clone())),
                };
                if idx[0].gather.is_some() {
                    return internal("embedding indexed through a gather");
                }
                self.value(x[0], &[row, idx[1].clone()])?
            }
            Op::Reshape { .. } => {
                // A stored reshape copies its (stored) input element by element.
                let buf = self.buf_of[&self.resolve(x[0])];
                let index = self.index(t, out_shape, idx)?;
                Expr::Load { buf, index }
            }
            Op::Unary(u) => {
                let a = self.value(x[0], idx)?;
                match u {
                    UnaryOp::Neg => un(UnaryFn::Neg, a),
                    UnaryOp::Exp => un(UnaryFn::Exp, a),
                    UnaryOp::Log => un(UnaryFn::Log, a),
                    UnaryOp::Sqrt => un(UnaryFn::Sqrt, a),
                    UnaryOp::Tanh => un(UnaryFn::Tanh, a),
                    // ½x(1 + tanh u) = x·s, s as in gelu_bwd, so that a
                    // kernel holding both computes the tanh once.
                    UnaryOp::Gelu => {
                        let a = self.let_(a);
                        let s = self.gelu_sigmoid(&a);
                        mul(a, s)
                    }
                    // x·σ(x), with σ(x) written as in silu_bwd, so that a
                    // kernel holding both computes the exponential once.
                    UnaryOp::Silu => {
                        let a = self.let_(a);
                        mul(a.clone(), sigmoid(a))
                    }
                }
            }
            Op::Binary(b) => {
                let a = self.value(x[0], &operand(0))?;
                let d = self.value(x[1], &operand(1))?;
                match b {
                    BinaryOp::Add => add(a, d),
                    BinaryOp::Sub => sub(a, d),
                    BinaryOp::Mul => mul(a, d),
                    BinaryOp::Div => div(a, d),
                    BinaryOp::Max => bin(BinaryFn::Max, a, d),
                    BinaryOp::Min => bin(BinaryFn::Min, a, d),
                    // gelu'(x) = ½(1 + t) + ½x(1 − t²)·c(1 + 3k x²) with
                    // t = tanh(c(x + k x³)); in s = ½(1 + t) = σ(2c(x + k x³)):
                    // s + x·s(1 − s)·2c(1 + 3k x²).
                    BinaryOp::GeluBwd => {
                        let a = self.let_(a);
                        let s = self.gelu_sigmoid(&a);
                        let s = self.let_(s);
                        let ds = mul(s.clone(), sub(c(1.0), s.clone()));
                        let inner = add(
                            c(2.0 * GELU_C),
                            mul(c(6.0 * GELU_C * GELU_K), mul(a.clone(), a.clone())),
                        );
                        mul(d, add(s, mul(a, mul(ds, inner))))
                    }
                    // silu'(x) = s(1 + x(1 − s)), s = sigmoid(x)
                    BinaryOp::SiluBwd => {
                        let a = self.let_(a);
                        let s = self.let_(sigmoid(a.clone()));
                        mul(d, mul(s.clone(), add(c(1.0), mul(a, sub(c(1.0), s)))))
                    }
                }
            }
            Op::Expand { .. } => self.value(x[0], &operand(0))?,
            Op::Reduce { op, .. } => self.reduce_to(t, x[0], *op, idx)?,
            Op::RmsNorm { eps } => {
                let r = self.rms_rstd(t, x[0], idx, *eps)?;
                mul(self.value(x[0], idx)?, r)
            }
            // dx = r·dy − r³·x·(Σ dy·x)/d
            Op::RmsNormBwd { eps } => {
                let r = self.rms_rstd(t, x[0], idx, *eps)?;
                let dot = self.row_dot(t, x[0], x[1], idx, last)?;
                let n = out_shape[last] as f64;
                let xv = self.value(x[0], idx)?;
                let dy = self.value(x[1], idx)?;
                let r3 = mul(r.clone(), mul(r.clone(), r.clone()));
                sub(mul(r, dy), mul(mul(r3, xv), mul(dot, c(1.0 / n))))
            }
            Op::LayerNorm { eps } => {
                let (mean, r) = self.ln_stats(t, x[0], idx, *eps)?;
                mul(sub(self.value(x[0], idx)?, mean), r)
            }
            // dx = r·(dy − mean(dy) − x̂·mean(dy·x̂))
            Op::LayerNormBwd { eps } => {
                let (mean, r) = self.ln_stats(t, x[0], idx, *eps)?;
                let n = out_shape[last] as f64;
                let (xs, dys) = (x[0], x[1]);
                let mdy = self.reduce(ReduceFn::Sum, out_shape[last], Some(t), |s, k| {
                    s.value(dys, &with_axis(idx, last, k))
                })?;
                let (m2, r2) = (mean.clone(), r.clone());
                let mdyx = self.reduce(ReduceFn::Sum, out_shape[last], Some(t), |s, k| {
                    let at = with_axis(idx, last, k);
                    let xh = mul(sub(s.value(xs, &at)?, m2), r2);
                    Ok(mul(s.value(dys, &at)?, xh))
                })?;
                let xh = mul(sub(self.value(xs, idx)?, mean), r.clone());
                let dy = self.value(dys, idx)?;
                mul(
                    r,
                    sub(
                        sub(dy, mul(mdy, c(1.0 / n))),
                        mul(xh, mul(mdyx, c(1.0 / n))),
                    ),
                )
            }
            Op::L2Norm { axis } => {
                let inv = self.inv_norm(t, x[0], idx, *axis)?;
                mul(self.value(x[0], idx)?, inv)
            }
            // dx = dy/‖x‖ − x·(x·dy)/‖x‖³
            Op::L2NormBwd { axis } => {
                let inv = self.inv_norm(t, x[0], idx, *axis)?;
                let dot = self.row_dot(t, x[0], x[1], idx, *axis)?;
                let xv = self.value(x[0], idx)?;
                let dy = self.value(x[1], idx)?;
                let inv3 = mul(inv.clone(), mul(inv.clone(), inv.clone()));
                sub(mul(dy, inv), mul(mul(xv, inv3), dot))
            }
            Op::Softmax => {
                let (m, z) = self.softmax_stats(x[0], idx, Some(t))?;
                div(un(UnaryFn::Exp, sub(self.value(x[0], idx)?, m)), z)
            }
            // dx = y·(dy − Σ y·dy)
            Op::SoftmaxBwd => {
                let dot = self.row_dot(t, x[0], x[1], idx, last)?;
                mul(self.value(x[0], idx)?, sub(self.value(x[1], idx)?, dot))
            }
            Op::CrossEntropy => {
                let (logits, targets) = (x[0], x[1]);
                let n = g.shape(logits)[0];
                let total = self.reduce(ReduceFn::Sum, n, Some(t), |s, row| {
                    let at = [Ix::var(row), Ix::zero()];
                    let (m, z) = s.softmax_stats(logits, &at, None)?;
                    let pick = Ix {
                        aff: Affine::default(),
                        gather: Some((targets, aff_var(row))),
                    };
                    let target = s.value(logits, &[Ix::var(row), pick])?;
                    Ok(sub(add(m, un(UnaryFn::Log, z)), target))
                })?;
                mul(total, c(1.0 / n as f64))
            }
            // dlogits = (softmax − onehot(target)) · dloss / N
            Op::CrossEntropyBwd => {
                let (logits, targets, dloss) = (x[0], x[1], x[2]);
                let n = g.shape(logits)[0] as f64;
                let (m, z) = self.softmax_stats(logits, idx, Some(t))?;
                let p = div(un(UnaryFn::Exp, sub(self.value(logits, idx)?, m)), z);
                let onehot = Expr::SelectEq {
                    a: Index {
                        affine: idx[1].aff.clone(),
                        gather: None,
                    },
                    b: Index {
                        affine: Affine::default(),
                        gather: Some(Gather {
                            buf: self.buf_of[&self.resolve(targets)],
                            at: idx[0].aff.clone(),
                            scale: 1,
                        }),
                    },
                    then: Box::new(c(1.0)),
                    otherwise: Box::new(c(0.0)),
                };
                let d = self.value(dloss, &[])?;
                mul(sub(p, onehot), mul(d, c(1.0 / n)))
            }
            Op::Input(_)
            | Op::Const(_)
            | Op::MatMul { .. }
            | Op::Attention(_)
            | Op::AttentionBwd(_)
            | Op::EmbeddingBwd { .. }
            | Op::Rope(_) => return internal(format!("{} cannot be inlined", node.op.mnemonic())),
        })
    }

    /// `s = ½(1 + tanh(c(a + k a³)))` (`= σ(2c(a + k a³))`), GELU's gate.
    fn gelu_sigmoid(&mut self, a: &Expr) -> Expr {
        let poly = add(
            c(GELU_C),
            mul(c(GELU_C * GELU_K), mul(a.clone(), a.clone())),
        );
        half_plus_half_tanh(mul(a.clone(), poly))
    }

    fn memoized(&mut self, key: MemoKey, f: impl FnOnce(&mut Self) -> R<Expr>) -> R<Expr> {
        if let Some(e) = self.memo.get(&key) {
            return Ok(e.clone());
        }
        let e = f(self)?;
        let e = self.let_(e);
        self.memo.insert(key, e.clone());
        Ok(e)
    }

    /// `1/√(mean(x²) + eps)` of `idx`'s row.
    fn rms_rstd(&mut self, t: TensorId, x: TensorId, idx: &[Ix], eps: f64) -> R<Expr> {
        let last = idx.len() - 1;
        let n = self.g.shape(x)[last];
        self.memoized((x, "rms_rstd", row_key(idx, last)), |s| {
            let ss = s.reduce(ReduceFn::Sum, n, Some(t), |s, k| {
                let v = s.value(x, &with_axis(idx, last, k))?;
                let v = s.let_(v);
                Ok(mul(v.clone(), v))
            })?;
            Ok(div(
                c(1.0),
                un(UnaryFn::Sqrt, add(mul(ss, c(1.0 / n as f64)), c(eps))),
            ))
        })
    }

    /// Mean and `1/√(var + eps)` of `idx`'s row.
    fn ln_stats(&mut self, t: TensorId, x: TensorId, idx: &[Ix], eps: f64) -> R<(Expr, Expr)> {
        let last = idx.len() - 1;
        let n = self.g.shape(x)[last];
        let mean = self.memoized((x, "ln_mean", row_key(idx, last)), |s| {
            let sum = s.reduce(ReduceFn::Sum, n, Some(t), |s, k| {
                s.value(x, &with_axis(idx, last, k))
            })?;
            Ok(mul(sum, c(1.0 / n as f64)))
        })?;
        let m = mean.clone();
        let rstd = self.memoized((x, "ln_rstd", row_key(idx, last)), |s| {
            let var = s.reduce(ReduceFn::Sum, n, Some(t), |s, k| {
                let d = sub(s.value(x, &with_axis(idx, last, k))?, m);
                let d = s.let_(d);
                Ok(mul(d.clone(), d))
            })?;
            Ok(div(
                c(1.0),
                un(UnaryFn::Sqrt, add(mul(var, c(1.0 / n as f64)), c(eps))),
            ))
        })?;
        Ok((mean, rstd))
    }

    /// `1/‖x‖` of the vector along `axis` through `idx`.
    fn inv_norm(&mut self, t: TensorId, x: TensorId, idx: &[Ix], axis: usize) -> R<Expr> {
        let n = self.g.shape(x)[axis];
        self.memoized((x, "inv_norm", row_key(idx, axis)), |s| {
            let ss = s.reduce(ReduceFn::Sum, n, Some(t), |s, k| {
                let v = s.value(x, &with_axis(idx, axis, k))?;
                let v = s.let_(v);
                Ok(mul(v.clone(), v))
            })?;
            Ok(div(c(1.0), un(UnaryFn::Sqrt, ss)))
        })
    }

    /// `Σ a·b` along `axis` through `idx`.
    fn row_dot(
        &mut self,
        t: TensorId,
        a: TensorId,
        b: TensorId,
        idx: &[Ix],
        axis: usize,
    ) -> R<Expr> {
        let n = self.g.shape(a)[axis];
        self.reduce(ReduceFn::Sum, n, Some(t), |s, k| {
            let at = with_axis(idx, axis, k);
            Ok(mul(s.value(a, &at)?, s.value(b, &at)?))
        })
    }

    /// Max and `Σ exp(x − max)` of `idx`'s row (last axis).
    fn softmax_stats(
        &mut self,
        x: TensorId,
        idx: &[Ix],
        inlined: Option<TensorId>,
    ) -> R<(Expr, Expr)> {
        let last = idx.len() - 1;
        let n = self.g.shape(x)[last];
        let key = row_key(idx, last);
        let m = match self.memo.get(&(x, "softmax_max", key.clone())) {
            Some(e) => e.clone(),
            None => {
                let m = self.reduce(ReduceFn::Max, n, inlined, |s, k| {
                    s.value(x, &with_axis(idx, last, k))
                })?;
                self.memo.insert((x, "softmax_max", key.clone()), m.clone());
                m
            }
        };
        let z = match self.memo.get(&(x, "softmax_sum", key.clone())) {
            Some(e) => e.clone(),
            None => {
                let m2 = m.clone();
                let z = self.reduce(ReduceFn::Sum, n, inlined, |s, k| {
                    Ok(un(
                        UnaryFn::Exp,
                        sub(s.value(x, &with_axis(idx, last, k))?, m2),
                    ))
                })?;
                self.memo.insert((x, "softmax_sum", key), z.clone());
                z
            }
        };
        Ok((m, z))
    }

    /// `Reduce` of `x` to `t`'s shape at `idx`: nested reductions over the
    /// broadcast axes.
    fn reduce_to(&mut self, t: TensorId, x: TensorId, op: ReduceOp, idx: &[Ix]) -> R<Expr> {
        let (inp, out) = (self.g.shape(x).to_vec(), self.g.shape(t));
        let lead = inp.len() - out.len();
        let mut at = vec![Ix::zero(); inp.len()];
        let mut axes = vec![];
        for d in 0..inp.len() {
            if d < lead || (out[d - lead] == 1 && inp[d] != 1) {
                axes.push(d);
            } else {
                at[d] = idx[d - lead].clone();
            }
        }
        let op = match op {
            ReduceOp::Sum => ReduceFn::Sum,
            ReduceOp::Max => ReduceFn::Max,
        };
        self.nested_reduce(t, x, op, &inp, &axes, at, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn nested_reduce(
        &mut self,
        t: TensorId,
        x: TensorId,
        op: ReduceFn,
        shape: &[usize],
        axes: &[usize],
        at: Vec<Ix>,
        outer: bool,
    ) -> R<Expr> {
        let Some((&axis, rest)) = axes.split_first() else {
            return self.value(x, &at);
        };
        let inlined = if outer { Some(t) } else { None };
        self.reduce(op, shape[axis], inlined, |s, v| {
            let mut at = at;
            at[axis] = Ix::var(v);
            s.nested_reduce(t, x, op, shape, rest, at, false)
        })
    }
}

/// The deepest scope level `e` depends on, counting only levels below `below`.
fn level_of(e: &Expr, var_level: &[usize], local_level: &[usize], below: usize) -> usize {
    let mut level = 0;
    let mut see = |l: usize| {
        if l < below {
            level = level.max(l);
        }
    };
    let index = |ix: &Index, see: &mut dyn FnMut(usize)| {
        for (v, _) in &ix.affine.terms {
            see(var_level[v.0 as usize]);
        }
        if let Some(gth) = &ix.gather {
            for (v, _) in &gth.at.terms {
                see(var_level[v.0 as usize]);
            }
        }
    };
    visit_expr(e, &mut |x| match x {
        Expr::Var(v) => see(var_level[v.0 as usize]),
        Expr::Local(l) => see(local_level[l.0 as usize]),
        Expr::Load { index: ix, .. } => index(ix, &mut see),
        Expr::SelectEq { a, b, .. } => {
            index(a, &mut see);
            index(b, &mut see);
        }
        Expr::Const(_) | Expr::Unary(..) | Expr::Binary(..) => {}
    });
    level
}

/// RoPE as its own kernel: loops over (sequence, position, head, half, pair)
/// make the partner element and the angle affine in the loop indices.
fn rope_kernel(
    g: &Graph,
    t: TensorId,
    buf_of: &HashMap<TensorId, BufId>,
    resolve: &impl Fn(TensorId) -> TensorId,
) -> R<Kernel> {
    let node = g.producer(t);
    let Op::Rope(r) = node.op else {
        return internal("rope kernel for a non-rope op");
    };
    let shape = g.shape(t);
    let (n, heads, dk) = (shape[0], shape[1], shape[2]);
    let half = dk / 2;
    let (batch, seq) = (n / r.seq, r.seq);
    let vars: Vec<Var> = (0..5).map(Var).collect();
    let (b, p, h, s, j) = (vars[0], vars[1], vars[2], vars[3], vars[4]);
    let (half_i, dk_i, h_i) = (half as i64, dk as i64, heads as i64);
    let base = Affine {
        offset: 0,
        terms: vec![
            (b, seq as i64 * h_i * dk_i),
            (p, h_i * dk_i),
            (h, dk_i),
            (s, half_i),
            (j, 1),
        ],
    };
    let mut partner = base.clone();
    partner.offset = half_i;
    partner.terms[3].1 = -half_i;
    let src = buf_of[&resolve(node.inputs[0])];
    let dst = buf_of[&resolve(t)];
    let load = |a: Affine| Expr::Load {
        buf: src,
        index: Index {
            affine: a,
            gather: None,
        },
    };
    // θ = pos · base^(−2j/dk); the first half takes −x[j+½]·sin, the second +x[j−½]·sin.
    let theta = mul(
        Expr::Var(p),
        un(
            UnaryFn::Exp,
            mul(Expr::Var(j), c(-2.0 * r.base.ln() / dk as f64)),
        ),
    );
    let dir = if r.inverse { -1.0 } else { 1.0 };
    let sign = mul(c(dir), sub(mul(c(2.0), Expr::Var(s)), c(1.0)));
    let value = add(
        mul(load(base.clone()), un(UnaryFn::Cos, Expr::Local(Local(0)))),
        mul(
            mul(sign, load(partner)),
            un(UnaryFn::Sin, Expr::Local(Local(0))),
        ),
    );
    let inner = vec![
        Stmt::Let {
            local: Local(0),
            value: theta,
        },
        Stmt::Store {
            buf: dst,
            index: Index {
                affine: base,
                gather: None,
            },
            value,
        },
    ];
    let mut body = inner;
    for (v, extent) in [(j, half), (s, 2), (h, heads), (p, seq), (b, batch)] {
        body = vec![Stmt::For {
            var: v,
            extent,
            body,
        }];
    }
    Ok(Kernel::Loop(LoopKernel {
        name: node.op.mnemonic().to_string(),
        body,
        num_vars: 5,
        num_locals: 1,
    }))
}
