//! `shoal replay --svg`: the spread (max − min agents per node) over the history's
//! time, one line for what really happened and one per replayed strategy, on shared
//! axes, as a self-contained SVG drawn with the project's plot primitives.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use shoal_svg::{Area, axes, escape, fmt_tick, linear_axis, ticks};

use super::engine::{Report, RunReport};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
/// The plot area.
const AREA: Area = Area {
    x: 70.0,
    y: 70.0,
    w: 640.0,
    h: 290.0,
};
/// Points per line at most: a long history is drawn by its largest spread per
/// column of pixels.
const MAX_POINTS: usize = 640;
/// Line colours, the real run first (black).
const COLOURS: [&str; 6] = [
    "#111111", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
];

pub fn render(report: &Report) -> String {
    let span = (report.to - report.from)
        .to_std()
        .map_or(0.0, |d| d.as_secs_f64())
        .max(1e-3);
    let (scale, unit) = match span {
        s if s >= 7_200.0 => (3_600.0, "h"),
        s if s >= 120.0 => (60.0, "min"),
        _ => (1.0, "s"),
    };
    let time = (span / scale, linear_axis(span / scale, 6.0).1);
    let top = report
        .runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| f64::from(s.spread)))
        .fold(0.0, f64::max);
    let spread = linear_axis(top.max(1.0), 5.0);
    let a = AREA;
    let px = |t: f64| a.x + a.w * (t / time.0).clamp(0.0, 1.0);
    let py = |v: f64| a.y + a.h - a.h * (v / spread.0).min(1.0);

    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15">{}</text><text x="10" y="40" fill="#555">{}</text>"##,
        escape(&format!(
            "shoal replay: spread of agents over {} change(s), {} node(s)",
            report.rows, report.nodes
        )),
        escape(
            "Max − min agents per node that could take work, after each change; real and each replayed strategy on the same axes."
        ),
    );
    let mut xs = vec![(
        0.0,
        format!("time since {}", crate::output::time(report.from)),
    )];
    xs.extend(ticks(time).map(|t| (px(t), format!("{} {unit}", fmt_tick(t, time.1)))));
    let mut ys = vec![(0.0, "max − min agents".to_string())];
    ys.extend(ticks(spread).map(|v| (py(v), fmt_tick(v, spread.1))));
    axes(&mut svg, a, "spread over time", &xs, &ys);
    for (i, run) in report.runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = points(run, report.from, scale, time.0);
        let mut d = String::new();
        for (k, (t, v)) in points.iter().enumerate() {
            let (x, y) = (px(*t), py(*v));
            if k == 0 {
                let _ = write!(d, "M{x:.1},{y:.1}");
            } else {
                // A step: the spread holds until the next change.
                let _ = write!(d, " H{x:.1} V{y:.1}");
            }
        }
        let dash = if i == 0 {
            ""
        } else {
            r#" stroke-dasharray="6,3""#
        };
        let _ = write!(
            svg,
            r#"<path class="line" d="{d}" fill="none" stroke="{colour}" stroke-width="{}"{dash}/>"#,
            if i == 0 { 2.5 } else { 1.5 }
        );
        legend(&mut svg, i, colour, run);
    }
    svg.push_str("</svg>\n");
    svg
}

/// One legend entry, right of the plot.
fn legend(svg: &mut String, i: usize, colour: &str, run: &RunReport) {
    let (x, y) = (AREA.x + AREA.w + 20.0, AREA.y + 10.0 + 22.0 * i as f64);
    let _ = write!(
        svg,
        r##"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="2.5"/><text class="legend" x="{}" y="{}" fill="#222">{}</text>"##,
        x + 24.0,
        x + 30.0,
        y + 4.0,
        escape(&format!(
            "{} (mean {:.2})",
            run.name, run.summary.spread.mean
        ))
    );
}

/// (time in the axis's unit, spread), at most [`MAX_POINTS`] columns, each the
/// largest spread within it.
fn points(run: &RunReport, from: DateTime<Utc>, scale: f64, end: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let column = end / MAX_POINTS as f64;
    for s in &run.samples {
        let t = (s.at - from).to_std().map_or(0.0, |d| d.as_secs_f64()) / scale;
        let v = f64::from(s.spread);
        match out.last_mut() {
            Some((lt, lv)) if t - *lt < column => *lv = lv.max(v),
            _ => out.push((t, v)),
        }
    }
    out
}
