//! Subcommands. Exit codes: 0 success, 1 a problem with the user's input
//! (diagnostics were printed), 2 bad usage (clap's own).

use crate::{bench, run};
use clap::{Parser, Subcommand, ValueEnum};
use gsc_compiler::plan::{render, Plan, RunPlan, StagePlan};
use gsc_compiler::{check_source, syntax, Checked};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gsc",
    version,
    about = "The Gradual Scaling Compiler: train a language model while growing it in place"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check .gs files and print their diagnostics; exit 1 on any error.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a setting, e.g. `--set train.batch=32` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Compile a .gs file and print one level of the lowering.
    Compile {
        file: PathBuf,
        /// What to print.
        #[arg(long, value_enum, default_value_t = Emit::Plan)]
        emit: Emit,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Override a setting, e.g. `--set train.batch=32` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The stage to lower for ir, ir-grad, kernels, mlir and ptx (default:
        /// the first); `RUN.STAGE` picks one of another run.
        #[arg(long)]
        stage: Option<String>,
        /// The device that mlir lowers for (ptx implies cuda).
        #[arg(long, value_enum, default_value_t = Target::Cpu)]
        target: Target,
        /// The GPU architectures for cuda (sm_80, sm_90, …; several,
        /// comma-separated, for --emit=artifact).
        #[arg(long, default_value = "sm_90", value_delimiter = ',')]
        chip: Vec<String>,
        /// With the plan: what data parallelism over N ranks costs each
        /// stage (all-reduce bytes and time against compute, memory per rank).
        #[arg(long, value_name = "N")]
        ranks: Option<usize>,
        /// Each rank's link for --ranks, in GB/s.
        #[arg(long, default_value_t = 25.0, requires = "ranks")]
        link_gbps: f64,
        /// The latency of one message for --ranks, in microseconds.
        #[arg(long, default_value_t = 5.0, requires = "ranks")]
        latency_us: f64,
        /// Each rank's sustained GFLOP/s for --ranks.
        #[arg(long, default_value_t = 548.0, requires = "ranks")]
        peak_gflops: f64,
    },
    /// Train every run of a .gs file (growing between stages), or resume one.
    Run {
        /// The .gs file (not needed with --resume).
        #[arg(required_unless_present = "resume")]
        file: Option<PathBuf>,
        /// Override a setting, e.g. `--set train.batch=32` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["file", "set"])]
        resume: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = run::BackendKind::Cpu)]
        backend: run::BackendKind,
        /// Run this compiled artifact (`gsc compile --emit=artifact`, with
        /// `--target cuda` for PTX) instead of compiling the file.
        #[arg(long, value_name = "FILE", conflicts_with = "resume")]
        artifact: Option<PathBuf>,
        /// Where run directories go.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Train only the run (schedule or comparison) of this name.
        #[arg(long = "run", value_name = "NAME")]
        only: Option<String>,
        /// Train at most N steps in every stage: a quick pass through every
        /// stage and growth of every run (kept by --resume).
        #[arg(long, value_name = "N", conflicts_with = "resume")]
        max_stage_steps: Option<u64>,
        /// Periodic checkpoints to keep per run, the newest [default: 3, or
        /// what the resumed run was started with]; the ones just before and
        /// after every growth are always kept.
        #[arg(long, value_name = "N")]
        keep_checkpoints: Option<usize>,
        /// Peak GFLOP/s of the machine, for MFU (both cores of the reference machine).
        #[arg(long, default_value_t = 548.0)]
        peak_gflops: f64,
        /// Train even if the memory or disk space the run needs (checked
        /// before it starts) is not there.
        #[arg(long)]
        no_limits: bool,
        /// Resume although a data file changed since the run last read it
        /// (logged in metrics.jsonl).
        #[arg(long, requires = "resume")]
        allow_data_change: bool,
        /// Under mpirun: every rank logs to RUN_DIR/ranks/rank-N.log (by
        /// default rank 0 prints and the others are quiet).
        #[arg(long)]
        rank_logs: bool,
    },
    /// Check checkpoint files: every tensor and the metadata against their
    /// checksums. Exit 1 if any file is damaged.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Compare finished (or running) runs: the compute each needed to reach
    /// the loss of the from-scratch run of its final shape, plots of the
    /// validation loss against FLOPs and tokens, and a markdown summary.
    Report {
        /// Run directories (`runs/NAME-STAMP`), each with one or more runs.
        #[arg(required = true, value_name = "RUN_DIR")]
        dirs: Vec<PathBuf>,
        /// Where report.md and the plots go.
        #[arg(long, default_value = "report")]
        out: PathBuf,
        /// Measure every run against the run of this label (by default, each
        /// against the scratch run of its architecture, final size and seed).
        #[arg(long, value_name = "LABEL")]
        baseline: Option<String>,
    },
    /// Export a checkpoint as a Hugging Face model directory (config.json,
    /// model.safetensors, tokenizer files): a Llama where the model is one,
    /// otherwise with gsc's modeling file (`trust_remote_code=True`).
    Export {
        /// A run directory (`runs/NAME-STAMP`) or a checkpoint file.
        source: PathBuf,
        /// The run of the directory to export (needed when it holds several).
        #[arg(long = "run", value_name = "NAME")]
        run: Option<String>,
        /// The checkpoint at this step [default: the newest]; at a growth,
        /// the grown model (name the `growth-NN-before` file for the other).
        #[arg(long)]
        step: Option<u64>,
        /// The format to write.
        #[arg(long, value_enum, default_value_t = ExportFormat::Hf)]
        to: ExportFormat,
        /// The folder to write (new or empty).
        out: PathBuf,
        /// Overwrite files in a folder that is not empty.
        #[arg(long)]
        force: bool,
    },
    /// Sample text from a checkpoint on the CPU, with a KV cache.
    Generate {
        /// A run directory (`runs/NAME-STAMP`) or a checkpoint file.
        source: PathBuf,
        /// The run of the directory (needed when it holds several).
        #[arg(long = "run", value_name = "NAME")]
        run: Option<String>,
        /// The checkpoint at this step [default: the newest].
        #[arg(long)]
        step: Option<u64>,
        /// The text to continue.
        #[arg(long, default_value = "\n")]
        prompt: String,
        /// Tokens to generate.
        #[arg(long, short = 'n', default_value_t = 200)]
        tokens: usize,
        /// Softmax temperature; 0 takes the most likely token every time.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Draw only from the K most likely tokens.
        #[arg(long, value_name = "K")]
        top_k: Option<usize>,
        /// Draw only from the most likely tokens whose probabilities sum to P.
        #[arg(long, value_name = "P")]
        top_p: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train the reference workloads (S, M) on the CPU backend and print one
    /// JSON line each: median ms/step, tokens/s, GFLOP/s, MFU, peak RSS.
    Bench {
        /// Workloads: S (4 layers, d 256) and M (6 layers, d 384), batch 16 × 256;
        /// G (GPT-2 small: 12 layers, d 768), batch 8 × 1024.
        #[arg(default_values = ["S", "M"])]
        models: Vec<String>,
        #[arg(long, value_enum, default_value_t = ArchArg::Gpt)]
        arch: ArchArg,
        #[arg(long, value_enum, default_value_t = run::BackendKind::Cpu)]
        backend: run::BackendKind,
        /// The number format of the matrix products (`precision` in .gs).
        #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
        precision: PrecisionArg,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Peak GFLOP/s of the machine, for MFU.
        #[arg(long, default_value_t = 548.0)]
        peak_gflops: f64,
        /// Run the first workload in this process (used per workload, for RSS).
        #[arg(long, hide = true)]
        single: bool,
        /// With --backend cuda: the folder of PTX to run (made by --emit-ptx
        /// where gsc has MLIR).
        #[arg(long, value_name = "DIR")]
        ptx: Option<PathBuf>,
        /// Write the workloads' PTX for --chip into DIR and train nothing
        /// (needs MLIR).
        #[arg(long, value_name = "DIR")]
        emit_ptx: Option<PathBuf>,
        /// The GPU architectures of --emit-ptx (comma-separated).
        #[arg(long, default_value = "sm_80", value_delimiter = ',')]
        chip: Vec<String>,
    },
    /// Serve the Language Server Protocol on stdin and stdout, for editors:
    /// diagnostics as you type, formatting, hover and completion.
    Lsp,
    /// Rewrite .gs files in canonical form (comments are kept).
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 if any file is not in canonical form.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Emit {
    /// The syntax tree, with byte spans.
    Ast,
    /// Every stage's shapes, parameters and FLOPs, the growth steps, the totals.
    Plan,
    /// One stage's forward graph.
    Ir,
    /// One stage's forward, backward and optimizer step.
    IrGrad,
    /// One stage's training step as fused kernels, with their count and peak memory.
    Kernels,
    /// One stage's loop kernels in MLIR (scf, arith, math, memref) for --target.
    Mlir,
    /// One stage's loop kernels as PTX for --chip (the cuda target).
    Ptx,
    /// The compiled artifact of every stage as JSON (what `gsc run` caches);
    /// with --target cuda, with PTX of every program for each --chip.
    Artifact,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Target {
    /// The host CPU (MLIR's ExecutionEngine, `gsc run --backend mlir`).
    Cpu,
    /// NVIDIA GPUs, through the gpu and NVVM dialects.
    Cuda,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum PrecisionArg {
    F32,
    Bf16,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ArchArg {
    Gpt,
    Ngpt,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ExportFormat {
    /// A Hugging Face transformers model directory.
    Hf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.command {
        Command::Check { files, set } => files.iter().filter(|f| !check(f, &set)).count() == 0,
        Command::Compile {
            file,
            emit,
            format,
            set,
            stage,
            target,
            chip,
            ranks,
            link_gbps,
            latency_us,
            peak_gflops,
        } => {
            let cluster = ranks.map(|ranks| crate::scaling::Cluster {
                ranks,
                link_gbps,
                latency_us,
                peak_gflops,
            });
            compile(
                &file,
                emit,
                format,
                &set,
                stage.as_deref(),
                (target, &chip),
                cluster,
            )
        }
        Command::Run {
            file,
            set,
            resume,
            backend,
            artifact,
            runs_dir,
            only,
            max_stage_steps,
            keep_checkpoints,
            peak_gflops,
            no_limits,
            allow_data_change,
            rank_logs,
        } => run::run(
            run::RunArgs {
                file,
                set,
                resume,
                backend,
                artifact,
                runs_dir,
                only,
                max_stage_steps,
                keep_checkpoints,
                peak_gflops,
                no_limits,
                allow_data_change,
                rank_logs,
            },
            color(),
        ),
        Command::Verify { files } => files.iter().filter(|f| !verify(f)).count() == 0,
        Command::Report {
            dirs,
            out,
            baseline,
        } => crate::report::report(crate::report::ReportArgs {
            dirs,
            out,
            baseline,
            command: command_line(),
        }),
        Command::Export {
            source,
            run,
            step,
            to: ExportFormat::Hf,
            out,
            force,
        } => crate::export::export(&crate::export::ExportArgs {
            source,
            run,
            step,
            out,
            force,
        }),
        Command::Generate {
            source,
            run,
            step,
            prompt,
            tokens,
            temperature,
            top_k,
            top_p,
            seed,
        } => crate::generate::generate(&crate::generate::GenerateArgs {
            source,
            run,
            step,
            // The default prompt is written `\n` in --help; it means a newline.
            prompt: if prompt == "\\n" { "\n".into() } else { prompt },
            tokens,
            sampling: gsc_runtime::infer::Sampling {
                temperature,
                top_k,
                top_p,
                seed,
            },
        }),
        Command::Bench {
            models,
            arch,
            backend,
            precision,
            steps,
            warmup,
            peak_gflops,
            single,
            ptx,
            emit_ptx,
            chip,
        } => {
            let arch = match arch {
                ArchArg::Gpt => gsc_compiler::plan::Arch::Gpt,
                ArchArg::Ngpt => gsc_compiler::plan::Arch::Ngpt,
            };
            match emit_ptx {
                Some(dir) => bench::emit_ptx(&models, arch, &dir, &chip),
                None => {
                    let args = bench::BenchArgs {
                        arch,
                        backend,
                        precision: match precision {
                            PrecisionArg::F32 => gsc_compiler::plan::Precision::F32,
                            PrecisionArg::Bf16 => gsc_compiler::plan::Precision::Bf16,
                        },
                        steps: steps.max(1),
                        warmup,
                        peak_gflops,
                        ptx,
                    };
                    bench::bench(&models, &args, single)
                }
            }
        }
        Command::Fmt { files, check } => files.iter().filter(|f| !fmt(f, check)).count() == 0,
        Command::Lsp => crate::lsp::serve(),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn read(path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(_) => {
                eprintln!("error: `{}` is not UTF-8 text", path.display());
                None
            }
        },
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            None
        }
    }
}

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Reads and checks one file, printing its diagnostics to stderr.
fn checked(path: &Path, set: &[String]) -> Option<Checked> {
    let source = read(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let c = check_source(&path.display().to_string(), &source, base, set);
    if !c.report.diags.is_empty() {
        eprint!("{}", c.report.render(color()));
    }
    Some(c)
}

fn check(path: &Path, set: &[String]) -> bool {
    checked(path, set).is_some_and(|c| !c.report.has_errors())
}

fn compile(
    path: &Path,
    emit: Emit,
    format: Format,
    set: &[String],
    stage: Option<&str>,
    (target, chips): (Target, &[String]),
    cluster: Option<crate::scaling::Cluster>,
) -> bool {
    if cluster.is_some() && (emit != Emit::Plan || format != Format::Text) {
        eprintln!("error: --ranks goes with --emit=plan (as text)");
        return false;
    }
    let Some(c) = checked(path, set) else {
        return false;
    };
    match emit {
        Emit::Ast => match (&c.ast, format) {
            (Some(ast), Format::Json) => println!("{}", to_json(ast)),
            (Some(ast), Format::Text) => println!("{ast:#?}"),
            (None, _) => return false,
        },
        Emit::Artifact => {
            let Some(plan) = &c.plan else { return false };
            let Some(source) = read(path) else {
                return false;
            };
            let hash = run::artifact_hash(&source, set);
            let mut artifact = match gsc_runtime::run::artifact::Artifact::compile(plan, &hash) {
                Ok(a) => a,
                Err((stage, e)) => {
                    eprintln!(
                        "error: compiling stage `{stage}` of {}: {e}",
                        path.display()
                    );
                    return false;
                }
            };
            if target == Target::Cuda && !crate::mlir::add_ptx(&mut artifact, chips) {
                return false;
            }
            println!("{}", to_json(&artifact));
        }
        Emit::Plan => match (&c.plan, format) {
            (Some(plan), Format::Json) => println!("{}", to_json(plan)),
            (Some(plan), Format::Text) => {
                print!("{}", render::plan_text(plan));
                if let Some(cluster) = &cluster {
                    match crate::scaling::table(plan, cluster) {
                        Ok(t) => print!("{t}"),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return false;
                        }
                    }
                }
            }
            (None, _) => return false,
        },
        Emit::Ir | Emit::IrGrad | Emit::Kernels | Emit::Mlir | Emit::Ptx => {
            let Some(plan) = &c.plan else { return false };
            let Some((run, st)) = pick_stage(plan, stage) else {
                return false;
            };
            let gates = gsc_compiler::graph::Gates::of(st);
            let compiled = match gsc_compiler::compile_stage_gated(
                &st.model,
                &st.train,
                st.train.batch,
                gates,
            ) {
                Ok(compiled) => compiled,
                Err(e) => {
                    eprintln!(
                        "error: compiling stage `{}.{}` of {}: {e}",
                        run.name,
                        st.name,
                        path.display()
                    );
                    return false;
                }
            };
            if matches!(emit, Emit::Mlir | Emit::Ptx) {
                let header = format!("stage {}.{} of {}", run.name, st.name, path.display());
                let Some(chip) = chips.first() else {
                    eprintln!("error: --chip names no GPU architecture");
                    return false;
                };
                return crate::mlir::print(
                    &compiled.kernels,
                    emit == Emit::Ptx,
                    target,
                    chip,
                    &header,
                ) && !c.report.has_errors();
            }
            match format {
                Format::Json => match emit {
                    Emit::Ir => println!("{}", to_json(&compiled.forward)),
                    Emit::IrGrad => println!("{}", to_json(&compiled.with_grad)),
                    _ => println!("{}", to_json(&compiled.kernels)),
                },
                Format::Text => {
                    println!("// stage {}.{} of {}", run.name, st.name, path.display());
                    print!(
                        "{}",
                        match emit {
                            Emit::Ir => gsc_compiler::render_ir(&compiled),
                            Emit::IrGrad => gsc_compiler::render_ir_grad(&compiled),
                            _ => gsc_compiler::render_kernels(&compiled),
                        }
                    );
                }
            }
        }
    }
    !c.report.has_errors()
}

/// `--stage NAME` or `--stage RUN.NAME`; the first stage of the first run by default.
fn pick_stage<'p>(plan: &'p Plan, wanted: Option<&str>) -> Option<(&'p RunPlan, &'p StagePlan)> {
    let all = || {
        plan.runs
            .iter()
            .flat_map(|r| r.stages.iter().map(move |s| (r, s)))
    };
    let found = match wanted {
        None => all().next(),
        Some(w) => all().find(|(r, s)| s.name == w || format!("{}.{}", r.name, s.name) == w),
    };
    if found.is_none() {
        let names: Vec<String> = all()
            .map(|(r, s)| format!("{}.{}", r.name, s.name))
            .collect();
        eprintln!(
            "error: no stage `{}`; the stages are: {}",
            wanted.unwrap_or(""),
            names.join(", ")
        );
    }
    found
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("plans and ASTs are plain data")
}

fn fmt(path: &Path, check_only: bool) -> bool {
    let Some(source) = read(path) else {
        return false;
    };
    let file = match syntax::parse(&source) {
        Ok(f) => f,
        Err(d) => {
            let report = gsc_compiler::diag::Report {
                name: path.display().to_string(),
                source,
                diags: vec![d],
            };
            eprint!("{}", report.render(color()));
            return false;
        }
    };
    let formatted = syntax::format::format(&source, &file);
    if formatted == source {
        return true;
    }
    if check_only {
        eprintln!(
            "{} is not formatted; run `gsc fmt {}`",
            path.display(),
            path.display()
        );
        return false;
    }
    match gsc_runtime::fsutil::write_atomic(path, formatted.as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            false
        }
    }
}

/// This process's command line, quoted for a POSIX shell where needed.
fn command_line() -> String {
    let quote = |a: String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    let mut args = std::env::args();
    let program = args.next().map_or("gsc".into(), |p| {
        Path::new(&p)
            .file_name()
            .map_or(p.clone(), |f| f.to_string_lossy().into_owned())
    });
    std::iter::once(program)
        .chain(args.map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per checkpoint: what it holds, or what is wrong with it.
fn verify(path: &Path) -> bool {
    match gsc_runtime::checkpoint::Checkpoint::load(path) {
        Ok(ck) => {
            let m = &ck.metadata;
            println!(
                "ok       {}: run {}, stage {}, step {}, {} tensors",
                path.display(),
                m["run"],
                m["stage"],
                m["step"],
                ck.names().count()
            );
            true
        }
        Err(e) => {
            println!("damaged  {e}");
            false
        }
    }
}
