//! Ctrl-C (SIGINT) and SIGTERM, what a cluster scheduler sends before it
//! takes the node: the first asks the training loop to finish its step,
//! write a checkpoint and stop; a second one exits at once (checkpoints are
//! written atomically, so the last one stays intact).

use std::sync::atomic::{AtomicI32, Ordering};

const NOTICE_INT: &[u8] =
    b"\ngsc: SIGINT: finishing this step, then a checkpoint (Ctrl-C again exits at once)\n";
const NOTICE_TERM: &[u8] =
    b"\ngsc: SIGTERM: finishing this step, then a checkpoint (a second one exits at once)\n";

/// The first signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Installs the handlers (once per process), and makes a file-size limit
/// (`ulimit -f`) a write error, reported as such, instead of a kill.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let notice = match sig {
            libc::SIGINT => NOTICE_INT,
            _ => NOTICE_TERM,
        };
        // SAFETY: the handler only touches an atomic, write(2)s and calls
        // `_exit`, all async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                if RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
                    signal_hook::low_level::exit(exit_status(sig));
                }
                libc::write(2, notice.as_ptr().cast(), notice.len());
            })?;
        }
    }
    // SAFETY: ignoring a signal installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    Ok(())
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The shell's convention for a process ended by `sig`: 128 + its number
/// (130 for SIGINT, 143 for SIGTERM).
pub fn exit_status(sig: i32) -> i32 {
    128 + sig
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
