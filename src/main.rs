//! `gsc`: the Gradual Scaling Compiler's command line.

mod bench;
mod cli;
mod export;
mod generate;
mod limits;
mod lsp;
mod mlir;
mod pick;
mod ranks;
mod report;
mod run;
mod scaling;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A closed pipe (`gsc compile … | head`) ends gsc quietly, as it does
    // any Unix filter, instead of panicking in the middle of a print.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition, before any thread
    // or handler exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
