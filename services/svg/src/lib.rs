//! Plot primitives for Shoal's self-contained SVG pictures (no fonts or plotting
//! crate needed): a plot area, its axes with gridlines, ticks and titles, round tick
//! values on linear and log axes, and numbers and text as labels. The loadtest's
//! latency and throughput panels and `shoal replay`'s spread chart are drawn with
//! them.

use std::fmt::Write;

/// How far left of its plot area an axis's rotated y title stands.
pub const Y_TITLE_OFFSET: f64 = 48.0;

/// A log axis from the 1-2-5 value at or below `lo` to the one at or above `hi`, so
/// both ends are labelled. Ticks at every 1-2-5 value when it spans two decades or
/// less, else at its ends and the powers of ten between that leave room for a label.
pub fn log_axis(lo: f64, hi: f64) -> ((f64, f64), Vec<f64>) {
    let (a, b) = (
        (lo.log10() + 1e-9).floor() as i32,
        (hi.log10() - 1e-9).ceil() as i32,
    );
    let values: Vec<f64> = (a..=b + 1)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|k| k * 10f64.powi(e)))
        .collect();
    let start = *values
        .iter()
        .rev()
        .find(|v| **v <= lo * (1.0 + 1e-9))
        .unwrap_or(&values[0]);
    let end = (values.iter().copied())
        .find(|v| *v > start && *v >= hi * (1.0 - 1e-9))
        .unwrap_or(values[values.len() - 1]);
    let decades = (end / start).log10();
    let decade = |v: f64| (v.log10() - v.log10().round()).abs() < 1e-9;
    let room = |v: f64| (v / start).log10().min((end / v).log10()) >= 0.08 * decades;
    let ticks = values.into_iter().filter(|v| (start..=end).contains(v));
    let ticks = ticks
        .filter(|v| decades <= 2.0 + 1e-9 || *v == start || *v == end || (decade(*v) && room(*v)));
    ((start, end), ticks.collect())
}

/// A linear axis from 0 holding `max` in about `ticks` steps of 1, 2, 2.5 or 5 times
/// a power of ten: (top, step).
pub fn linear_axis(max: f64, ticks: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (1.0, 0.25);
    }
    let raw = max / ticks;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = ([1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|k| k * magnitude))
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    ((max / step - 1e-9).ceil().max(1.0) * step, step)
}

/// 0, step, 2 × step, … up to an axis's top.
pub fn ticks((top, step): (f64, f64)) -> impl Iterator<Item = f64> {
    (0..=((top / step + 1e-9).floor() as u32)).map(move |i| i as f64 * step)
}

/// A plot area's pixel box.
#[derive(Clone, Copy)]
pub struct Area {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Caption, gridlines, both axes with their ticks and titles: `x` and `y` are the
/// title then the ticks, (pixel, label).
pub fn axes(svg: &mut String, a: Area, caption: &str, x: &[(f64, String)], y: &[(f64, String)]) {
    let (left, right, top, bottom) = (a.x, a.x + a.w, a.y, a.y + a.h);
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{}" font-size="12">{}</text>"#,
        top - 12.0,
        escape(caption)
    );
    for (py, label) in &y[1..] {
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#e4e4e4"/><text class="ytick" x="{}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            left - 5.0,
            py + 3.5,
            escape(label)
        );
    }
    for (px, label) in &x[1..] {
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{}" stroke="#333"/><text class="xtick" x="{px:.1}" y="{}" text-anchor="middle" fill="#333">{}</text>"##,
            bottom + 4.0,
            bottom + 15.0,
            escape(label)
        );
    }
    let (cx, cy, tx, ty) = (
        left - Y_TITLE_OFFSET,
        top + a.h / 2.0,
        left + a.w / 2.0,
        bottom + 32.0,
    );
    let _ = write!(
        svg,
        r##"<path d="M{left},{top} V{bottom} H{right}" fill="none" stroke="#333"/><text class="xtitle" x="{tx}" y="{ty}" text-anchor="middle" fill="#555">{}</text><text class="ytitle" x="{cx}" y="{cy}" transform="rotate(-90 {cx} {cy})" text-anchor="middle" fill="#555">{}</text>"##,
        escape(&x[0].1),
        escape(&y[0].1),
    );
}

/// A tick value with as many decimals as its axis step needs, thousands as k.
pub fn fmt_tick(v: f64, step: f64) -> String {
    let (v, step, suffix) = match step {
        s if s >= 1e6 => (v / 1e6, step / 1e6, "M"),
        s if s >= 1e3 => (v / 1e3, step / 1e3, "k"),
        _ => (v, step, ""),
    };
    if v == 0.0 {
        return "0".to_string();
    }
    let scaled = |d: &usize| step * 10f64.powi(*d as i32);
    let decimals = (0..4).find(|d| (scaled(d) - scaled(d).round()).abs() < 1e-6);
    let decimals = decimals.unwrap_or(4);
    format!("{v:.decimals$}{suffix}")
}

/// Three significant figures, thousands as k.
pub fn fmt_sig(v: f64) -> String {
    match v {
        v if v >= 1e3 => fmt_sig(v / 1e3) + "k",
        v if v >= 100.0 => format!("{v:.0}"),
        v => {
            let s = format!("{v:.*}", if v >= 10.0 { 1 } else { 2 });
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

/// `s` as SVG text.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_values() {
        assert_eq!(log_axis(60.0, 900.0).1, [50.0, 100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(log_axis(6.0, 3e6).1, [5.0, 100.0, 1e3, 1e4, 1e5, 1e6, 5e6]);
        assert_eq!(linear_axis(10_526.0, 4.0), (15_000.0, 5_000.0));
        assert_eq!(linear_axis(0.0, 4.0), (1.0, 0.25));
        assert_eq!(
            ticks((1.0, 0.25)).collect::<Vec<_>>(),
            [0.0, 0.25, 0.5, 0.75, 1.0]
        );
        assert_eq!(
            (fmt_tick(2_500.0, 2_500.0), fmt_tick(0.5, 0.25)),
            ("2.5k".into(), "0.50".into())
        );
        assert_eq!(
            (fmt_sig(1_234.0), fmt_sig(2.5)),
            ("1.23k".into(), "2.5".into())
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }

    #[test]
    fn axes_draw_their_titles_ticks_and_caption() {
        let mut svg = String::new();
        let a = Area {
            x: 60.0,
            y: 30.0,
            w: 400.0,
            h: 160.0,
        };
        let x = [(0.0, "time".to_string()), (260.0, "5 s".to_string())];
        let y = [(0.0, "agents".to_string()), (110.0, "2".to_string())];
        axes(&mut svg, a, "spread <max-min>", &x, &y);
        for text in [
            ">time<",
            ">5 s<",
            ">agents<",
            ">2<",
            "spread &lt;max-min&gt;",
        ] {
            assert!(svg.contains(text), "{text} missing from {svg}");
        }
    }
}
