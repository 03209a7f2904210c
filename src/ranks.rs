//! `gsc run` as one rank of a data-parallel job: who prints, where each
//! rank's log goes, and how the ranks agree on their run directory.

use gsc_runtime::dist::Comm;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Ranks other than 0 print nothing to the terminal (their errors still
/// reach it): rank 0 speaks for the job.
pub fn quiet_others(comm: &dyn Comm) -> Result<(), String> {
    if comm.rank() == 0 {
        return Ok(());
    }
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    redirect(&null, &[libc::STDOUT_FILENO])
}

/// Sends this rank's output (stdout and stderr) to `RUN_DIR/ranks/rank-N.log`,
/// which starts with the rank's process id and host.
pub fn log_to_file(comm: &dyn Comm, run_dir: &Path) -> Result<(), String> {
    let dir = run_dir.join("ranks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("rank-{}.log", comm.rank()));
    if comm.rank() == 0 {
        println!("each rank logs to {}", dir.join("rank-N.log").display());
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    redirect(&file, &[libc::STDOUT_FILENO, libc::STDERR_FILENO])?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    println!(
        "rank {} of {}: pid {}, host {}",
        comm.rank(),
        comm.ranks(),
        std::process::id(),
        host.trim()
    );
    Ok(())
}

fn redirect(to: &std::fs::File, fds: &[i32]) -> Result<(), String> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    for &fd in fds {
        // SAFETY: dup2 onto the standard descriptors of this process;
        // `to` stays open for the duration of the call.
        if unsafe { libc::dup2(to.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "redirecting the output: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The run directory rank 0 made (`made`, on rank 0), on every rank.
pub fn agree_on_dir(comm: &dyn Comm, made: Option<&Path>) -> PathBuf {
    let mut bytes = made.map_or_else(Vec::new, |p| p.as_os_str().as_encoded_bytes().to_vec());
    comm.broadcast(&mut bytes);
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

/// An error, before anything runs, if the job cannot train `plan`: every
/// stage's batch must divide among the ranks, and only the CPU backends
/// sum gradients across ranks.
pub fn check_plan(
    comm: &dyn Comm,
    plan: &gsc_compiler::plan::Plan,
    backend: crate::run::BackendKind,
) -> Result<(), String> {
    let ranks = comm.ranks();
    if ranks == 1 {
        return Ok(());
    }
    if backend == crate::run::BackendKind::Cuda {
        return Err(format!(
            "{ranks} ranks on the cuda backend: data-parallel training runs on the CPU \
             backends (cpu, mlir, interp, interp64)"
        ));
    }
    for run in &plan.runs {
        for s in &run.stages {
            gsc_runtime::dist::local_batch(s.train.batch, ranks)
                .map_err(|e| format!("stage `{}.{}`: {e}", run.name, s.name))?;
        }
    }
    Ok(())
}
