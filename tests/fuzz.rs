//! Fuzzing the front end and the compiler: no input makes `gsc` panic or
//! hang. Generated growth schedules, mutated `.gs` files, and `--set`
//! overrides on valid ones go through check and plan, and every input that
//! checks clean is compiled to every stage's kernels as `gsc run` compiles
//! them. Mutations work on the language (a value replaced by one of another
//! kind, numbers pushed to extremes, statements duplicated, dropped, swapped
//! or inserted, growth methods swapped), seeded from the examples, the
//! fixtures, the grammar reference's examples and the ui cases.
//!
//! `GSC_FUZZ_CASES` inputs (500 by default, for CI) from `GSC_FUZZ_SEED`
//! (1 by default); `scripts/fuzz N` runs N of them in a release build. Case
//! `i` depends on the seed and `i` alone, so `GSC_FUZZ_CASES=i+1` replays
//! it. A panic or hang prints its input, to become a ui test.

mod common;

use gsc_compiler::plan::{render::plan_text, Plan};
use gsc_compiler::syntax::{self, Budget, Expr, ExprKind, File, Item, SchedStmt, Span, TrainStmt};
use gsc_compiler::{check_source, kernel};
use gsc_runtime::rng::SplitMix64;
use gsc_runtime::run::artifact::Artifact;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Generous for a debug build: the slowest clean input compiles in well
/// under a second in release.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Compiling is symbolic: its cost grows with the layers of the stages
/// compiled, not with their widths (one stage of 1024 layers takes 9 s in
/// release whether it is 64 or 2^20 wide, 6.7e15 parameters, and ten times
/// that in debug). A plan with more layers than this, summed over its stages,
/// is counted as too large and not compiled, so that every input stays well
/// within [`TIMEOUT`] in a debug build; widths are compiled whatever they are.
const MAX_COMPILED_LAYERS: usize = 128;

/// Share of the inputs, in percent, that are valid files with fuzzed
/// `--set` overrides.
const OVERRIDE_SHARE: u64 = 25;

/// Share of the rest, in percent, that are generated growth schedules.
const GENERATED_SHARE: u64 = 35;

#[test]
fn front_end_and_compiler() {
    let cases = env_number("GSC_FUZZ_CASES", 500);
    let seed = env_number("GSC_FUZZ_SEED", 1);
    let seeds = seeds();
    let valid: Vec<&Seed> = seeds.iter().filter(|s| s.plans()).collect();
    assert!(valid.len() >= 4, "too few valid seeds: {}", valid.len());
    let mut tally = Tally::default();
    let mut failures = 0;
    for i in 0..cases {
        let mut rng = Rng::new(seed, i);
        let case = generate(&mut rng, &seeds, &valid);
        tally.inputs += 1;
        match run_guarded(i, case.clone()) {
            Ok(outcome) => tally.add(&case, &outcome),
            Err(failure) => {
                eprintln!("{}", failure.describe(i, seed, &case));
                failures += 1;
                if matches!(failure, Failure::Hang) {
                    // The stuck worker cannot be stopped: stop here.
                    tally.hangs += 1;
                    break;
                }
                tally.panics += matches!(failure, Failure::Panic(_)) as u64;
                tally.rejected += matches!(failure, Failure::Compile(_)) as u64;
            }
        }
    }
    println!("{}", tally.summary());
    assert_eq!(failures, 0, "{}", tally.summary());
}

fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
        })
        .unwrap_or(default)
}

// ---- running one input --------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    origin: String,
    source: String,
    base: PathBuf,
    overrides: Vec<String>,
    /// Made to fuzz the overrides (the source is a valid seed's).
    via_set: bool,
}

#[derive(Default)]
struct Outcome {
    parsed: bool,
    planned: bool,
    compiled: bool,
    too_large: bool,
}

enum Failure {
    Panic(String),
    Hang,
    /// A plan the checker accepted that the compiler refuses: the checker
    /// should have said why.
    Compile(String),
}

impl Failure {
    fn describe(&self, i: u64, seed: u64, case: &Case) -> String {
        let what = match self {
            Failure::Panic(m) => format!("PANIC: {m}"),
            Failure::Hang => format!("HANG: no result in {TIMEOUT:?}"),
            Failure::Compile(m) => format!("COMPILE ERROR after a clean check: {m}"),
        };
        let sets: String = case
            .overrides
            .iter()
            .map(|o| format!("// --set {o}\n"))
            .collect();
        format!(
            "fuzz case {i} (GSC_FUZZ_SEED={seed}, from {}, data relative to {}): {what}\n\
             ---- input ----\n{sets}{}\n---- end ----",
            case.origin,
            case.base.display(),
            case.source
        )
    }
}

/// Runs `case` on its own thread (named after the case, so that even a stack
/// overflow, which aborts, says which one), waiting at most [`TIMEOUT`].
fn run_guarded(i: u64, case: Case) -> Result<Outcome, Failure> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("fuzz-case-{i}"))
        // The stack of `gsc`'s main thread.
        .stack_size(8 << 20)
        .spawn(move || {
            let r = std::panic::catch_unwind(|| run_case(&case));
            let _ = tx.send(r);
        })
        .expect("a worker thread");
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(Ok(outcome))) => Ok(outcome),
        Ok(Ok(Err(e))) => Err(Failure::Compile(e)),
        Ok(Err(payload)) => Err(Failure::Panic(panic_message(payload))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Failure::Hang),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Failure::Panic("worker died".into())),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// What `gsc check`, `gsc fmt`, `gsc compile --emit=plan` and `gsc run` do
