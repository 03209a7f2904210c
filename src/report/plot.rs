//! The plots: validation loss against FLOPs and against tokens (log
//! scale), one line per run, a dot where it grew; each as SVG and PNG.

use super::runs::{Run, Spent, Unit};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Where the TrueType font for the plots' text is looked for (Debian's
/// `fonts-dejavu-core` and `fonts-liberation`, and their usual places elsewhere).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// The plots written, by file name (`.svg`; a `.png` sits beside each), with
/// their captions: against FLOPs and against tokens, one pair for each
/// architecture when the runs have several.
pub fn write(runs: &[Run], unit: Unit, out: &Path) -> Result<Vec<(String, String)>, String> {
    font()?;
    let axes: [(&str, &str, Axis); 2] = [
        ("loss_vs_flops", "FLOPs (every stage charged)", |s| s.flops),
        ("loss_vs_tokens", "tokens", |s| s.tokens),
    ];
    let mut archs: Vec<&str> = Vec::new();
    for r in runs {
        if !archs.contains(&r.arch.as_str()) {
            archs.push(&r.arch);
        }
    }
    let ylabel = format!("validation loss ({})", unit.name());
    let mut written = Vec::new();
    for arch in &archs {
        let group: Vec<&Run> = runs.iter().filter(|r| r.arch == *arch).collect();
        for (name, xlabel, x) in axes {
            let name = match archs.len() {
                1 => name.to_string(),
                _ => format!("{name}_{arch}"),
            };
            let svg = out.join(format!("{name}.svg"));
            let png = out.join(format!("{name}.png"));
            draw(
                SVGBackend::new(&svg, SIZE).into_drawing_area(),
                &group,
                (xlabel, &ylabel),
                x,
            )
            .map_err(|e| format!("drawing {}: {e}", svg.display()))?;
            draw(
                BitMapBackend::new(&png, SIZE).into_drawing_area(),
                &group,
                (xlabel, &ylabel),
                x,
            )
            .map_err(|e| format!("drawing {}: {e}", png.display()))?;
            written.push((
                format!("{name}.svg"),
                format!("{arch}: {ylabel} against {xlabel}"),
            ));
        }
    }
    Ok(written)
}

const SIZE: (u32, u32) = (1000, 620);

/// What a plot's x axis shows of what a run had spent.
type Axis = fn(&Spent) -> f64;

/// Registers the first font found as plotters' `sans-serif`, once.
fn font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let bytes = FONTS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                format!(
                    "the plots need a TrueType font and none was found (tried {}): on Debian or \
                 Ubuntu, `apt-get install fonts-dejavu-core`",
                    FONTS.join(", ")
                )
            })?;
        // plotters keeps fonts for the life of the program.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the font found is not a TrueType font plotters can read".to_string())
    })
    .clone()
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[&Run],
    (xlabel, ylabel): (&str, &str),
    x: Axis,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let lines: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            r.evals
                .iter()
                .map(|e| (x(&e.at), e.loss))
                .filter(|p| p.0 > 0.0)
                .collect()
        })
        .collect();
    let all = || lines.iter().flatten();
    let (x0, x1) = all().fold((f64::MAX, 0.0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let lowest = all().fold(f64::MAX, |a, p| a.min(p.1));
    let highest = all().fold(0.0f64, |a, p| a.max(p.1));
    let worst_final = lines
        .iter()
        .filter_map(|l| l.last())
        .fold(lowest, |a, p| a.max(p.1));
    if x1 <= 0.0 {
        return Err("no run has an evaluation to plot".into());
    }
    // Zoomed on where the runs finish: the first steps' losses would
    // flatten everything else.
    let y1 = highest.min(worst_final + 1.5 * (worst_final - lowest) + 0.3);
    let y0 = lowest - 0.05 * (y1 - lowest);
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x0 * 0.9..x1 * 1.1).log_scale(), y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .x_label_formatter(&|v| format!("{v:.1e}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    // One colour per run name; a run's first seed drawn solid, the others dashed.
    let mut names: Vec<&str> = Vec::new();
    let mut seeds: Vec<u64> = Vec::new();
    for r in runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
        if !seeds.contains(&r.seed) {
            seeds.push(r.seed);
        }
    }
    for (run, line) in runs.iter().zip(&lines) {
        let color =
            Palette99::pick(names.iter().position(|n| *n == run.name).unwrap_or(0)).to_rgba();
        let style = color.stroke_width(2);
        let series = if seeds.first() == Some(&run.seed) {
            chart.draw_series(LineSeries::new(line.clone(), style))
        } else {
            chart.draw_series(DashedLineSeries::new(line.clone(), 8, 5, style))
        };
        series
            .map_err(err)?
            .label(run.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        let grown = run
            .growths
            .iter()
            .filter_map(|(_, at)| Some((x(at), along(line, x(at))?)));
        chart
            .draw_series(grown.map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// The line's height at `x`, interpolated; None outside it.
fn along(line: &[(f64, f64)], x: f64) -> Option<f64> {
    let i = line.iter().position(|p| p.0 >= x)?;
    if i == 0 {
        return (line[0].0 == x).then_some(line[0].1);
    }
    let (a, b) = (line[i - 1], line[i]);
    Some(a.1 + (x - a.0) / (b.0 - a.0) * (b.1 - a.1))
}
