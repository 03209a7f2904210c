//! The markdown summary: the command that made it, one row per run, the
//! tokens per parameter of every stage, and the plots.

use super::measure::{Row, CLOSE};
use super::runs::{Run, Spent, Unit};
use std::fmt::Write;

pub fn markdown(
    command: &str,
    runs: &[Run],
    unit: Unit,
    rows: &[Row],
    plots: &[(String, String)],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Growth report\n\nMade by\n\n```sh\n{command}\n```\n");
    let _ = writeln!(
        md,
        "Every FLOP of every stage is charged, small stages included (6·N_non-embedding + \
         12·layers·d_model·context per token, as `gsc compile` counts). Each run is measured \
         against its reference, the from-scratch run of the same architecture, final size and \
         seed (or the one `--baseline` names): L\\* is the reference's final validation loss. \
         *to L\\** and *to {CLOSE} L\\** are where a run's validation loss first reaches them, \
         interpolated linearly between evaluations. Speed-up to L\\*: the reference's total \
         FLOPs ÷ the run's FLOPs to L\\*; to {CLOSE} L\\*: the reference's FLOPs to {CLOSE} L\\* ÷ \
         the run's. *Loss at equal FLOPs*: the run's validation loss where it had spent what \
         the reference spent in all.\n"
    );
    let _ = writeln!(
        md,
        "{}\n",
        match unit {
            Unit::BitsPerByte =>
                "Losses are validation losses in bits per byte, which compare across tokenizers.",
            Unit::Nats =>
                "Losses are validation losses in nats per token: some run did not log bits per \
                 byte (it predates them), and nats compare only between runs of one tokenizer.",
        }
    );
    let _ = writeln!(
        md,
        "| run | kind | reference | arch | seed | final params | tokens | tokens/param | FLOPs | final loss | L\\* | FLOPs to L\\* | speed-up | FLOPs to {CLOSE} L\\* | tokens to {CLOSE} L\\* | time to {CLOSE} L\\* | speed-up | loss at equal FLOPs |"
    );
    let _ = writeln!(md, "|{}", "---|".repeat(18));
    for (run, row) in runs.iter().zip(rows) {
        let spent = run.spent();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.3e} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.label,
            run.kind,
            row.reference.map_or("–", |i| runs[i].label.as_str()),
            run.arch,
            run.seed,
            count(run.final_params as f64),
            count(spent.tokens),
            spent.tokens / run.final_params.max(1) as f64,
            spent.flops,
            loss(run.final_loss()),
            loss(row.target),
            flops(row.reach),
            ratio(row.speedup),
            flops(row.close),
            row.close.map_or("–".into(), |s| count(s.tokens)),
            row.close.map_or("–".into(), |s| format!("{:.0} s", s.seconds)),
            ratio(row.speedup_close),
            loss(row.loss_at_equal_flops),
        );
    }
    let _ = writeln!(
        md,
        "\n## Stages\n\n| run | stage | params | tokens | tokens/param |\n|---|---|---|---|---|"
    );
    for run in runs {
        for s in &run.stages {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                run.label,
                s.name,
                count(s.params as f64),
                s.tokens.map_or("–".into(), count),
                s.tokens.map_or("–".into(), |t| format!(
                    "{:.2}",
                    t / s.params.max(1) as f64
                )),
            );
        }
    }
    let _ = writeln!(md, "\n## Plots\n\nDots mark growths.\n");
    for (file, caption) in plots {
        let _ = writeln!(md, "![{caption}]({file})\n");
    }
    md
}

fn count(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2}G", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e3 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

fn loss(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.4}"))
}

fn flops(s: Option<Spent>) -> String {
    s.map_or("–".into(), |s| format!("{:.3e}", s.flops))
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}×"))
}
