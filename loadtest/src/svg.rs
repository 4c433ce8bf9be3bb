//! A picture a person can look at: for each measurement, its latency histogram and
//! its throughput over time side by side, as a self-contained SVG (no fonts or
//! plotting crate needed).
//!
//! Made to be compared at a glance, so panels share their scales:
//! - every latency histogram has the same x axis, on a log scale: a baseline answers
//!   in tens of µs while a scenario can take ms, and on a log axis both shapes keep
//!   their proportions (the recorder's buckets are log-spaced, each ×1.5 the last, so
//!   every bar is as wide as every other);
//! - every latency histogram has the same y axis, the share of that measurement's
//!   requests in each bucket: counts would make a 400-request baseline look small
//!   next to a 40 000-request run;
//! - every throughput timeline has the same y axis, requests/s; its time axis is its
//!   own run's, so a 40 ms baseline is drawn as wide as a 10 s scenario.

use std::fmt::Write;

use shoal_svg::{Area, axes, escape, fmt_sig, fmt_tick, linear_axis, log_axis, ticks};

use crate::measure::Measurement;

/// One panel (a histogram or a timeline) and the margins around its plot area.
const W: f64 = 560.0;
const H: f64 = 230.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
/// Where the panels start, below the title and the line saying how to read them.
const HEAD: f64 = 52.0;
const GAP: f64 = 14.0;
/// The recorder's timeline step: measure.rs counts completions per 100 ms.
const STEP_S: f64 = 0.1;
/// The ratio between the recorder's successive latency bucket bounds.
const LOG_BASE: f64 = 1.5;

pub fn render(title: &str, measurements: &[Measurement]) -> String {
    let panels: Vec<&Measurement> = measurements.iter().filter(|m| m.ok > 0).collect();
    let scales = Scales::of(&panels);
    let (width, height) = (
        2.0 * W + 30.0,
        HEAD + (panels.len().max(1) as f64) * (H + GAP),
    );
    let how = "Latency: one log-scale axis for every panel, bars are the share of each \
               measurement's requests. Throughput: one requests/s axis for every panel, \
               time from each run's start.";
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15">{}</text><text x="10" y="40" fill="#555">{}</text>"##,
        escape(title),
        escape(how),
    );
    if panels.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="10" y="{}">no measurement completed a request</text>"#,
            HEAD + 20.0
        );
    }
    for (i, m) in panels.iter().enumerate() {
        let y = HEAD + i as f64 * (H + GAP);
        histogram(&mut svg, m, &scales, 10.0, y);
        timeline(&mut svg, m, &scales, W + 20.0, y);
    }
    svg.push_str("</svg>\n");
    svg
}

/// The ranges every panel of one picture shares.
struct Scales {
    /// Latency axis ends in µs, and its ticks.
    latency: (f64, f64),
    latency_ticks: Vec<f64>,
    /// Share axis (top, tick step), as fractions of a measurement's requests.
    share: (f64, f64),
    /// Throughput axis (top, tick step), requests/s.
    rate: (f64, f64),
}

impl Scales {
    fn of(panels: &[&Measurement]) -> Scales {
        let bars: Vec<Bar> = panels
            .iter()
            .flat_map(|m| bars(m))
            .filter(|b| b.share > 0.0)
            .collect();
        let lo = bars.iter().map(|b| b.lo).fold(f64::INFINITY, f64::min);
        let hi = bars.iter().map(|b| b.hi).fold(0.0, f64::max);
        let (latency, latency_ticks) = if bars.is_empty() {
            log_axis(1.0, 1e3)
        } else {
            log_axis(lo, hi)
        };
        let share = bars.iter().map(|b| b.share).fold(0.0, f64::max);
        let rate = panels
            .iter()
            .flat_map(|m| steps(m))
            .map(|s| s.rate)
            .fold(0.0, f64::max);
        Scales {
            latency,
            latency_ticks,
            share: linear_axis(share, 4.0),
            rate: linear_axis(rate, 4.0),
        }
    }
}

/// One latency bucket: its bounds in µs and its share of the requests.
struct Bar {
    lo: f64,
    hi: f64,
    share: f64,
}

