//! The state one `KernelProgram` runs on, laid out the same way for every
//! backend (reference interpreter, CPU JIT, CUDA): one `Vec<f32>` per
//! persistent F32 buffer (params, grads, Adam moments, lr, step, loss,
//! logits), one `Vec<i32>` per I32 buffer (tokens, targets), and one arena
//! `Vec<f32>` of `arena_len` elements holding every `Storage::Arena` buffer
//! at its planned offset.
//!
//! Non-arena buffers that name the same `Storage` (a parameter read by the
//! forward and written by the optimizer step) share one vector. Persistent
//! F32 vectors are reference-counted, so that another program's buffers
//! can hold the same ones ([`ProgramBuffers::sharing`]: evaluation reads the
//! parameters the training step updates, with no copy between them).

use gsc_compiler::kernel::{BufId, DType, KernelProgram, Storage};
use std::cell::{Ref, RefCell, RefMut};
use std::marker::PhantomData;
use std::rc::Rc;

/// Where one buffer of the program lives inside [`ProgramBuffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Index into the F32 vectors.
    F32(usize),
    /// Index into the I32 vectors.
    I32(usize),
    /// Element range of the arena.
    Arena { offset: usize, len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    #[error("the program has no {0:?} buffer")]
    Missing(Storage),
    #[error("{what} holds {want} values, {got} given")]
    Length {
        what: String,
        want: usize,
        got: usize,
    },
    #[error("buffer b{id} ({name}) at arena offset {offset} + {len} does not fit the arena of {arena_len}")]
    ArenaOverflow {
        id: usize,
        name: String,
        offset: usize,
        len: usize,
        arena_len: usize,
    },
    #[error("buffer b{id} ({name}) is an I32 buffer in the arena, which holds only F32")]
    IntInArena { id: usize, name: String },
    #[error("{0} is in use by a program that is running")]
    Busy(String),
}

/// A persistent F32 buffer, held by every program that shares it.
type Shared = Rc<RefCell<Vec<f32>>>;

/// Every buffer of one program, zero-initialised by [`ProgramBuffers::new`].
#[derive(Debug)]
pub struct ProgramBuffers {
    slots: Vec<Slot>,
    storages: Vec<Storage>,
    names: Vec<String>,
    f32s: Vec<Shared>,
    i32s: Vec<Vec<i32>>,
    arena: RefCell<Vec<f32>>,
}

impl ProgramBuffers {
    /// Zeroed state for `program`. Fails only on a malformed program (an
    /// arena buffer outside the arena, an integer arena buffer).
    pub fn new(program: &KernelProgram) -> Result<Self, BufferError> {
        Self::build(program, None)
    }

    /// As [`ProgramBuffers::new`], but the parameter buffers
    /// (`Storage::Param`) are `owner`'s: what one program writes there, the
    /// other reads. Fails if `owner` lacks one or holds it at another length.
    pub fn sharing(program: &KernelProgram, owner: &ProgramBuffers) -> Result<Self, BufferError> {
        Self::build(program, Some(owner))
    }

    fn build(program: &KernelProgram, owner: Option<&ProgramBuffers>) -> Result<Self, BufferError> {
        let mut slots = Vec::with_capacity(program.buffers.len());
        let mut f32s: Vec<Shared> = vec![];
        let mut i32s: Vec<Vec<i32>> = vec![];
        // (storage, dtype) → slot of the first buffer with that storage.
        let mut shared: Vec<(Storage, DType, Slot)> = vec![];
        for (id, b) in program.buffers.iter().enumerate() {
            let slot = match (b.storage, b.dtype) {
                (Storage::Arena { offset }, DType::F32) => {
                    if offset + b.len > program.arena_len {
                        return Err(BufferError::ArenaOverflow {
                            id,
                            name: b.name.clone(),
                            offset,
                            len: b.len,
                            arena_len: program.arena_len,
                        });
                    }
                    Slot::Arena { offset, len: b.len }
                }
                (Storage::Arena { .. }, DType::I32) => {
                    return Err(BufferError::IntInArena {
                        id,
                        name: b.name.clone(),
                    })
                }
                (storage, dtype) => {
                    let found = shared
                        .iter()
                        .find(|(s, d, _)| *s == storage && *d == dtype)
                        .map(|x| x.2);
                    match found {
                        Some(slot) => {
                            let have = match slot {
                                Slot::F32(i) => len(&f32s[i], storage)?,
                                Slot::I32(i) => i32s[i].len(),
                                Slot::Arena { len, .. } => len,
                            };
                            if have != b.len {
                                return Err(BufferError::Length {
                                    what: format!("b{id} ({}), sharing {storage:?}", b.name),
                                    want: have,
                                    got: b.len,
                                });
                            }
                            slot
                        }
                        None => {
                            let slot = match dtype {
                                DType::F32 => {
                                    f32s.push(match (owner, storage) {
                                        (Some(o), Storage::Param(_)) => o.shared(storage, b.len)?,
                                        _ => Rc::new(RefCell::new(vec![0.0; b.len])),
                                    });
                                    Slot::F32(f32s.len() - 1)
                                }
                                DType::I32 => {
                                    i32s.push(vec![0; b.len]);
                                    Slot::I32(i32s.len() - 1)
                                }
                            };
                            shared.push((storage, dtype, slot));
                            slot
                        }
                    }
                }
            };
            slots.push(slot);
        }
        Ok(ProgramBuffers {
            slots,
            storages: program.buffers.iter().map(|b| b.storage).collect(),
            names: program.buffers.iter().map(|b| b.name.clone()).collect(),
            f32s,
            i32s,
            arena: RefCell::new(vec![0.0; program.arena_len]),
        })
    }

