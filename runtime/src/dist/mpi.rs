//! The ranks of an `mpirun` job, through MPI (rsmpi over Open MPI). Only
//! the main thread calls MPI; the kernels' worker threads never do.

use super::Comm;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::cell::RefCell;

/// Elements per MPI call: counts are C ints.
const CHUNK: usize = 1 << 28;

pub struct Mpi {
    world: SimpleCommunicator,
    /// Rank 0's receive buffer for [`Comm::sum`].
    scratch: RefCell<Vec<f32>>,
    /// Finalizes MPI when dropped, after everything above.
    _universe: Universe,
}

impl Mpi {
    /// Joins the job its launcher started.
    pub fn init() -> Result<Mpi, String> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or("MPI was initialised twice")?;
        Ok(Mpi {
            world: universe.world(),
            scratch: RefCell::new(Vec::new()),
            _universe: universe,
        })
    }
}

impl Comm for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn ranks(&self) -> usize {
        self.world.size() as usize
    }

    /// A reduce to rank 0 and a broadcast from it, rather than an
    /// all-reduce: MPI lets an all-reduce add in a different order on each
    /// rank (recursive doubling does), and then the ranks' parameters would
    /// drift apart in their last bits.
    fn sum(&self, buf: &mut [f32]) {
        let root = self.world.process_at_rank(0);
        for part in buf.chunks_mut(CHUNK) {
            if self.rank() == 0 {
                let mut sum = self.scratch.borrow_mut();
                sum.resize(part.len(), 0.0);
                root.reduce_into_root(&*part, &mut sum[..], SystemOperation::sum());
                part.copy_from_slice(&sum);
            } else {
                root.reduce_into(&*part, SystemOperation::sum());
            }
            root.broadcast_into(part);
        }
    }

    fn max(&self, x: u64) -> u64 {
        let mut out = 0u64;
        self.world
            .all_reduce_into(&x, &mut out, SystemOperation::max());
        out
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        for part in bytes.chunks_mut(CHUNK) {
            root.broadcast_into(part);
        }
    }

    fn barrier(&self) {
        self.world.barrier();
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
