//! Executes kernel IR naively: loop kernels statement by statement, library
//! calls through `library`. Temporaries live in one arena at the offsets the
//! buffer plan chose, so a wrong plan shows up as wrong numbers.

use super::float::Float;
use super::library;
use super::InterpError;
use gsc_compiler::kernel::*;
use std::cell::Cell;
use std::rc::Rc;

#[derive(Clone, Copy, Debug)]
enum Loc {
    Float(usize),
    Int(usize),
    Arena(usize),
}

/// Every buffer of one program: persistent ones (params, grads, moments,
/// inputs, outputs) and the arena. Persistent floats are reference-counted
/// cells, so that another program's memory can hold the same parameters
/// ([`Memory::sharing`]).
pub struct Memory<F> {
    locs: Vec<Loc>,
    lens: Vec<usize>,
    storage: Vec<Storage>,
    floats: Vec<Rc<[Cell<F>]>>,
    ints: Vec<Vec<i32>>,
    arena: Vec<F>,
}

impl<F: Float> Memory<F> {
    /// Zeroed memory for `prog`.
    pub fn new(prog: &KernelProgram) -> Self {
        let mut m = Memory {
            locs: vec![],
            lens: vec![],
            storage: vec![],
            floats: vec![],
            ints: vec![],
            arena: vec![F::default(); prog.arena_len],
        };
        for b in &prog.buffers {
            let loc = match (b.storage, b.dtype) {
                (Storage::Arena { offset }, _) => Loc::Arena(offset),
                (_, DType::I32) => {
                    m.ints.push(vec![0; b.len]);
                    Loc::Int(m.ints.len() - 1)
                }
                (_, DType::F32) => {
                    m.floats
                        .push((0..b.len).map(|_| Cell::new(F::default())).collect());
                    Loc::Float(m.floats.len() - 1)
                }
            };
            m.locs.push(loc);
            m.lens.push(b.len);
            m.storage.push(b.storage);
        }
        m
    }

    /// Memory for `prog` whose parameters (`Storage::Param`) are `owner`'s:
    /// what one program writes there, the other reads.
    pub fn sharing(prog: &KernelProgram, owner: &Memory<F>) -> Result<Self, InterpError> {
        let mut m = Memory::new(prog);
        for (b, s) in m.storage.iter().enumerate() {
            let (Storage::Param(_), Loc::Float(i)) = (s, m.locs[b]) else {
                continue;
            };
            let theirs = match owner.find(*s).map(|o| owner.locs[o]) {
                Ok(Loc::Float(k)) if owner.floats[k].len() == m.lens[b] => &owner.floats[k],
                _ => {
                    return Err(InterpError::NoBuffer(format!(
                        "{s:?} of {} values to share",
                        m.lens[b]
                    )))
                }
            };
            m.floats[i] = Rc::clone(theirs);
        }
        Ok(m)
    }

    fn find(&self, s: Storage) -> Result<usize, InterpError> {
        self.storage
            .iter()
            .position(|x| *x == s)
            .ok_or(InterpError::NoBuffer(format!("{s:?}")))
    }

    pub fn has(&self, s: Storage) -> bool {
        self.find(s).is_ok()
    }

    pub fn write(&mut self, s: Storage, data: &[F]) -> Result<(), InterpError> {
        let b = self.find(s)?;
        match self.locs[b] {
            Loc::Float(i) if self.floats[i].len() == data.len() => {
                set_all(&self.floats[i], data);
                Ok(())
            }
            _ => Err(InterpError::BadWrite(format!(
                "{s:?} with {} values",
                data.len()
            ))),
        }
    }

    pub fn write_ints(&mut self, s: Storage, data: &[i32]) -> Result<(), InterpError> {
        let b = self.find(s)?;
        match self.locs[b] {
            Loc::Int(i) if self.ints[i].len() == data.len() => {
                self.ints[i].copy_from_slice(data);
                Ok(())
            }
            _ => Err(InterpError::BadWrite(format!(
                "{s:?} with {} ints",
                data.len()
            ))),
        }
    }

    pub fn read(&self, s: Storage) -> Result<Vec<F>, InterpError> {
        let b = self.find(s)?;
        self.floats_of(BufId(b))
    }