    /// Another handle on the F32 buffer with `storage`, which must hold `want` values.
    fn shared(&self, storage: Storage, want: usize) -> Result<Shared, BufferError> {
        let v = match self.find(storage).and_then(|id| self.slot(id)) {
            Some(Slot::F32(i)) => &self.f32s[i],
            _ => return Err(BufferError::Missing(storage)),
        };
        let have = len(v, storage)?;
        if have != want {
            return Err(BufferError::Length {
                what: format!("the shared {storage:?}"),
                want: have,
                got: want,
            });
        }
        Ok(Rc::clone(v))
    }

    /// Number of buffers of the program (valid `BufId`s are below it).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn slot(&self, id: BufId) -> Option<Slot> {
        self.slots.get(id.0).copied()
    }

    pub fn name(&self, id: BufId) -> Option<&str> {
        self.names.get(id.0).map(String::as_str)
    }

    /// The whole arena (no kernel runs while it is borrowed: executing
    /// takes `&mut self`).
    pub fn arena(&self) -> Ref<'_, [f32]> {
        Ref::map(self.arena.borrow(), |a| &a[..])
    }

    /// An F32 buffer's values (`None` for an unknown id or an I32 buffer,
    /// or while a program that shares it runs).
    pub fn f32(&self, id: BufId) -> Option<Ref<'_, [f32]>> {
        match self.slot(id)? {
            Slot::F32(i) => Some(Ref::map(self.f32s[i].try_borrow().ok()?, |v| &v[..])),
            Slot::Arena { offset, len } => {
                Some(Ref::map(self.arena(), |a| &a[offset..offset + len]))
            }
            Slot::I32(_) => None,
        }
    }

    pub fn f32_mut(&mut self, id: BufId) -> Option<RefMut<'_, [f32]>> {
        match self.slot(id)? {
            Slot::F32(i) => Some(RefMut::map(self.f32s[i].try_borrow_mut().ok()?, |v| {
                &mut v[..]
            })),
            Slot::Arena { offset, len } => Some(RefMut::map(self.arena.borrow_mut(), |a| {
                &mut a[offset..offset + len]
            })),
            Slot::I32(_) => None,
        }
    }

    pub fn i32(&self, id: BufId) -> Option<&[i32]> {
        match self.slot(id)? {
            Slot::I32(i) => Some(&self.i32s[i]),
            _ => None,
        }
    }

    pub fn i32_mut(&mut self, id: BufId) -> Option<&mut [i32]> {
        match self.slot(id)? {
            Slot::I32(i) => Some(&mut self.i32s[i]),
            _ => None,
        }
    }

    fn find(&self, storage: Storage) -> Option<BufId> {
        self.storages.iter().position(|s| *s == storage).map(BufId)
    }

    /// The F32 buffer with this storage.
    pub fn storage(&self, storage: Storage) -> Option<Ref<'_, [f32]>> {
        self.f32(self.find(storage)?)
    }

    pub fn storage_mut(&mut self, storage: Storage) -> Option<RefMut<'_, [f32]>> {
        let id = self.find(storage)?;
        self.f32_mut(id)
    }

    /// Copies `values` into the buffer with `storage`; the lengths must match.
    pub fn load(&mut self, storage: Storage, values: &[f32]) -> Result<(), BufferError> {
        let mut dst = self
            .storage_mut(storage)
            .ok_or(BufferError::Missing(storage))?;
        copy_checked(&format!("{storage:?}"), &mut dst, values)
    }

    fn set_ints(&mut self, storage: Storage, values: &[i32]) -> Result<(), BufferError> {
        let id = self.find(storage).ok_or(BufferError::Missing(storage))?;
        let dst = self.i32_mut(id).ok_or(BufferError::Missing(storage))?;
        copy_checked(&format!("{storage:?}"), dst, values)
    }

    /// Feeds one batch of input tokens (`[batch·seq]`).
    pub fn set_tokens(&mut self, tokens: &[i32]) -> Result<(), BufferError> {
        self.set_ints(Storage::Tokens, tokens)
    }

    /// Feeds the next-token targets (`[batch·seq]`).
    pub fn set_targets(&mut self, targets: &[i32]) -> Result<(), BufferError> {
        self.set_ints(Storage::Targets, targets)
    }

    /// Sets the learning rate of this step (after the schedule).
    pub fn set_lr(&mut self, lr: f32) -> Result<(), BufferError> {
        self.load(Storage::Lr, &[lr])
    }

    /// Sets the optimizer's step count (1 for the first step: bias correction).
    pub fn set_step(&mut self, step: f32) -> Result<(), BufferError> {
        self.load(Storage::Step, &[step])
    }

    /// The mean cross-entropy the last execution wrote.
    pub fn loss(&self) -> Option<f32> {
        self.storage(Storage::Loss)?.first().copied()
    }

    /// Borrows every buffer for one execution: the base address of each,
    /// indexed by `BufId`, is the table compiled kernels read their
    /// operands through. The vectors never reallocate after construction.
    /// Fails if a shared buffer is borrowed elsewhere.
    pub fn bind(&mut self) -> Result<Bound<'_>, BufferError> {
        let mut f32s = Vec::with_capacity(self.f32s.len());
        for (i, v) in self.f32s.iter().enumerate() {
            f32s.push(v.try_borrow_mut().map_err(|_| {
                let id = self.slots.iter().position(|s| *s == Slot::F32(i));
                BufferError::Busy(id.map_or("?", |id| &self.names[id]).to_string())
            })?);
        }
        let arena = self.arena.get_mut().as_mut_ptr();
        let f32_bases: Vec<*mut f32> = f32s.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let i32_bases: Vec<*mut i32> = self.i32s.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let pointers = self
            .slots
            .iter()
            .map(|s| match *s {
                Slot::F32(i) => f32_bases[i] as *mut u8,
                Slot::I32(i) => i32_bases[i] as *mut u8,
                // wrapping_add: no dereference here, and offset ≤ arena_len
                // was checked at construction.
                Slot::Arena { offset, .. } => arena.wrapping_add(offset) as *mut u8,
            })
            .collect();
        Ok(Bound {
            pointers,
            _f32s: f32s,
            _rest: PhantomData,
        })
    }
}

