//! `gsc report RUN_DIR…`: what growing bought. For every run, the compute it
//! needed (every stage charged) to reach the final validation loss of the
//! from-scratch run of its final shape, and to come within 0.5 % of it;
//! the loss at equal compute; the speed-ups; the tokens per parameter of
//! every stage. Writes plots of the validation loss against FLOPs and
//! against tokens (SVG and PNG) and a markdown summary. Losses are in bits
//! per byte when every run logged them, so that runs with different
//! tokenizers compare; else in nats per token.

mod measure;
mod plot;
mod runs;
mod summary;

use std::path::PathBuf;

pub struct ReportArgs {
    pub dirs: Vec<PathBuf>,
    pub out: PathBuf,
    /// The label of the run every other is measured against (by default,
    /// the from-scratch run of the same architecture, final size and seed).
    pub baseline: Option<String>,
    /// The command line that made the report, written into it.
    pub command: String,
}

/// Returns false after printing what went wrong.
pub fn report(args: ReportArgs) -> bool {
    match try_report(&args) {
        Ok(()) => true,
        Err(message) => {
            eprintln!("error: {message}");
            false
        }
    }
}

fn try_report(args: &ReportArgs) -> Result<(), String> {
    let (runs, unit) = runs::load(&args.dirs)?;
    let rows = measure::compare(&runs, args.baseline.as_deref())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    let plots = plot::write(&runs, unit, &args.out)?;
    let text = summary::markdown(&args.command, &runs, unit, &rows, &plots);
    let path = args.out.join("report.md");
    gsc_runtime::fsutil::write_atomic(&path, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    print!("{text}");
    eprintln!("report written to {}", path.display());
    Ok(())
}