/// with the input, short of training.
fn run_case(case: &Case) -> Result<Outcome, String> {
    let checked = check_source("fuzz.gs", &case.source, &case.base, &case.overrides);
    // Rendering walks every span of every diagnostic.
    let _ = checked.report.render(false);
    let mut outcome = Outcome {
        parsed: checked.ast.is_some(),
        ..Outcome::default()
    };
    if let (Some(ast), true) = (&checked.ast, case.overrides.is_empty()) {
        let _ = syntax::format::format(&case.source, ast);
    }
    let Some(mut plan) = checked.plan else {
        return Ok(outcome);
    };
    outcome.planned = true;
    let _ = plan_text(&plan);
    if layers_to_compile(&plan) > MAX_COMPILED_LAYERS {
        outcome.too_large = true;
        return Ok(outcome);
    }
    compile(&mut plan)?;
    outcome.compiled = true;
    Ok(outcome)
}

fn layers_to_compile(plan: &Plan) -> usize {
    let stages = plan.runs.iter().flat_map(|r| &r.stages);
    stages.map(|s| s.model.layers).sum()
}

/// Every stage's programs, as `gsc run` compiles them (its plan cut short as
/// `--max-stage-steps` does), through the checks every backend runs before
/// generating code.
fn compile(plan: &mut Plan) -> Result<(), String> {
    plan.cut_short(2);
    let artifact = Artifact::compile(plan, "fuzz")
        .map_err(|(stage, e)| format!("compiling stage `{stage}`: {e}"))?;
    for s in &artifact.stages {
        let checks = s.growth_check.iter().flat_map(|g| [&g.before, &g.after]);
        for p in [&s.step, &s.forward].into_iter().chain(checks) {
            kernel::validate(p).map_err(|e| format!("{}.{}: {e}", s.run, s.stage))?;
            kernel::analyse(p).map_err(|e| format!("{}.{}: {e:?}", s.run, s.stage))?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    inputs: u64,
    parsed: u64,
    planned: u64,
    compiled: u64,
    too_large: u64,
    via_set: u64,
    panics: u64,
    hangs: u64,
    /// Plans the checker accepted and the compiler refused.
    rejected: u64,
}

impl Tally {
    fn add(&mut self, case: &Case, o: &Outcome) {
        self.parsed += o.parsed as u64;
        self.planned += o.planned as u64;
        self.compiled += o.compiled as u64;
        self.too_large += o.too_large as u64;
        self.via_set += case.via_set as u64;
    }

    fn summary(&self) -> String {
        format!(
            "fuzz: {} inputs ({} parsed, {} checked clean and planned, {} compiled, {} too large \
             to compile; {} via --set overrides): {} panics, {} hangs, {} compile errors",
            self.inputs,
            self.parsed,
            self.planned,
            self.compiled,
            self.too_large,
            self.via_set,
            self.panics,
            self.hangs,
            self.rejected
        )
    }
}

// ---- seeds ----------------------------------------------------------------------

struct Seed {
    origin: String,
    source: String,
    /// The folder its data paths are relative to.
    base: PathBuf,
    overrides: Vec<String>,
}

impl Seed {
    fn plans(&self) -> bool {
        let c = check_source("seed.gs", &self.source, &self.base, &self.overrides);
        c.plan.is_some()
    }
}

/// The examples, the fixtures, the ui cases (with their `// --set` lines)
/// and every `gs` block of the grammar reference.
fn seeds() -> Vec<Seed> {
    let files = common::examples()
        .into_iter()
        .chain(common::gs_files("tests/fixtures"))
        .chain(common::gs_files("tests/ui"));
    let mut seeds: Vec<Seed> = files.map(|p| file_seed(&p)).collect();
    for example in common::reference_examples() {
        seeds.push(Seed {
            origin: format!("{}:{}", common::REFERENCE, example.line),
            source: example.source,
            base: PathBuf::from("."),
            overrides: example.overrides,
        });
    }
    seeds
}

fn file_seed(path: &Path) -> Seed {
    let source = std::fs::read_to_string(path).expect("a readable seed");
    let overrides = source
        .lines()
        .skip(1)
        .map_while(|l| l.strip_prefix("// --set "))
        .map(|o| o.trim().to_string())
        .collect();
    Seed {
        origin: path.display().to_string(),
        base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        source,
        overrides,
    }
}

// ---- generating inputs ----------------------------------------------------------

/// The project's SplitMix64 (deterministic across platforms and builds), with the fuzzer's own helpers.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64, case: u64) -> Rng {
        let mut r = Rng(SplitMix64::new(
            seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn generate(rng: &mut Rng, seeds: &[Seed], valid: &[&Seed]) -> Case {
    if rng.chance(OVERRIDE_SHARE) {
        return override_case(rng, valid);
    }
    if rng.chance(GENERATED_SHARE) {
        return generated_case(rng, seeds);
    }
    // Mostly valid seeds, whose mutants reach the planner and the compiler.
    let seed = if rng.chance(70) {
        *rng.pick(valid)
    } else {
        rng.pick(seeds)
    };
    let source = match rng.below(20) {
        0 => arbitrary_bytes(rng),
        1 => token_soup(rng),
        _ => {
            let mut s = seed.source.clone();
            let edits = if rng.chance(70) { 1 } else { 2 + rng.below(3) };
            for _ in 0..edits {
                s = mutate(rng, &s, seeds);
            }
            s
        }
    };
    Case {
        origin: seed.origin.clone(),
        source,
        base: seed.base.clone(),
        overrides: seed.overrides.clone(),
        via_set: false,
    }
}

/// A file written from scratch: a small model of random shape and a
/// schedule of random stages and growth steps (axes, operators, amounts,
/// methods and options), sometimes a baseline, then perhaps one edit.
fn generated_case(rng: &mut Rng, seeds: &[Seed]) -> Case {
    let mut source = format!(
        "data text {{ text = \"../data/tinyshakespeare.txt\" }}\n{}\n{}\n{}\n",
        generated_model(rng),
        generated_train(rng),
        generated_schedule(rng)
    );
    if rng.chance(30) {
        source.push_str(rng.pick(&FILE_ITEMS[..4]).replace("NAME", "base").as_str());
    }
    if rng.chance(30) {
        source = mutate(rng, &source, seeds);
    }
    Case {
        origin: "a generated schedule".into(),
        source,
        base: PathBuf::from("examples"),
        overrides: vec![],
        via_set: false,
    }
}

fn generated_model(rng: &mut Rng) -> String {
    let arch = rng.pick(&["gpt", "ngpt"]);
    let d_model = rng.pick(&[8, 16, 24, 32, 48, 64]);
    let heads = rng.pick(&[1, 2, 4]);
    let mut settings = format!(
        "context = {}  d_model = {d_model}  heads = {heads}  layers = {}",
        rng.pick(&[4, 8, 16, 33]),
        1 + rng.below(3)
    );
    // nGPT has no norm layers, is always SwiGLU and untied.
    let extras = if *arch == "gpt" {
        MODEL_EXTRAS
    } else {
        &MODEL_EXTRAS[..2]
    };
    for extra in extras {
        if rng.chance(20) {
            settings.push_str("  ");
            settings.push_str(rng.pick::<&str>(extra));
        }
    }
    format!("model base = {arch} {{ {settings} }}")
}

fn generated_train(rng: &mut Rng) -> String {
    let pool = if rng.chance(80) {
        VALID_TRAIN
    } else {
        TRAIN_STMTS
    };
    let stmts: Vec<&str> = (0..rng.below(3)).map(|_| *rng.pick(pool)).collect();
    format!(
        "train {{ batch = {}\n{} }}",
        1 + rng.below(4),
        stmts.join("\n")
    )
}

fn generated_schedule(rng: &mut Rng) -> String {
    let mut lines = vec![format!("stage s0: train {}", generated_budget(rng))];
    for i in 1..1 + rng.below(4) {
        for _ in 0..rng.below(4) {
            lines.push(generated_growth(rng));
        }
        lines.push(format!("stage s{i}: train {}", generated_budget(rng)));
    }
    format!("grow base {{\n    {}\n}}", lines.join("\n    "))
}

fn generated_budget(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => format!("{} tokens", 1 + rng.below(5000)),
        1 => format!("{}e6 flops", 1 + rng.below(900)),
        2 => format!("until val_loss <= 1.5 or {} steps", 1 + rng.below(9)),
        _ => format!("{} steps", 1 + rng.below(9)),
    }
}

fn generated_growth(rng: &mut Rng) -> String {
    if rng.chance(15) {
        return rng
            .pick(&["set batch = 2 sequences", "set lr = 2e-3"])
            .to_string();
    }
    let axis = rng.pick(&AXES[..6]);
    let amount = match rng.below(3) {
        0 => format!(
            "to {}",
            rng.pick(&["2 * d_model", "64", "4 * d_model", "context * 2", "8"])
        ),
        1 => format!("* {}", rng.pick(&["2", "1.5", "1.25", "3", "0.5"])),
        _ => format!("+ {}", 1 + rng.below(3)),
    };
    let mut step = format!("grow {axis} {amount}");
    if rng.chance(10) {
        step.push_str(rng.pick::<&str>(&[" at [0]", " at [0, 1]", " at [1]"]));
    }
    if rng.chance(50) {
        step.push_str(&format!(" by {}", rng.pick(METHODS)));
    }
    if rng.chance(30) {
        step.push_str(&format!(", {}", rng.pick(GROWTH_OPTIONS)));
    }
    step
}

fn arbitrary_bytes(rng: &mut Rng) -> String {
    let bytes: Vec<u8> = (0..rng.below(400)).map(|_| rng.next() as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn token_soup(rng: &mut Rng) -> String {
    let words: Vec<&str> = (0..rng.below(60)).map(|_| *rng.pick(TOKENS)).collect();
    words.join(" ")
}

/// One edit: at the level of the language when the text parses (mostly),
/// else of its words.
fn mutate(rng: &mut Rng, source: &str, seeds: &[Seed]) -> String {
    let edited = match syntax::parse(source) {
        Ok(file) if rng.chance(90) => language_edit(rng, source, &file, seeds),
        _ => None,
    };
    edited.unwrap_or_else(|| word_edit(rng, source))
}

fn language_edit(rng: &mut Rng, source: &str, file: &File, seeds: &[Seed]) -> Option<String> {
    let sites = Sites::of(file);
    let edit = match rng.below(10) {
        0 | 1 if !sites.exprs.is_empty() => {
            let at = *rng.pick(&sites.exprs);
            Some((at, rng.pick(VALUES).to_string()))
        }
        0 | 1 => None,
        2 | 3 => extreme_number(rng, &sites),
        4 => statement_edit(rng, source, &sites),
        5 => return swap_statements(rng, source, &sites),
        6 => growth_edit(rng, &sites),
        7 => insert_statement(rng, &sites),
        8 => rename(rng, &sites),
        _ => splice(rng, seeds, source, file),
    };
    edit.map(|(span, text)| replace(source, span, &text))
}

fn replace(source: &str, span: Span, text: &str) -> String {
    format!("{}{text}{}", &source[..span.start], &source[span.end..])
}

/// Where the language can be edited: spans of the parsed file.
#[derive(Default)]
struct Sites {
    exprs: Vec<Span>,
    numbers: Vec<(Span, f64)>,
    /// The statements of each block (the file's items first).
    groups: Vec<Vec<Span>>,
    /// Where a statement may be inserted (before a closing brace), and
    /// which pool of statements fits there.
    slots: Vec<(usize, &'static [&'static str])>,
    idents: Vec<Span>,
    steps: Vec<StepSite>,
    models: Vec<String>,
}

struct StepSite {
    axis: Span,
    /// From the axis to the amount: ` * `, ` to `, ` + `.
    op: Span,
    method: Option<Span>,
    /// Where `by METHOD` goes when there is none.
    method_at: usize,
}

impl Sites {
    fn of(file: &File) -> Sites {
        let mut s = Sites {
            groups: vec![file.items.iter().map(Item::span).collect()],
            ..Sites::default()
        };
        let end = file.items.last().map_or(0, |i| i.span().end);
        s.slots.push((end, FILE_ITEMS));
        for item in &file.items {
            s.item(item);
        }
        s
    }

    fn item(&mut self, item: &Item) {
        let close = item.span().end.saturating_sub(1);
        match item {
            Item::Data(b) => {
                self.idents.push(b.name.span);
                self.settings(&b.settings);
                self.slots.push((close, DATA_SETTINGS));
            }
            Item::Model(b) => {
                self.idents.extend([b.name.span, b.arch.span]);
                self.models.push(b.name.name.clone());
                self.settings(&b.settings);
                self.slots.push((close, MODEL_SETTINGS));
            }
            Item::Train(b) => {
                self.groups
                    .push(b.stmts.iter().map(TrainStmt::span).collect());
                for st in &b.stmts {
                    self.train_stmt(st);
                }
                self.slots.push((close, TRAIN_STMTS));
            }
            Item::Grow(b) => {
                self.idents.push(b.model.span);
                self.groups
                    .push(b.stmts.iter().map(SchedStmt::span).collect());
                for st in &b.stmts {
                    self.sched_stmt(st);
                }
                self.slots.push((close, SCHEDULE_STMTS));
            }
            Item::Compare(c) => {
                self.idents.push(c.name.span);
                self.expr(&c.run);
            }
        }
    }

    fn settings(&mut self, settings: &[syntax::Setting]) {
        self.groups.push(settings.iter().map(|s| s.span).collect());
        for s in settings {
            self.idents.push(s.key.span);
            self.expr(&s.value);
        }
    }

    fn train_stmt(&mut self, st: &TrainStmt) {
        match st {
            TrainStmt::Setting(s) => self.settings(std::slice::from_ref(s)),
            TrainStmt::Every(e) => {
                self.idents.push(e.what.span);
                self.expr(&e.every);
                e.on.iter().for_each(|o| self.expr(o));
            }
        }
    }

    fn sched_stmt(&mut self, st: &SchedStmt) {
        match st {
            SchedStmt::Stage(s) => {
                self.idents.push(s.name.span);
                match &s.budget {
                    Budget::Amount { amount } => self.expr(amount),
                    Budget::Until {
                        metric,
                        target,
                        cap,
                        ..
                    } => {
                        self.idents.push(metric.span);
                        self.expr(target);
                        cap.iter().for_each(|c| self.expr(c));
                    }
                }
            }
            SchedStmt::Grow(g) => {
                self.idents.push(g.axis.span);
                self.expr(&g.amount);
                g.at.iter().chain(&g.method).for_each(|e| self.expr(e));
                self.settings(&g.options);
                let clause_end = g.at.as_ref().unwrap_or(&g.amount).span.end;
                self.steps.push(StepSite {
                    axis: g.axis.span,
                    op: Span::new(g.axis.span.end, g.amount.span.start),
                    method: g.method.as_ref().map(|m| m.span),
                    method_at: clause_end,
                });
            }
            SchedStmt::Set(s) => self.settings(std::slice::from_ref(s)),
        }
    }

    fn expr(&mut self, e: &Expr) {
        self.exprs.push(e.span);
        match &e.kind {
            ExprKind::Number { value, .. } => self.numbers.push((e.span, *value)),
            ExprKind::Ref { name } => self.idents.push(name.span),
            ExprKind::Call { name, args } => {
                self.idents.push(name.span);
                args.iter().for_each(|a| self.expr(&a.value));
            }
            ExprKind::Tuple { items } | ExprKind::List { items } => {
                items.iter().for_each(|i| self.expr(i));
            }
            ExprKind::Paren { inner: x } | ExprKind::Neg { operand: x } => self.expr(x),
            ExprKind::Quantity { value, .. } => self.expr(value),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            ExprKind::Str { .. } | ExprKind::Same { .. } => {}
        }
    }
}

/// A number replaced by an extreme, or by a near neighbour that is
/// fractional, negative or off by one, sometimes with a unit.
fn extreme_number(rng: &mut Rng, sites: &Sites) -> Option<(Span, String)> {
    if sites.numbers.is_empty() {
        return None;
    }
    let (span, v) = *rng.pick(&sites.numbers);
    let text = match rng.below(10) {
        0 => format!("{}", v + 0.5),
        1 => format!("{}", v * 1.5),
        2 => format!("{}", v - 1.0),
        3 => format!("{}", v * 1e6),
        4 => format!("{v} {}", rng.pick(UNITS)),
        // Neighbours that often stay valid, to reach the planner.
        5 => format!("{}", v * 2.0),
        6 => format!("{}", (v / 2.0).floor()),
        7 => format!("{}", v + 1.0),
        _ => rng.pick(EXTREMES).to_string(),
    };
    Some((span, text))
}

/// A statement duplicated (a duplicate key, two stages of one name) or dropped.
fn statement_edit(rng: &mut Rng, source: &str, sites: &Sites) -> Option<(Span, String)> {
    let group = rng.pick(&sites.groups);
    let at = *group.get(rng.below(group.len()))?;
    Some(if rng.chance(50) {
        (at, format!("{0}\n{0}", &source[at.start..at.end]))
    } else {
        (at, String::new())
    })
}

/// Two statements of one block exchanged: a growth before the first stage,
/// a stage after the last growth.
fn swap_statements(rng: &mut Rng, source: &str, sites: &Sites) -> Option<String> {
    let group = rng.pick(&sites.groups);
    if group.len() < 2 {
        return None;
    }
    let (i, j) = (rng.below(group.len()), rng.below(group.len()));
    let (a, b) = (group[i.min(j)], group[i.max(j)]);
    if a == b {
        return None;
    }
    let text = |s: Span| &source[s.start..s.end];
    Some(format!(
        "{}{}{}{}{}",
        &source[..a.start],
        text(b),
        &source[a.end..b.start],
        text(a),
        &source[b.end..]
    ))
}

/// A growth step's method swapped (or given one), its axis or its operator
/// changed.
fn growth_edit(rng: &mut Rng, sites: &Sites) -> Option<(Span, String)> {
    if sites.steps.is_empty() {
        return None;
    }
    let step = rng.pick(&sites.steps);
    let method = rng.pick(METHODS);
    Some(match (rng.below(3), step.method) {
        (0, _) => (step.axis, rng.pick(AXES).to_string()),
        (1, _) => (step.op, rng.pick(GROW_OPS).to_string()),
        (_, Some(m)) => (m, method.to_string()),
        (_, None) => {
            let at = Span::new(step.method_at, step.method_at);
            (at, format!(" by {method}"))
        }
    })
}

/// A statement from the pool of what fits the block (sometimes of another
/// block), inserted before its closing brace. `NAME` is one of the models.
fn insert_statement(rng: &mut Rng, sites: &Sites) -> Option<(Span, String)> {
    let &(at, mut pool) = rng.pick(&sites.slots);
    if rng.chance(10) {
        pool = *rng.pick(POOLS);
    }
    let model = sites.models.first().map_or("base", String::as_str);
    let stmt = rng.pick(pool).replace("NAME", model);
    Some((Span::new(at, at), format!("\n{stmt}\n")))
}

fn rename(rng: &mut Rng, sites: &Sites) -> Option<(Span, String)> {
    if sites.idents.is_empty() {
        return None;
    }
    Some((*rng.pick(&sites.idents), rng.pick(NAMES).to_string()))
}

/// An item of another seed, appended or in place of one of this file's.
fn splice(rng: &mut Rng, seeds: &[Seed], source: &str, file: &File) -> Option<(Span, String)> {
    let other = &rng.pick(seeds).source;
    let items = syntax::parse(other).ok()?.items;
    let item = items.get(rng.below(items.len()))?.span();
    let text = other[item.start..item.end].to_string();
    let at = match file.items.get(rng.below(file.items.len() * 2)) {
        Some(mine) if rng.chance(50) => mine.span(),
        _ => Span::new(source.len(), source.len()),
    };
    Some((at, format!("\n{text}\n")))
}

/// A word deleted, inserted, replaced or two words swapped.
fn word_edit(rng: &mut Rng, source: &str) -> String {
    let mut words: Vec<String> = source
        .split_inclusive(char::is_whitespace)
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        return rng.pick(TOKENS).to_string();
    }
    let i = rng.below(words.len());
    let token = format!("{} ", rng.pick(TOKENS));
    match rng.below(4) {
        0 => drop(words.remove(i)),
        1 => words.insert(i, token),
        2 => words[i] = token,
        _ => {
            let j = rng.below(words.len());
            words.swap(i, j);
        }
    }
    words.concat()
}

// ---- --set overrides ----------------------------------------------------------

/// A valid file with one to three fuzzed overrides: keys of its own blocks,
/// models and stages (or mangled ones), values of every kind.
fn override_case(rng: &mut Rng, valid: &[&Seed]) -> Case {
    let seed = rng.pick(valid);
    let file = syntax::parse(&seed.source).expect("a valid seed parses");
    let keys = override_keys(&file);
    let overrides = (0..1 + rng.below(3))
        .map(|_| {
            let key = if rng.chance(85) {
                rng.pick(&keys).clone()
            } else {
                rng.pick(BAD_KEYS).to_string()
            };
            let value = match rng.below(3) {
                0 => rng.pick(VALUES).to_string(),
                1 => rng.pick(OVERRIDE_VALUES).to_string(),
                _ => rng.pick(EXTREMES).to_string(),
            };
            if rng.chance(3) {
                format!("{key}{value}")
            } else {
                format!("{key}={value}")
            }
        })
        .collect();
    Case {
        origin: seed.origin.clone(),
        source: seed.source.clone(),
        base: seed.base.clone(),
        overrides,
        via_set: true,
    }
}

/// Every key `--set` takes for this file, and a few that it lacks.
fn override_keys(file: &File) -> Vec<String> {
    let mut keys: Vec<String> = ["data", "train"]
        .iter()
        .flat_map(|block| SETTING_KEYS.iter().map(move |k| format!("{block}.{k}")))
        .collect();
    keys.extend(SETTING_KEYS.iter().map(|k| format!("model.{k}")));
    for item in &file.items {
        match item {
            Item::Model(m) => {
                let name = &m.name.name;
                keys.extend(SETTING_KEYS.iter().map(|k| format!("model.{name}.{k}")));
            }
            Item::Grow(g) => {
                for st in &g.stmts {
                    if let SchedStmt::Stage(s) = st {
                        keys.push(format!("grow.{}.{}", g.model.name, s.name.name));
                    }
                }
                keys.push(format!("grow.{}.nostage", g.model.name));
            }
            _ => {}
        }
    }
    keys
}

// ---- the pools --------------------------------------------------------------

/// Values of every kind, to put where another kind belongs.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "0.5",
    "1.5",
    "7",
    "99999",
    "1e999",
    "-1e999",
    "1e-999",
    "4294967296",
    "18446744073709551616",
    "1_000",
    "10k",
    "3M",
    "1T",
    "10%",
    "0%",
    "100%",
    "250%",
    "0 steps",
    "1 steps",
    "1e999 steps",
    "-5 steps",
    "2 tokens",
    "1e15 flops",
    "1 flops",
    "32 sequences",
    "0 sequences",
    "20 batches",
    "same tokens",
    "same flops",
    "same steps",
    "1k steps + 500 steps",
    "1 steps + 1 tokens",
    "(2 steps) * (3 steps)",
    "10 steps / 0",
    "\"\"",
    "\"x.txt\"",
    "\"../data/tinyshakespeare.txt\"",
    "\"/\"",
    "\"/dev/null\"",
    "\"/dev/zero\"",
    "gelu",
    "swiglu",
    "true",
    "false",
    "none",
    "layernorm",
    "rmsnorm",
    "d_model",
    "tokenizer",
    "context",
    "layers",
    "bytes",
    "identity",
    "stack",
    "copy",
    "zero",
    "map",
    "reset",
    "extend",
    "val_loss",
    "nan",
    "inf",
    "x",
    "adamw(lr = 1e-3)",
    "adamw()",
    "adamw(1)",
    "cosine(warmup = 10%, min = 10%)",
    "wsd(decay = 50%)",
    "linear(warmup = 1e999 steps)",
    "ramp(2 steps)",
    "ramp(steps = 0)",
    "isometric(split = uneven)",
    "scratch(base, same tokens)",
    "doubling(base, 4 steps, at = 100%)",
    "f(1, 2, x = 3)",
    "(0.9, 0.95)",
    "()",
    "(1,)",
    "[]",
    "[0]",
    "[0, 0]",
    "[-1]",
    "[1e999]",
    "[[1]]",
    "(1, (2, 3))",
    "4 * d_model",
    "d_model / 0",
    "d_model / 3",
    "(1 + 2) * 3",
    "-(-1)",
    "0 - 1",
    "1e308 * 10",
    "d_model * d_model * d_model",
    "tokenizer + 1",
    "heads * head_dim",
    "2 * 64",
    "1 / 3",
    "-0",
    "layers * 1024",
    "context * context",
];

const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "1",
    "1e999",
    "-1e999",
    "1e-300",
    "0.5",
    "2147483648",
    "4294967297",
    "9007199254740993",
    "18446744073709551615",
    "1e19",
    "1e30",
    "65537",
    "1048577",
    "16777217",
    "1025",
    "99999",
    "1T",
    "100%",
    "101%",
    "-0",
];

const UNITS: &[&str] = &["steps", "tokens", "flops", "sequences", "batches"];

const AXES: &[&str] = &[
    "d_model", "heads", "kv_heads", "ffn", "layers", "context", "vocab", "head_dim", "tied", "x",
];

const GROW_OPS: &[&str] = &[" to ", " * ", " × ", " + ", " - ", " / ", " "];

const METHODS: &[&str] = &[
    "copy",
    "zero",
    "identity",
    "stack",
    "extend",
    "isometric",
    "isometric(split = even)",
    "isometric(split = uneven)",
    "isometric(split = odd)",
    "isometric(even)",
    "ramp(1 steps)",
    "ramp(2 steps)",
    "ramp(steps = 1e999)",
    "ramp(0 steps)",
    "ramp()",
    "ramp(1 tokens)",
    "copy(2)",
    "map",
    "3",
    "\"copy\"",
];

const NAMES: &[&str] = &[
    "text",
    "val",
    "tokenizer",
    "vocab",
    "context",
    "d_model",
    "heads",
    "kv_heads",
    "head_dim",
    "ffn",
    "layers",
    "activation",
    "norm",
    "tied",
    "rope_base",
    "init_std",
    "optimizer",
    "schedule",
    "batch",
    "seed",
    "clip",
    "precision",
    "eval",
    "checkpoint",
    "log",
    "lr",
    "noise",
    "rewarm",
    "lr_scale",
    "gpt",
    "ngpt",
    "base",
    "tiny",
    "s1",
    "main",
    "val_loss",
    "train_loss",
    "scratch",
    "doubling",
    "adamw",
    "cosine",
    "x",
    "_",
    "data",
    "stage",
];

const SETTING_KEYS: &[&str] = &[
    "text",
    "val",
    "tokenizer",
    "vocab",
    "context",
    "d_model",
    "heads",
    "kv_heads",
    "head_dim",
    "ffn",
    "layers",
    "activation",
    "norm",
    "tied",
    "rope_base",
    "init_std",
    "optimizer",
    "schedule",
    "batch",
    "seed",
    "clip",
    "precision",
    "lr",
    "eval",
    "x",
];

const BAD_KEYS: &[&str] = &[
    "",
    ".",
    "..",
    "model.",
    "model..d_model",
    "grow",
    "grow.",
    "grow.x.y",
    "grow.base",
    "train.lr.x",
    "data",
    "model.base.d_model.x",
    " train . batch ",
    "TRAIN.batch",
    "grow.base.s1.x",
    "a\nb",
    "train.batch\n",
    "model.x.d_model",
    "compare.c",
    "=",
];

const OVERRIDE_VALUES: &[&str] = &[
    "",
    " ",
    "1 +",
    "(",
    ")",
    "\"unterminated",
    "1\n2",
    "1 // c",
    "/* */ 3",
    "/*",
    "\"x.txt\"",
    "1=2",
    "= 1",
    "2e12 flops",
    "until val_loss <= 1.5",
    "64)",
    "32 sequences",
    "1e-3",
    "[\"../data/tinyshakespeare.txt\"]",
    "cosine(warmup = 2%)",
    "\n",
    "1 steps\n}",
];

const FILE_ITEMS: &[&str] = &[
    "compare c = scratch(NAME, same flops)",
    "compare d = doubling(NAME, same tokens, at = 50%)",
    "compare e = doubling(NAME, 10 steps, at = 0%)",
    "compare f = scratch(NAME, same steps)",
    "compare g = scratch(NAME, 1 tokens)",
    "compare NAME = scratch(NAME, same flops)",
    "model extra = ngpt { context = 16  d_model = 32  head_dim = 16  layers = 1 }",
    "grow extra { stage a: train 2 steps }",
    "model wide = gpt { context = 8  d_model = 1048576  heads = 1  layers = 1 }\n\
     grow wide { stage a: train 1 steps }",
    "model deep = gpt { context = 8  d_model = 8  heads = 1  layers = 1024 }\n\
     grow deep { stage a: train 1 steps }",
    "train { }",
    "data d { text = \"x\" }",
    "grow NAME { stage z: train 1 steps }",
];

const DATA_SETTINGS: &[&str] = &[
    "val = 50%",
    "val = 0%",
    "val = 100%",
    "val = 99.9999%",
    "tokenizer = bpe",
    "tokenizer = bytes",
    "text = [\"../data/tinyshakespeare.txt\", \"../data/tinyshakespeare.txt\"]",
    "text = []",
    "text = \"/dev/null\"",
    "text = \".\"",
    "text = \"../fixtures/empty.txt\"",
    "text = \"../fixtures/binary.txt\"",
];

const MODEL_SETTINGS: &[&str] = &[
    "kv_heads = 1",
    "kv_heads = 3",
    "head_dim = 7",
    "heads = 1",
    "heads = 0",
    "layers = 1024",
    "layers = 0",
    "d_model = 99999",
    "d_model = 1",
    "ffn = 1",
    "ffn = 0",
    "context = 1",
    "context = 16777216",
    "vocab = 257",
    "vocab = 1",
    "vocab = tokenizer",
    "activation = swiglu",
    "activation = relu",
    "norm = layernorm",
    "tied = false",
    "tied = 1",
    "rope_base = 0",
    "rope_base = -1",
    "init_std = 0",
    "init_std = 1e999",
    "d_model = d_model",
    "heads = d_model / head_dim",
    "layers = layers + 1",
    "context = 2 * d_model",
    "head_dim = d_model",
    "ffn = 1048576",
    "vocab = 16777216",
];

const TRAIN_STMTS: &[&str] = &[
    "optimizer = adamw(lr = 0)",
    "optimizer = adamw(lr = 1e999, betas = (0.9, 1.0), eps = 0, weight_decay = -1)",
    "optimizer = sgd(lr = 1)",
    "optimizer = adamw(lr = 1e-3, lr = 2e-3)",
    "schedule = cosine(warmup = 100%, min = 0)",
    "schedule = linear(warmup = 200%)",
    "schedule = wsd(warmup = 10 steps, decay = 100%)",
    "schedule = wsd(decay = 0 steps)",
    "schedule = wsd(warmup = 99%, decay = 99%)",
    "batch = 1 sequences",
    "batch = 0",
    "batch = 1048576 sequences",
    "seed = -1",
    "seed = 1e999",
    "seed = 18446744073709551616",
    "clip = none",
    "clip = 0",
    "precision = bf16",
    "precision = f16",
    "eval every 1 steps on 1 batches",
    "eval every 0 steps",
    "checkpoint every 1 steps",
    "log every 1e999 steps",
    "eval every 10 steps on 0 batches",
];

/// Train statements that check clean (the batch aside), for generated files.
const VALID_TRAIN: &[&str] = &[
    "optimizer = adamw(lr = 3e-3, weight_decay = 0)",
    "schedule = cosine(warmup = 10%)",
    "schedule = linear(warmup = 1 steps, min = 0)",
    "schedule = wsd(decay = 50%)",
    "clip = none",
    "seed = 7",
    "eval every 2 steps on 1 batches",
    "checkpoint every 1 steps",
    "log every 1 steps",
];

const SCHEDULE_STMTS: &[&str] = &[
    "grow layers + 2 at [0, 3]",
    "grow layers + 1 at [99]",
    "grow layers * 2 by stack",
    "grow heads * 2 by copy",
    "grow heads + 1 by ramp(1 steps)",
    "grow ffn + 1 by ramp(10 steps)",
    "grow ffn to 4 * d_model by copy",
    "grow d_model * 1.25",
    "grow d_model * 2 by copy, noise = 1e-3, optimizer = asymmetric, rewarm = 5 steps",
    "grow d_model * 1.5 by zero, optimizer = zero_new",
    "grow d_model + 1 by isometric(split = uneven), lr_scale = 0.5",
    "grow kv_heads * 2",
    "grow context to 2 * context",
    "grow context * 2 by extend",
    "grow vocab + 1",
    "grow layers to 1024",
    "grow d_model to 1048576",
    "grow heads to 65536",
    "grow context to 16777216",
    "set batch = 1 sequences",
    "set lr = 0",
    "set lr = 2e-3",
    "set context = 8",
    "stage extra: train 2 steps",
    "stage s1: train 1 steps",
    "stage u: train until val_loss <= 1.5",
    "stage v: train until val_loss < 0 or 3 steps",
    "stage f: train 1e6 flops",
    "stage t: train 1 tokens",
];

/// Optional model settings, one of each group at most; the first two
/// apply to nGPT too.
const MODEL_EXTRAS: &[&[&str]] = &[
    &["kv_heads = 1", "kv_heads = 2"],
    &["ffn = 3 * d_model", "ffn = 40", "ffn = 1"],
    &["norm = layernorm", "norm = rmsnorm"],
    &["activation = swiglu", "activation = gelu"],
    &["tied = false", "tied = true"],
    &["vocab = 300", "vocab = tokenizer"],
];

const GROWTH_OPTIONS: &[&str] = &[
    "noise = 1e-3",
    "noise = -1",
    "optimizer = zero_new",
    "optimizer = asymmetric",
    "optimizer = reset",
    "optimizer = map",
    "rewarm = 3 steps",
    "rewarm = 1e999 steps",
    "lr_scale = 0.5",
    "lr_scale = 0",
    "lr_scale = 1e308",
];

const POOLS: &[&[&str]] = &[
    FILE_ITEMS,
    DATA_SETTINGS,
    MODEL_SETTINGS,
    TRAIN_STMTS,
    SCHEDULE_STMTS,
];

/// Words of the language, for edits below its structure.
const TOKENS: &[&str] = &[
    "data",
    "model",
    "train",
    "grow",
    "stage",
    "compare",
    "set",
    "until",
    "or",
    "to",
    "at",
    "by",
    "every",
    "on",
    "same",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "=",
    ",",
    ":",
    "*",
    "×",
    "+",
    "-",
    "/",
    "<=",
    "0",
    "1",
    "-1",
    "2.5",
    "1e999",
    "10k",
    "3M",
    "10%",
    "0%",
    "100%",
    "steps",
    "tokens",
    "flops",
    "sequences",
    "batches",
    "d_model",
    "heads",
    "kv_heads",
    "head_dim",
    "ffn",
    "layers",
    "context",
    "vocab",
    "gpt",
    "ngpt",
    "copy",
    "zero",
    "isometric(split = uneven)",
    "identity",
    "stack",
    "ramp(0 steps)",
    "\"../data/none.txt\"",
    "\"\"",
    "//",
    "/*",
    "\n",
    "val_loss",
    "tokenizer",
    "layernorm",
    "99999999999",
    "0.0001",
    "[0, 0]",
    "[-1]",
];
