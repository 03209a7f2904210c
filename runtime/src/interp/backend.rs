//! The reference interpreter as a `Backend`, computing in `F` (f32 or f64)
//! whatever the training loop feeds it in f32.

use super::{run, Float, InterpError, Memory};
use crate::backend::{Backend, BackendError, Program};
use gsc_compiler::kernel::{KernelProgram, Storage};
use std::any::Any;
use std::marker::PhantomData;

pub struct InterpBackend<F>(PhantomData<F>);

impl<F> Default for InterpBackend<F> {
    fn default() -> Self {
        InterpBackend(PhantomData)
    }
}

struct Loaded<F> {
    program: KernelProgram,
    memory: Memory<F>,
}

fn err(e: InterpError) -> BackendError {
    BackendError {
        backend: "interp",
        message: e.to_string(),
    }
}

impl<F: Float + 'static> Backend for InterpBackend<F> {
    fn name(&self) -> &'static str {
        "interp"
    }

    fn load(&self, program: &KernelProgram) -> Result<Box<dyn Program>, BackendError> {
        Ok(Box::new(Loaded {
            program: program.clone(),
            memory: Memory::<F>::new(program),
        }))
    }

    fn load_sharing(
        &self,
        program: &KernelProgram,
        owner: &dyn Program,
    ) -> Result<Box<dyn Program>, BackendError> {
        let owner: &dyn Any = owner;
        let owner = owner
            .downcast_ref::<Loaded<F>>()
            .ok_or_else(|| BackendError {
                backend: "interp",
                message: "the program to share parameters with is not this interpreter's".into(),
            })?;
        Ok(Box::new(Loaded {
            program: program.clone(),
            memory: Memory::sharing(program, &owner.memory).map_err(err)?,
        }))
    }
}

impl<F: Float> Program for Loaded<F> {
    fn write(&mut self, s: Storage, data: &[f32]) -> Result<(), BackendError> {
        let data: Vec<F> = data.iter().map(|&x| F::from_f64(f64::from(x))).collect();
        self.memory.write(s, &data).map_err(err)
    }

    fn write_ints(&mut self, s: Storage, data: &[i32]) -> Result<(), BackendError> {
        self.memory.write_ints(s, data).map_err(err)
    }

    fn read(&self, s: Storage) -> Result<Vec<f32>, BackendError> {
        Ok(self
            .memory
            .read(s)
            .map_err(err)?
            .iter()
            .map(|x| x.to_f64() as f32)
            .collect())
    }

    fn run(&mut self) -> Result<(), BackendError> {
        run(&self.program, &mut self.memory).map_err(err)
    }

    fn code(&self) -> &'static str {
        "interpreter"
    }
}
