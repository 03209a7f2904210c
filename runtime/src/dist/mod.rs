//! Data parallelism: the ranks of a job and the collectives its training
//! step needs. Every rank holds the whole model and optimizer state, takes
//! its share of each global batch, and applies the same update from the
//! gradients summed over all ranks, so every rank holds the same bits.
//!
//! One process is [`Solo`]; under `mpirun` (the `mpi` feature), [`Mpi`].

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "mpi")]
pub use self::mpi::Mpi;

use crate::data::Batch;

/// What the training loop asks of the other ranks. Every call is
/// collective: each rank makes the same calls in the same order.
pub trait Comm {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn ranks(&self) -> usize;
    /// Replaces `buf` on every rank by its sum over all ranks, the same
    /// bits everywhere (added in one fixed order, not each rank its own).
    fn sum(&self, buf: &mut [f32]);
    /// The largest of every rank's `x`.
    fn max(&self, x: u64) -> u64;
    /// The smallest of every rank's `x`.
    fn min(&self, x: u64) -> u64 {
        u64::MAX - self.max(u64::MAX - x)
    }
    /// Rank 0's `bytes`, on every rank.
    fn broadcast(&self, bytes: &mut Vec<u8>);
    /// Returns once every rank has called it.
    fn barrier(&self);
    /// Ends every rank of the job with `code`, where a rank cannot go on:
    /// the others would wait for it forever in their next collective.
    fn abort(&self, code: i32) -> !;
}

/// A job of one process: every collective is the identity.
#[derive(Default)]
pub struct Solo;

impl Comm for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn ranks(&self) -> usize {
        1
    }
    fn sum(&self, _: &mut [f32]) {}
    fn max(&self, x: u64) -> u64 {
        x
    }
    fn broadcast(&self, _: &mut Vec<u8>) {}
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// How many ranks the launcher started, from the variables Open MPI
/// (`OMPI_COMM_WORLD_SIZE`) and MPICH-style launchers (`PMI_SIZE`) set;
/// 1 outside a launcher.
pub fn launched_ranks() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(1)
}

/// The job this process belongs to: [`Solo`] alone, [`Mpi`] when a
/// launcher started several ranks (an error if this build has no MPI).
pub fn join() -> Result<Box<dyn Comm>, String> {
    let n = launched_ranks();
    if n <= 1 {
        return Ok(Box::new(Solo));
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(Mpi::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    Err(format!(
        "started as one of {n} ranks, but this gsc was built without MPI: build it with \
         `cargo build --release --features mpi` (Open MPI's libopenmpi-dev)"
    ))
}

/// Sequences of a global batch of `batch` each of `ranks` ranks takes;
/// an error unless they divide evenly (the ranks' mean losses then average
/// to the global batch's).
pub fn local_batch(batch: usize, ranks: usize) -> Result<usize, String> {
    if ranks == 0 || !batch.is_multiple_of(ranks) {
        return Err(format!(
            "a global batch of {batch} sequences does not divide among {ranks} ranks: choose \
             a batch that is a multiple of the number of ranks"
        ));
    }
    Ok(batch / ranks)
}

impl Batch {
    /// Rank `rank`'s share of this batch among `ranks`: its sequences
    /// `rank·b .. (rank+1)·b`, `b = batch / ranks` (which must divide).
    pub fn shard(&self, rank: usize, ranks: usize) -> Batch {
        let b = self.batch / ranks;
        let span = rank * b * self.context..(rank + 1) * b * self.context;
        Batch {
            batch: b,
            context: self.context,
            inputs: self.inputs[span.clone()].to_vec(),
            targets: self.targets[span].to_vec(),
        }
    }
}

/// The hash of the f32 bits of every tensor in `tensors` (as the ranks
/// hold them): ranks compare it to check that they hold the same state.
pub fn digest<'a>(tensors: impl IntoIterator<Item = &'a [f64]>) -> u64 {
    let bytes: Vec<Vec<u8>> = tensors
        .into_iter()
        .map(|t| t.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect())
        .collect();
    let hex = gsc_compiler::fnv::hash_parts(bytes.iter().map(Vec::as_slice));
    u64::from_str_radix(&hex, 16).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_batch_in_rank_order() {
        let b = Batch {
            batch: 4,
            context: 2,
            inputs: (0..8).collect(),
            targets: (10..18).collect(),
        };
        let parts: Vec<Batch> = (0..2).map(|r| b.shard(r, 2)).collect();
        assert_eq!(parts[0].inputs, [0, 1, 2, 3]);
        assert_eq!(parts[1].targets, [14, 15, 16, 17]);
        assert!(parts.iter().all(|p| p.batch == 2 && p.context == 2));
    }

    #[test]
    fn a_batch_must_divide_among_the_ranks() {
        assert_eq!(local_batch(8, 2), Ok(4));
        let e = local_batch(6, 4).unwrap_err();
        assert!(e.contains("6 sequences") && e.contains("4 ranks"), "{e}");
    }

    #[test]
    fn solo_collectives_are_the_identity() {
        let mut x = [1.5f32, -2.0];
        Solo.sum(&mut x);
        assert_eq!(x, [1.5, -2.0]);
        assert_eq!((Solo.max(7), Solo.min(7)), (7, 7));
    }

    #[test]
    fn digest_sees_every_bit() {
        let a = [1.0, 2.0];
        let b = [1.0, 2.0 + 1e-6];
        assert_ne!(digest([&a[..]]), digest([&b[..]]));
        assert_eq!(digest([&a[..]]), digest([&a[..]]));
    }
}