    /// Sets buffer `b` (persistent or a temporary in the arena) by id, for
    /// comparing every buffer of a program, temporaries included, with
    /// another backend's.
    pub fn write_buf(&mut self, b: BufId, data: &[F]) -> Result<(), InterpError> {
        let fits = self.lens.get(b.0) == Some(&data.len());
        match self.locs.get(b.0) {
            Some(Loc::Float(_) | Loc::Arena(_)) if fits => self.put(b, data),
            _ => Err(InterpError::BadWrite(format!(
                "b{} with {} values",
                b.0,
                data.len()
            ))),
        }
    }

    /// Sets integer buffer `b` by id.
    pub fn write_buf_ints(&mut self, b: BufId, data: &[i32]) -> Result<(), InterpError> {
        match self.locs.get(b.0) {
            Some(Loc::Int(i)) if self.ints[*i].len() == data.len() => {
                self.ints[*i].copy_from_slice(data);
                Ok(())
            }
            _ => Err(InterpError::BadWrite(format!(
                "b{} with {} ints",
                b.0,
                data.len()
            ))),
        }
    }

    /// Buffer `b` by id (see [`Memory::write_buf`]).
    pub fn read_buf(&self, b: BufId) -> Result<Vec<F>, InterpError> {
        if b.0 >= self.lens.len() {
            return Err(InterpError::NoBuffer(format!("b{}", b.0)));
        }
        self.floats_of(b)
    }

    fn floats_of(&self, b: BufId) -> Result<Vec<F>, InterpError> {
        let len = self.lens[b.0];
        match self.locs[b.0] {
            Loc::Float(i) => Ok(self.floats[i].iter().map(Cell::get).collect()),
            Loc::Arena(o) => self
                .arena
                .get(o..o + len)
                .map(<[F]>::to_vec)
                .ok_or(InterpError::OutOfBounds(b.0, o + len)),
            Loc::Int(_) => Err(InterpError::BadWrite(format!(
                "b{} is an integer buffer",
                b.0
            ))),
        }
    }

    fn ints_of(&self, b: BufId) -> Result<&[i32], InterpError> {
        match self.locs[b.0] {
            Loc::Int(i) => Ok(&self.ints[i]),
            _ => Err(InterpError::BadWrite(format!(
                "b{} is not an integer buffer",
                b.0
            ))),
        }
    }

    fn put(&mut self, b: BufId, data: &[F]) -> Result<(), InterpError> {
        let len = self.lens[b.0];
        if data.len() != len {
            return Err(InterpError::BadWrite(format!(
                "b{} of {len} values with {}",
                b.0,
                data.len()
            )));
        }
        match self.locs[b.0] {
            Loc::Float(i) => set_all(&self.floats[i], data),
            Loc::Arena(o) => self
                .arena
                .get_mut(o..o + len)
                .ok_or(InterpError::OutOfBounds(b.0, o + len))?
                .copy_from_slice(data),
            Loc::Int(_) => {
                return Err(InterpError::BadWrite(format!(
                    "b{} is an integer buffer",
                    b.0
                )))
            }
        }
        Ok(())
    }

    fn load(&self, b: BufId, i: usize) -> Result<F, InterpError> {
        if i >= self.lens[b.0] {
            return Err(InterpError::OutOfBounds(b.0, i));
        }
        Ok(match self.locs[b.0] {
            Loc::Float(k) => self.floats[k][i].get(),
            Loc::Arena(o) => self.arena[o + i],
            Loc::Int(k) => F::from_f64(self.ints[k][i] as f64),
        })
    }

    fn store(&mut self, b: BufId, i: usize, v: F) -> Result<(), InterpError> {
        if i >= self.lens[b.0] {
            return Err(InterpError::OutOfBounds(b.0, i));
        }
        match self.locs[b.0] {
            Loc::Float(k) => self.floats[k][i].set(v),
            Loc::Arena(o) => self.arena[o + i] = v,
            Loc::Int(_) => {
                return Err(InterpError::BadWrite(format!(
                    "store to integer buffer b{}",
                    b.0
                )))
            }
        }
        Ok(())
    }

    fn int(&self, b: BufId, i: usize) -> Result<i64, InterpError> {
        match self.locs[b.0] {
            Loc::Int(k) => self.ints[k]
                .get(i)
                .map(|&x| x as i64)
                .ok_or(InterpError::OutOfBounds(b.0, i)),
            _ => Err(InterpError::BadWrite(format!(
                "gather through float buffer b{}",
                b.0
            ))),
        }
    }
}

/// Sets every cell of `dst` from `src`, which is as long.
fn set_all<F: Copy>(dst: &[Cell<F>], src: &[F]) {
    dst.iter().zip(src).for_each(|(d, &s)| d.set(s));
}

