//! `gsc compile --emit=plan --ranks N`: what data parallelism over N ranks
//! costs each stage — the bytes all-reduced per step and how long that
//! takes on a given link against the step's compute, and each rank's
//! memory, replicated as `gsc run` keeps it and sharded ZeRO/FSDP-style
//! (docs/scaling.md explains the model behind every column).

use crate::limits::{program_memory, Bytes};
use gsc_compiler::compile_split_step;
use gsc_compiler::graph::Gates;
use gsc_compiler::plan::{Plan, StagePlan};
use std::fmt::Write;

/// The machine the view assumes: each rank's link and its compute.
#[derive(Clone, Copy, Debug)]
pub struct Cluster {
    pub ranks: usize,
    /// Bytes per second each rank sends (and receives) at once, GB/s.
    pub link_gbps: f64,
    /// Per message, microseconds.
    pub latency_us: f64,
    /// Each rank's sustained FLOP/s, in GFLOP/s.
    pub peak_gflops: f64,
}

/// One stage's costs at `ranks` ranks.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCost {
    pub params: u64,
    /// Sequences each rank trains per step (the global batch over the
    /// ranks; a fraction where it does not divide, which `gsc run` refuses).
    pub local_batch: f64,
    /// The gradients all-reduced every step, f32.
    pub grad_bytes: u64,
    /// Sent by each rank per step in a ring all-reduce: 2 (N−1)/N of them.
    pub ring_bytes: f64,
    pub allreduce_s: f64,
    pub compute_s: f64,
    /// Every rank holds parameters, gradients and both moments (gsc run).
    pub replicated: u64,
    /// ZeRO-1: the moments sharded over the ranks.
    pub zero1: u64,
    /// ZeRO-3 / FSDP: parameters, gradients and moments all sharded.
    pub fsdp: u64,
}

/// The costs of `stage` on `cluster`.
pub fn stage_cost(stage: &StagePlan, cluster: &Cluster) -> Result<StageCost, String> {
    let n = cluster.ranks.max(1);
    let p = stage.param_count as u64;
    let grad_bytes = 4 * p;
    let ring_bytes = 2.0 * (n - 1) as f64 / n as f64 * grad_bytes as f64;
    let allreduce_s = if n == 1 {
        0.0
    } else {
        ring_bytes / (cluster.link_gbps * 1e9) + 2.0 * (n - 1) as f64 * cluster.latency_us * 1e-6
    };
    let local_batch = stage.train.batch as f64 / n as f64;
    let compute_s = stage.flops_per_token * stage.tokens_per_step() as f64
        / n as f64
        / (cluster.peak_gflops * 1e9);
    // Activations: the gradient program of one rank's share, rounded up to
    // whole sequences.
    let share = stage.train.batch.div_ceil(n);
    let split = compile_split_step(&stage.model, &stage.train, share, Gates::of(stage))
        .map_err(|e| format!("compiling stage `{}`: {e}", stage.name))?;
    let act = program_memory(&split.grads, true).activations;
    let state = 16 * p; // parameters, gradients, two moments: f32 each
    Ok(StageCost {
        params: p,
        local_batch,
        grad_bytes,
        ring_bytes,
        allreduce_s,
        compute_s,
        replicated: state + act,
        zero1: 8 * p + 8 * p / n as u64 + act,
        fsdp: state / n as u64 + act,
    })
}

fn seconds(s: f64) -> String {
    if s == 0.0 {
        "-".into()
    } else if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// The view as text: one row per stage of every run.
pub fn table(plan: &Plan, cluster: &Cluster) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ndata parallel over {} ranks: a ring all-reduce of the f32 gradients every step on \
         {} GB/s links ({} µs a message), {} GFLOP/s a rank",
        cluster.ranks, cluster.link_gbps, cluster.latency_us, cluster.peak_gflops
    );
    let _ = writeln!(
        out,
        "{:<18} {:>11} {:>7} {:>11} {:>11} {:>10} {:>6} | {:>10} {:>10} {:>10}",
        "stage",
        "params",
        "batch/r",
        "all-reduce",
        "all-red. t",
        "compute t",
        "comm%",
        "replicated",
        "ZeRO-1",
        "FSDP"
    );
    let mut uneven = false;
    for run in &plan.runs {
        for s in &run.stages {
            let c = stage_cost(s, cluster)?;
            let divides = s.train.batch.is_multiple_of(cluster.ranks.max(1));
            uneven |= !divides;
            let comm = c.allreduce_s / (c.allreduce_s + c.compute_s);
            let _ = writeln!(
                out,
                "{:<18} {:>11} {:>7} {:>11} {:>11} {:>10} {:>5.0}% | {:>10} {:>10} {:>10}",
                format!("{}.{}", run.name, s.name),
                c.params,
                if divides {
                    format!("{}", c.local_batch)
                } else {
                    format!("{:.2}*", c.local_batch)
                },
                Bytes(c.grad_bytes).to_string(),
                seconds(c.allreduce_s),
                seconds(c.compute_s),
                comm * 100.0,
                Bytes(c.replicated).to_string(),
                Bytes(c.zero1).to_string(),
                Bytes(c.fsdp).to_string(),
            );
        }
    }
    if uneven {
        let _ = writeln!(
            out,
            "* the global batch does not divide among the ranks: gsc run refuses it (raise \
             train.batch to a multiple of {})",
            cluster.ranks
        );
    }
    let _ = writeln!(
        out,
        "comm% is the all-reduce's share of a step that does not overlap it with the \
         backward pass; memory is per rank, activations of its share included"
    );
    Ok(out)
}
