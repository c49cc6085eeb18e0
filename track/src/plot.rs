//! Training curves of one or more runs: loss, a metric (accuracy where there is one) and the
//! learning rate, each in its own panel over the epochs; training solid, validation dashed,
//! one colour per run. `.svg` or `.png` by the file's extension.

use crate::{EpochRow, RunRow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Where a TrueType font is looked for (plotters measures and draws text with it); the
/// environment variable `FORGEC_FONT` names another.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();

fn load_font() -> Result<(), String> {
    FONT.get_or_init(|| {
        let given = std::env::var("FORGEC_FONT").ok();
        let candidates: Vec<String> = given
            .iter()
            .cloned()
            .chain(FONTS.iter().map(|s| s.to_string()))
            .collect();
        for c in &candidates {
            if let Ok(bytes) = std::fs::read(c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
                {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no TrueType font to draw the text with (looked for {}): install one (Debian: apt-get install fonts-dejavu-core), or name a .ttf file in FORGEC_FONT",
            candidates.join(", ")
        ))
    })
    .clone()
}

/// One series: a run's values of a log over the epochs.
struct Series {
    label: String,
    run: usize,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The metric shown beside the loss: accuracy when a run has one, else the first other
/// metric of the first run that has any.
fn chosen_metric(runs: &[(RunRow, Vec<EpochRow>)]) -> Option<String> {
    let keys = |e: &EpochRow| -> Vec<String> {
        e.metrics
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| {
                        !k.starts_with("val_")
                            && !["loss", "epoch", "seconds", "learning_rate"].contains(&k.as_str())
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let all: Vec<String> = runs
        .iter()
        .flat_map(|(_, es)| es.first().map(keys).unwrap_or_default())
        .collect();
    all.iter()
        .find(|k| k.ends_with("accuracy"))
        .or(all.first())
        .cloned()
}

fn series_of(runs: &[(RunRow, Vec<EpochRow>)], key: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for (i, (r, es)) in runs.iter().enumerate() {
        for (k, dashed) in [(key.to_string(), false), (format!("val_{key}"), true)] {
            if key == "learning_rate" && dashed {
                continue;
            }
            let points: Vec<(f64, f64)> = es
                .iter()
                .filter_map(|e| {
                    let v = e.metrics.get(&k).and_then(|v| v.as_f64())?;
                    v.is_finite().then_some((e.epoch as f64, v))
                })
                .collect();
            if !points.is_empty() {
                let label = if runs.len() == 1 {
                    k.clone()
                } else {
                    format!("run {} {k}", r.id)
                };
                out.push(Series {
                    label,
                    run: i,
                    dashed,
                    points,
                });
            }
        }
    }
    out
}

/// Draws `runs` (each with its epochs) into `path` (.svg or .png), `size` pixels.
pub fn plot(runs: &[(RunRow, Vec<EpochRow>)], path: &Path, size: (u32, u32)) -> Result<(), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    if !matches!(ext.as_deref(), Some("svg" | "png")) {
        return Err(format!("{}: name an .svg or a .png file", path.display()));
    }
    if runs.iter().all(|(_, es)| es.is_empty()) {
        return Err("the runs have no finished epoch yet: nothing to plot".into());
    }
    load_font()?;
    let mut panels: Vec<(String, Vec<Series>)> = vec![("loss".into(), series_of(runs, "loss"))];
    if let Some(m) = chosen_metric(runs) {
        panels.push((m.clone(), series_of(runs, &m)));
    }
    let lr = series_of(runs, "learning_rate");
    if !lr.is_empty() {
        panels.push(("learning rate".into(), lr));
    }
    let title = match runs {
        [(r, _)] => format!(
            "run {}: {} ({}, {})",
            r.id, r.model_name, r.optimizer_type, r.loss
        ),
        _ => format!(
            "runs {}",
            runs.iter()
                .map(|(r, _)| r.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let err = |e: String| format!("{}: cannot draw: {e}", path.display());
    if ext.as_deref() == Some("svg") {
        let root = SVGBackend::new(path, size).into_drawing_area();
        draw(&root, &title, &panels).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))
    } else {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        draw(&root, &title, &panels).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    panels: &[(String, Vec<Series>)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(e)?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, (name, series)) in areas.iter().zip(panels) {
        let pts = series.iter().flat_map(|s| s.points.iter());
        let (mut x1, mut lo, mut hi) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in pts {
            x1 = x1.max(x);
            lo = lo.min(y);
            hi = hi.max(y);
        }
        if !lo.is_finite() {
            continue;
        }
        let pad = ((hi - lo) * 0.06).max(hi.abs().max(1e-12) * 1e-3);
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(1.0..x1.max(2.0), (lo - pad)..(hi + pad))
            .map_err(e)?;
        // Whole epochs only; small values in scientific notation, all alike in a panel.
        let epochs = (x1 as usize).clamp(2, 12);
        let sci = hi.abs().max(lo.abs()) < 1e-2;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(name.as_str())
            .x_labels(epochs)
            .y_labels(6)
            .light_line_style(RGBColor(242, 242, 242))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-9 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                if sci {
                    format!("{y:.1e}")
                } else {
                    format!("{y:.3}")
                }
            })
            .draw()
            .map_err(e)?;
        for s in series {
            let c = COLORS[s.run % COLORS.len()];
            let style = c.stroke_width(2);
            let label = s.label.clone();
            let anno = if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(s.points.iter().copied(), 6, 4, style))
                    .map_err(e)?
            } else {
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), style))
                    .map_err(e)?
            };
            let dashed = s.dashed;
            anno.label(label).legend(move |(x, y)| {
                // The key looks like its line: two dashes for validation.
                let gap = if dashed { (7, 11) } else { (9, 9) };
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (gap.0, 0)], c.stroke_width(2))
                    + PathElement::new(vec![(gap.1, 0), (18, 0)], c.stroke_width(2))
            });
            if s.points.len() <= 60 {
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 2, c.filled())))
                    .map_err(e)?;
            }
        }
        // The key where the curves are not: curves that rise leave the lower right empty.
        let rising = series
            .first()
            .and_then(|s| Some(s.points.last()?.1 > s.points.first()?.1))
            .unwrap_or(false);
        let corner = if rising {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        };
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .position(corner)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}