/// Runs every kernel of `prog` once, in order.
/// The program is validated first, so a malformed one (say, from a damaged
/// artifact) is an error, not a panic.
pub fn run<F: Float>(prog: &KernelProgram, mem: &mut Memory<F>) -> Result<(), InterpError> {
    validate(prog).map_err(|e| InterpError::Invalid(e.to_string()))?;
    if mem.lens.len() != prog.buffers.len() || mem.arena.len() < prog.arena_len {
        return Err(InterpError::Invalid(
            "memory was made for another program".into(),
        ));
    }
    for (i, k) in prog.kernels.iter().enumerate() {
        run_kernel(k, mem)
            .map_err(|e| InterpError::InKernel(i, k.name().to_string(), Box::new(e)))?;
    }
    Ok(())
}

/// One training step of a compiled stage's `kernels`: feeds this step's
/// learning rate and 1-based step count, runs, and returns the loss (computed
/// before the update). Tokens, targets and state must already be in `mem`.
pub fn train_step<F: Float>(
    prog: &KernelProgram,
    mem: &mut Memory<F>,
    lr: f64,
    step: u64,
) -> Result<f64, InterpError> {
    mem.write(Storage::Lr, &[F::from_f64(lr)])?;
    mem.write(Storage::Step, &[F::from_f64(step as f64)])?;
    run(prog, mem)?;
    Ok(mem.read(Storage::Loss)?[0].to_f64())
}

fn run_kernel<F: Float>(k: &Kernel, mem: &mut Memory<F>) -> Result<(), InterpError> {
    match k {
        Kernel::Loop(l) => {
            let mut env = Env {
                vars: vec![0; l.num_vars as usize],
                locals: vec![F::default(); l.num_locals as usize],
            };
            exec(&l.body, mem, &mut env)
        }
        Kernel::MatMul {
            a,
            b,
            out,
            m,
            n,
            k,
            ta,
            tb,
            batch,
            bf16,
        } => {
            let (mut a, mut b) = (mem.floats_of(*a)?, mem.floats_of(*b)?);
            if *bf16 {
                for x in a.iter_mut().chain(b.iter_mut()) {
                    *x = F::from_f64(f64::from(bf16::round(x.to_f64() as f32)));
                }
            }
            let (sa, sb, so) = (m * k, k * n, m * n);
            let mut o = vec![F::default(); batch * so];
            if a.len() != batch * sa || b.len() != batch * sb {
                return Err(InterpError::BadWrite(
                    "matmul shapes disagree with buffers".into(),
                ));
            }
            for i in 0..*batch {
                library::matmul(
                    &a[i * sa..][..sa],
                    &b[i * sb..][..sb],
                    &mut o[i * so..][..so],
                    *m,
                    *n,
                    *k,
                    *ta,
                    *tb,
                );
            }
            mem.put(*out, &o)
        }
        Kernel::Attention {
            q,
            k,
            v,
            out,
            lse,
            shape,
        } => {
            let (q, k, v) = (mem.floats_of(*q)?, mem.floats_of(*k)?, mem.floats_of(*v)?);
            let mut o = vec![F::default(); q.len()];
            let mut l = vec![F::default(); mem.lens[lse.0]];
            library::attention(&q, &k, &v, &mut o, &mut l, shape);
            mem.put(*out, &o)?;
            mem.put(*lse, &l)
        }
        Kernel::AttentionBwd {
            q,
            k,
            v,
            o,
            lse,
            dy,
            dq,
            dk,
            dv,
            shape,
        } => {
            let [qv, kv, vv, ov, lv, dyv] = [q, k, v, o, lse, dy].map(|b| mem.floats_of(*b));
            let (qv, kv, vv, ov, lv, dyv) = (qv?, kv?, vv?, ov?, lv?, dyv?);
            let (mut a, mut b, mut c) = (
                vec![F::default(); qv.len()],
                vec![F::default(); kv.len()],
                vec![F::default(); vv.len()],
            );
            library::attention_bwd(&qv, &kv, &vv, &ov, &lv, &dyv, &mut a, &mut b, &mut c, shape);
            mem.put(*dq, &a)?;
            mem.put(*dk, &b)?;
            mem.put(*dv, &c)
        }
        Kernel::EmbeddingBwd {
            ids,
            dy,
            out,
            vocab,
            dim,
        } => {
            let ids = mem.ints_of(*ids)?.to_vec();
            let dy = mem.floats_of(*dy)?;
            let mut o = vec![F::default(); vocab * dim];
            library::embedding_bwd(&ids, &dy, &mut o, *vocab, *dim).ok_or(InterpError::BadToken)?;
            mem.put(*out, &o)
        }
    }
}

