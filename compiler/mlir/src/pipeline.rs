//! Named, timed lowering phases over one MLIR module. Each phase has its
//! own pass manager with the verifier on; MLIR's diagnostics are captured
//! by a handler on the context (melior's bare pass error says nothing) and
//! reported with the phase and the kernel whose function they point into.
//!
//! `GSC_MLIR_DUMP=DIR` writes the module before and after every phase to
//! `DIR/NN-phase.{before,after}.mlir`, the pass pipeline in the first line
//! of each, so that any phase can be replayed with `mlir-opt`; a program
//! compiled in parts on several threads writes `partK-NN-phase…` per part.

use melior::dialect::DialectRegistry;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use melior::Context;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A failure of one phase, with what MLIR said.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MLIR phase `{phase}` failed{}:\n{}", kernel.as_ref().map(|k| format!(" in kernel {k}")).unwrap_or_default(), diagnostics.join("\n"))]
pub struct PhaseError {
    pub phase: String,
    /// The kernel (its symbol) the first diagnostic points into, if any.
    pub kernel: Option<String>,
    pub diagnostics: Vec<String>,
}

/// How long each phase took, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings(pub Vec<(String, Duration)>);

impl Timings {
    pub fn total(&self) -> Duration {
        self.0.iter().map(|(_, t)| *t).sum()
    }
}

/// A context with every dialect, pass and LLVM translation registered, and
/// a handler that keeps its diagnostics.
pub struct Session {
    pub context: Context,
    diagnostics: Arc<Mutex<Vec<String>>>,
    /// The emitted text, to name the kernel a diagnostic's line falls in.
    source: String,
    dump: Option<PathBuf>,
    /// Prefixes this session's dump files (one session per compile thread).
    label: String,
    seq: Cell<usize>,
    timings: RefCell<Timings>,
}

impl Session {
    pub fn new(source: String) -> Self {
        register_all_passes();
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        let context = Context::new();
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        register_all_llvm_translations(&context);
        // Kernels are compiled one program at a time, on the caller's thread.
        context.enable_multi_threading(false);
        let diagnostics = Arc::new(Mutex::new(vec![]));
        let sink = diagnostics.clone();
        context.attach_diagnostic_handler(move |d| {
            let mut text = format!("{}: {d}", d.location());
            for i in 0..d.note_count() {
                if let Ok(n) = d.note(i) {
                    text.push_str(&format!("\n  note: {}: {n}", n.location()));
                }
            }
            if let Ok(mut s) = sink.lock() {
                s.push(text);
            }
            true
        });
        Session {
            context,
            diagnostics,
            source,
            dump: std::env::var_os("GSC_MLIR_DUMP").map(PathBuf::from),
            label: String::new(),
            seq: Cell::new(0),
            timings: RefCell::new(Timings::default()),
        }
    }

    pub(crate) fn take_diagnostics(&self) -> Vec<String> {
        self.diagnostics
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// The kernel whose function holds line `line` (1-based) of the
    /// emitted text.
    fn kernel_at(&self, line: usize) -> Option<String> {
        self.source
            .lines()
            .take(line)
            .filter_map(|l| {
                let l = l.trim_start();
                let rest = l
                    .strip_prefix("func.func @")
                    .or_else(|| l.strip_prefix("func.func private @"))
                    .or_else(|| l.strip_prefix("gpu.func @"))?;
                let name = rest.split('(').next()?;
                name.starts_with('k')
                    .then(|| name.trim_end_matches("_body").to_string())
            })
            .last()
    }

    fn fail(&self, phase: &str) -> PhaseError {
        let diagnostics = self.take_diagnostics();
        // Locations read `loc("-":LINE:COL)` or `-:LINE:COL`.
        let kernel = diagnostics.iter().find_map(|d| {
            let after = d.split(':').nth(1)?;
            let line: usize = after
                .trim_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()?;
            self.kernel_at(line)
        });
        PhaseError {
            phase: phase.to_string(),
            kernel,
            diagnostics: if diagnostics.is_empty() {
                vec!["(MLIR gave no diagnostic)".to_string()]
            } else {
                diagnostics
            },
        }
    }

    fn dump(&self, phase: &str, when: &str, pipeline: &str, text: &str) {
        let Some(dir) = &self.dump else { return };
        let _ = std::fs::create_dir_all(dir);
        let path = dir.join(format!(
            "{}{:02}-{phase}.{when}.mlir",
            self.label,
            self.seq.get()
        ));
        let _ = std::fs::write(path, format!("// pipeline: {pipeline}\n{text}"));
    }

    /// Names this session's dump files `LABEL` + `NN-phase…`.
    pub fn labelled(mut self, label: String) -> Self {
        self.label = label;
        self
    }

    /// Parses and verifies the emitted text (phase `parse`).
    pub fn parse(&self) -> Result<Module<'_>, PhaseError> {
        let start = Instant::now();
        self.seq.set(self.seq.get() + 1);
        self.dump("parse", "before", "(parse and verify)", &self.source);
        self.take_diagnostics();
        let module = Module::parse(&self.context, &self.source);
        let verified = module.as_ref().is_some_and(|m| m.as_operation().verify());
        self.timings
            .borrow_mut()
            .0
            .push(("parse".into(), start.elapsed()));
        match module {
            Some(m) if verified => Ok(m),
            _ => Err(self.fail("parse")),
        }
    }

    /// Runs `pipeline` (textual, anchored on `builtin.module`) on `module`
    /// as phase `phase`.
    pub fn phase(
        &self,
        phase: &str,
        pipeline: &str,
        module: &mut Module,
    ) -> Result<(), PhaseError> {
        let start = Instant::now();
        self.seq.set(self.seq.get() + 1);
        if self.dump.is_some() {
            let text = module.as_operation().to_string();
            self.dump(phase, "before", pipeline, &text);
        }
        self.take_diagnostics();
        let pm = PassManager::new(&self.context);
        pm.enable_verifier(true);
        if let Err(e) = parse_pass_pipeline(pm.as_operation_pass_manager(), pipeline) {
            let mut err = self.fail(phase);
            err.diagnostics
                .insert(0, format!("bad pipeline `{pipeline}`: {e}"));
            return Err(err);
        }
        let ok = pm.run(module).is_ok() && module.as_operation().verify();
        self.timings
            .borrow_mut()
            .0
            .push((phase.to_string(), start.elapsed()));
        if self.dump.is_some() {
            let text = module.as_operation().to_string();
            self.dump(phase, "after", pipeline, &text);
        }
        if ok {
            Ok(())
        } else {
            Err(self.fail(phase))
        }
    }

    /// The phases run so far, with their times.
    pub fn timings(&self) -> Timings {
        self.timings.borrow().clone()
    }

    /// Records the time of a step done outside a pass manager.
    pub fn time(&self, phase: &str, took: Duration) {
        self.timings.borrow_mut().0.push((phase.to_string(), took));
    }
}
