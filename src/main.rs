//! `gsc`: the Gradual Scaling Compiler's command line.

mod bench;
mod cli;
mod mlir;
mod run;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