struct Env<F> {
    vars: Vec<i64>,
    locals: Vec<F>,
}

fn exec<F: Float>(
    stmts: &[Stmt],
    mem: &mut Memory<F>,
    env: &mut Env<F>,
) -> Result<(), InterpError> {
    for s in stmts {
        match s {
            Stmt::For { var, extent, body } => {
                for i in 0..*extent {
                    env.vars[var.0 as usize] = i as i64;
                    exec(body, mem, env)?;
                }
            }
            Stmt::Let { local, value } => env.locals[local.0 as usize] = eval(value, mem, env)?,
            Stmt::Reduce {
                local,
                op,
                var,
                extent,
                body,
                value,
            } => {
                let mut acc = match op {
                    ReduceFn::Sum => F::default(),
                    ReduceFn::Max => F::from_f64(f64::NEG_INFINITY),
                };
                for i in 0..*extent {
                    env.vars[var.0 as usize] = i as i64;
                    exec(body, mem, env)?;
                    let v = eval(value, mem, env)?;
                    acc = match op {
                        ReduceFn::Sum => acc + v,
                        ReduceFn::Max => acc.max(v),
                    };
                }
                env.locals[local.0 as usize] = acc;
            }
            Stmt::Store {
                buf,
                index: ix,
                value,
            } => {
                let v = eval(value, mem, env)?;
                let i = index(ix, mem, env)?;
                mem.store(*buf, i, v)?;
            }
        }
    }
    Ok(())
}

fn affine(a: &Affine, env: &Env<impl Float>) -> i64 {
    a.offset
        + a.terms
            .iter()
            .map(|(v, c)| c * env.vars[v.0 as usize])
            .sum::<i64>()
}

fn index_i64<F: Float>(ix: &Index, mem: &Memory<F>, env: &Env<F>) -> Result<i64, InterpError> {
    let mut i = affine(&ix.affine, env);
    if let Some(g) = &ix.gather {
        let at = usize::try_from(affine(&g.at, env))
            .map_err(|_| InterpError::OutOfBounds(g.buf.0, 0))?;
        i += g.scale * mem.int(g.buf, at)?;
    }
    Ok(i)
}

fn index<F: Float>(ix: &Index, mem: &Memory<F>, env: &Env<F>) -> Result<usize, InterpError> {
    let i = index_i64(ix, mem, env)?;
    usize::try_from(i).map_err(|_| InterpError::BadToken)
}

fn eval<F: Float>(e: &Expr, mem: &Memory<F>, env: &Env<F>) -> Result<F, InterpError> {
    Ok(match e {
        Expr::Const(v) => F::from_f64(*v),
        Expr::Load { buf, index: ix } => mem.load(*buf, index(ix, mem, env)?)?,
        Expr::Local(l) => env.locals[l.0 as usize],
        Expr::Var(v) => F::from_f64(env.vars[v.0 as usize] as f64),
        Expr::Unary(f, a) => {
            let a = eval(a, mem, env)?;
            match f {
                UnaryFn::Neg => -a,
                UnaryFn::Exp => a.exp(),
                UnaryFn::Log => a.ln(),
                UnaryFn::Sqrt => a.sqrt(),
                UnaryFn::Tanh => a.tanh(),
                UnaryFn::Sin => a.sin(),
                UnaryFn::Cos => a.cos(),
                UnaryFn::Floor => a.floor(),
            }
        }
        Expr::Binary(f, a, b) => {
            let (a, b) = (eval(a, mem, env)?, eval(b, mem, env)?);
            match f {
                BinaryFn::Add => a + b,
                BinaryFn::Sub => a - b,
                BinaryFn::Mul => a * b,
                BinaryFn::Div => a / b,
                BinaryFn::Max => a.max(b),
                BinaryFn::Min => a.min(b),
            }
        }
        Expr::SelectEq {
            a,
            b,
            then,
            otherwise,
        } => {
            if index_i64(a, mem, env)? == index_i64(b, mem, env)? {
                eval(then, mem, env)?
            } else {
                eval(otherwise, mem, env)?
            }
        }
    })
}