/// The recorder's buckets as bars; each starts where the last ended (the first, which
/// holds everything down to 1 µs, is drawn one ×1.5 step wide like the others).
fn bars(m: &Measurement) -> Vec<Bar> {
    let total = m.latency_buckets.iter().map(|b| b.1).sum::<u64>().max(1) as f64;
    let mut lo = m
        .latency_buckets
        .first()
        .map_or(1.0, |b| (b.0 as f64 / LOG_BASE).max(0.5));
    let mut bars = Vec::new();
    for &(upper, count) in &m.latency_buckets {
        let hi = (upper as f64).max(lo * 1.01);
        bars.push(Bar {
            lo,
            hi,
            share: count as f64 / total,
        });
        lo = hi;
    }
    bars
}

/// A stretch of a run's timeline and its completions per second.
#[derive(Debug)]
struct Step {
    from: f64,
    to: f64,
    rate: f64,
}

/// The timeline as rates over the time each step really covered. The recorder only
/// keeps 100 ms counts, so a finer step cannot be chosen here; instead the last step,
/// cut short by the run's end, is a rate over its own length. A run that finished
/// within one step (the baselines) is therefore one bar at its mean rate, as wide as
/// its panel: not empty, and its height reads on the same requests/s axis as every
/// other panel. A last step under half a step long joins the one before, so a few
/// completions in its last 3 ms do not draw a spike no one saw.
fn steps(m: &Measurement) -> Vec<Step> {
    let counts: Vec<f64> = m
        .timeline_per_sec
        .iter()
        .map(|v| *v as f64 * STEP_S)
        .collect();
    let Some(last) = counts.len().checked_sub(1) else {
        let (from, to, rate) = (0.0, m.seconds.max(1e-6), m.per_sec);
        return vec![Step { from, to, rate }];
    };
    let mut steps: Vec<Step> = (counts.iter().enumerate())
        .map(|(i, c)| Step {
            from: i as f64 * STEP_S,
            to: (i + 1) as f64 * STEP_S,
            rate: c / STEP_S,
        })
        .collect();
    let start = last as f64 * STEP_S;
    let tail = (m.seconds - start).clamp(1e-6, STEP_S);
    if last > 0 && tail < STEP_S / 2.0 {
        steps.pop();
        steps[last - 1].to = start + tail;
        steps[last - 1].rate = (counts[last - 1] + counts[last]) / (STEP_S + tail);
    } else {
        steps[last].to = start + tail;
        steps[last].rate = counts[last] / tail;
    }
    // Nothing completed in the run's last stretch: a stall, shown as one.
    if m.seconds - (start + tail) > STEP_S / 2.0 {
        let (from, to, rate) = (start + tail, m.seconds, 0.0);
        steps.push(Step { from, to, rate });
    }
    steps
}

/// The plot area of the panel whose top left corner is at (`x`, `y`).
fn in_panel(x: f64, y: f64) -> Area {
    Area {
        x: x + LEFT,
        y: y + TOP,
        w: W - LEFT - RIGHT,
        h: H - TOP - BOTTOM,
    }
}