/// Every buffer of a [`ProgramBuffers`], borrowed for one execution.
pub struct Bound<'a> {
    pointers: Vec<*mut u8>,
    /// Held so that no other program sharing these buffers touches them.
    _f32s: Vec<RefMut<'a, Vec<f32>>>,
    /// The arena and I32 buffers, borrowed through `&mut ProgramBuffers`.
    _rest: PhantomData<&'a mut ()>,
}

impl Bound<'_> {
    /// Base address of every buffer, indexed by `BufId`; valid while `self` lives.
    pub fn pointers(&self) -> &[*mut u8] {
        &self.pointers
    }
}

/// Elements of a shared buffer.
fn len(v: &Shared, storage: Storage) -> Result<usize, BufferError> {
    let v = v
        .try_borrow()
        .map_err(|_| BufferError::Busy(format!("{storage:?}")))?;
    Ok(v.len())
}

fn copy_checked<T: Copy>(what: &str, dst: &mut [T], src: &[T]) -> Result<(), BufferError> {
    if dst.len() != src.len() {
        return Err(BufferError::Length {
            what: what.to_string(),
            want: dst.len(),
            got: src.len(),
        });
    }
    dst.copy_from_slice(src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsc_compiler::kernel::Buffer;

    fn buf(name: &str, dtype: DType, len: usize, storage: Storage) -> Buffer {
        Buffer {
            name: name.into(),
            dtype,
            len,
            storage,
        }
    }

    fn program() -> KernelProgram {
        KernelProgram {
            buffers: vec![
                buf("w", DType::F32, 6, Storage::Param(0)),
                buf("tokens", DType::I32, 4, Storage::Tokens),
                buf("tmp", DType::F32, 3, Storage::Arena { offset: 2 }),
                buf("w_out", DType::F32, 6, Storage::Param(0)),
                buf("lr", DType::F32, 1, Storage::Lr),
                buf("loss", DType::F32, 1, Storage::Loss),
            ],
            kernels: vec![],
            arena_len: 8,
        }
    }

    #[test]
    fn buffers_with_one_storage_share_memory() {
        let p = program();
        let mut b = ProgramBuffers::new(&p).unwrap();
        b.storage_mut(Storage::Param(0)).unwrap()[5] = 7.0;
        assert_eq!(b.f32(BufId(3)).unwrap()[5], 7.0);
        assert_eq!(b.slot(BufId(0)), b.slot(BufId(3)));
        let bound = b.bind().unwrap();
        assert_eq!(bound.pointers()[0], bound.pointers()[3]);
    }

    #[test]
    fn a_sharing_program_holds_the_owners_parameters() {
        let p = program();
        let mut owner = ProgramBuffers::new(&p).unwrap();
        let mut other = ProgramBuffers::sharing(&p, &owner).unwrap();
        owner.load(Storage::Param(0), &[1.0; 6]).unwrap();
        assert_eq!(&*other.storage(Storage::Param(0)).unwrap(), &[1.0; 6]);
        other.set_lr(0.5).unwrap();
        assert_eq!(
            &*owner.storage(Storage::Lr).unwrap(),
            &[0.0],
            "lr is not a parameter"
        );
        // One program running holds the shared buffers: the other cannot bind them.
        let bound = other.bind().unwrap();
        assert!(matches!(owner.bind(), Err(BufferError::Busy(name)) if name == "w"));
        drop(bound);
        owner.bind().unwrap();
        let mut q = program();
        q.buffers[0].len = 5;
        q.buffers[3].len = 5;
        assert!(matches!(
            ProgramBuffers::sharing(&q, &owner),
            Err(BufferError::Length { .. })
        ));
    }

    #[test]
    fn arena_buffers_are_views_at_their_offset() {
        let p = program();
        let mut b = ProgramBuffers::new(&p).unwrap();
        b.f32_mut(BufId(2))
            .unwrap()
            .copy_from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(&*b.arena(), &[0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
        assert_eq!(b.slot(BufId(2)), Some(Slot::Arena { offset: 2, len: 3 }));
    }

    #[test]
    fn inputs_are_fed_and_checked() {
        let p = program();
        let mut b = ProgramBuffers::new(&p).unwrap();
        b.set_tokens(&[1, 2, 3, 4]).unwrap();
        assert_eq!(b.i32(BufId(1)).unwrap(), &[1, 2, 3, 4]);
        assert!(matches!(
            b.set_tokens(&[1, 2]),
            Err(BufferError::Length {
                want: 4,
                got: 2,
                ..
            })
        ));
        assert_eq!(
            b.set_targets(&[1, 2, 3, 4]),
            Err(BufferError::Missing(Storage::Targets))
        );
        b.set_lr(0.5).unwrap();
        assert_eq!(&*b.storage(Storage::Lr).unwrap(), &[0.5]);
        assert_eq!(b.loss(), Some(0.0));
        assert!(b.set_step(1.0).is_err());
    }

    #[test]
    fn malformed_programs_are_refused() {
        let mut p = program();
        p.arena_len = 4;
        assert!(matches!(
            ProgramBuffers::new(&p),
            Err(BufferError::ArenaOverflow { id: 2, .. })
        ));
        let mut p = program();
        p.buffers[3].len = 5;
        assert!(matches!(
            ProgramBuffers::new(&p),
            Err(BufferError::Length { .. })
        ));
        let mut p = program();
        p.buffers[1].storage = Storage::Arena { offset: 0 };
        assert!(matches!(
            ProgramBuffers::new(&p),
            Err(BufferError::IntInArena { .. })
        ));
    }
}