fn histogram(svg: &mut String, m: &Measurement, s: &Scales, x: f64, y: f64) {
    let a = in_panel(x, y);
    let (lo, hi, bottom) = (s.latency.0, s.latency.1, a.y + a.h);
    let px = |us: f64| a.x + a.w * ((us.clamp(lo, hi) / lo).ln() / (hi / lo).ln());
    let py = |share: f64| bottom - a.h * (share / s.share.0).min(1.0);
    let mut xs = vec![(0.0, "latency (log scale)".to_string())];
    xs.extend(s.latency_ticks.iter().map(|t| (px(*t), fmt_us(*t))));
    let mut ys = vec![(0.0, "share of requests".to_string())];
    ys.extend(ticks(s.share).map(|v| (py(v), fmt_tick(v * 100.0, s.share.1 * 100.0) + "%")));
    let (p50, p99) = (fmt_us(m.p50_us as f64), fmt_us(m.p99_us as f64));
    let caption = format!(
        "{}: latency, p50 {p50}, p99 {p99}, {} requests",
        m.name, m.ok
    );
    svg.push_str(r#"<g class="latency">"#);
    axes(svg, a, &caption, &xs, &ys);
    for b in bars(m).iter().filter(|b| b.share > 0.0) {
        let (x0, x1, top) = (px(b.lo) + 0.5, px(b.hi) - 0.5, py(b.share));
        let (w, h) = ((x1 - x0).max(1.0), bottom - top);
        let _ = write!(
            svg,
            r##"<rect class="bar" x="{x0:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="#4a7ebb"/>"##
        );
    }
    // Percentile markers, labelled on either side so close ones stay readable.
    for (label, us, anchor, dx) in [
        ("p50", m.p50_us, "end", -3.0),
        ("p99", m.p99_us, "start", 3.0),
    ] {
        let (p, ly) = (px(us as f64), a.y + 10.0);
        let _ = write!(
            svg,
            r##"<line x1="{p:.1}" y1="{}" x2="{p:.1}" y2="{bottom}" stroke="#222" stroke-dasharray="3,3"/><text x="{:.1}" y="{ly}" text-anchor="{anchor}" font-size="10" fill="#222">{label}</text>"##,
            a.y,
            p + dx,
        );
    }
    svg.push_str("</g>");
}

fn timeline(svg: &mut String, m: &Measurement, s: &Scales, x: f64, y: f64) {
    let a = in_panel(x, y);
    let bottom = a.y + a.h;
    let steps = steps(m);
    let end = steps.last().map_or(m.seconds, |s| s.to).max(1e-6);
    // Milliseconds for a run under a second (a baseline), else seconds.
    let (scale, unit) = if end < 1.0 {
        (1000.0, "ms")
    } else {
        (1.0, "s")
    };
    // The axis ends where the run did, so every run fills its panel's width.
    let time = (end * scale, linear_axis(end * scale, 6.0).1);
    let px = |t: f64| a.x + a.w * (t * scale / time.0).min(1.0);
    let py = |rate: f64| bottom - a.h * (rate / s.rate.0).min(1.0);
    let mut xs = vec![(0.0, "time since the run's start".to_string())];
    xs.extend(ticks(time).map(|t| (px(t / scale), format!("{} {unit}", fmt_tick(t, time.1)))));
    let mut ys = vec![(0.0, "requests/s".to_string())];
    ys.extend(ticks(s.rate).map(|r| (py(r), fmt_tick(r, s.rate.1))));
    let (mean, over) = (fmt_sig(m.per_sec), fmt_us(m.seconds * 1e6));
    let caption = format!("{}: throughput, mean {mean}/s over {over}", m.name);
    svg.push_str(r#"<g class="throughput">"#);
    axes(svg, a, &caption, &xs, &ys);
    let mut d = format!("M{:.1},{bottom:.1}", px(0.0));
    for step in &steps {
        let (x0, y0, x1) = (px(step.from), py(step.rate), px(step.to));
        let _ = write!(d, " L{x0:.1},{y0:.1} H{x1:.1}");
    }
    let _ = write!(
        svg,
        r##"<path class="rate" d="{d} V{bottom:.1} Z" fill="#f2c4be" stroke="#c0392b" stroke-width="1.5"/>"##
    );
    if m.timeline_per_sec.len() <= 1 {
        // Haloed: the bar may reach up behind it.
        let note = "finished within one 100 ms step: one bar at its mean rate";
        let (nx, ny) = (a.x + 8.0, a.y + 14.0);
        let _ = write!(
            svg,
            r##"<text x="{nx}" y="{ny}" fill="#222" stroke="white" stroke-width="3" paint-order="stroke">{note}</text>"##
        );
    }
    svg.push_str("</g>");
}

fn fmt_us(us: f64) -> String {
    match us {
        us if us >= 1e6 => format!("{} s", fmt_sig(us / 1e6)),
        us if us >= 1e3 => format!("{} ms", fmt_sig(us / 1e3)),
        us => format!("{} µs", fmt_sig(us)),
    }
}

#[cfg(test)]
#[path = "svg_tests.rs"]
mod tests;
