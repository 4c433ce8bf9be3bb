//! A picture a person can look at: latency histogram and throughput over time for
//! each measurement, as a self-contained SVG (no fonts or plotting crate needed).

use std::fmt::Write;

use crate::measure::Measurement;

const W: f64 = 560.0;
const H: f64 = 220.0;
const PAD: f64 = 44.0;

pub fn render(title: &str, measurements: &[Measurement]) -> String {
    let panels: Vec<&Measurement> = measurements.iter().filter(|m| m.ok > 0).collect();
    let height = (panels.len().max(1) as f64) * (H + 30.0) + 40.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        2.0 * W + 30.0
    );
    let _ = write!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    for (i, m) in panels.iter().enumerate() {
        let y = 40.0 + i as f64 * (H + 30.0);
        histogram(&mut svg, m, 10.0, y);
        timeline(&mut svg, m, W + 20.0, y);
    }
    svg.push_str("</svg>\n");
    svg
}

fn frame(svg: &mut String, x: f64, y: f64, caption: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        svg,
        r##"<rect x="{x}" y="{y}" width="{W}" height="{H}" fill="none" stroke="#999"/><text x="{}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end" fill="#555">{}</text><text x="{}" y="{}" fill="#555">{}</text>"##,
        x + 6.0,
        y + 14.0,
        escape(caption),
        x + W - 6.0,
        y + H - 6.0,
        escape(x_label),
        x + 6.0,
        y + 28.0,
        escape(y_label),
    );
}

fn histogram(svg: &mut String, m: &Measurement, x: f64, y: f64) {
    frame(
        svg,
        x,
        y,
        &format!("{}: latency", m.name),
        &format!("µs (log), p99 {} µs", m.p99_us),
        "requests",
    );
    let buckets = &m.latency_buckets;
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let n = buckets.len().max(1) as f64;
    let bw = (W - 2.0 * PAD) / n;
    for (i, (upper, count)) in buckets.iter().enumerate() {
        let h = (H - 2.0 * PAD) * (*count as f64 / max);
        let bx = x + PAD + i as f64 * bw;
        let _ = write!(
            svg,
            r##"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#4a7ebb"/>"##,
            y + H - PAD - h,
            (bw - 1.0).max(0.5)
        );
        if i % 4 == 0 {
            let _ = write!(
                svg,
                r##"<text x="{bx:.1}" y="{:.1}" fill="#333" font-size="9">{upper}</text>"##,
                y + H - PAD + 12.0
            );
        }
    }
}

fn timeline(svg: &mut String, m: &Measurement, x: f64, y: f64) {
    frame(
        svg,
        x,
        y,
        &format!("{}: throughput", m.name),
        "time (100 ms steps)",
        "per second",
    );
    let points = &m.timeline_per_sec;
    let max = points.iter().copied().max().unwrap_or(1).max(1) as f64;
    let n = points.len().max(2) as f64 - 1.0;
    let coords: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let px = x + PAD + (W - 2.0 * PAD) * (i as f64 / n);
            let py = y + H - PAD - (H - 2.0 * PAD) * (*v as f64 / max);
            format!("{px:.1},{py:.1}")
        })
        .collect();
    let _ = write!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#c0392b" stroke-width="1.5"/><text x="{}" y="{}" fill="#333">max {max:.0}/s</text>"##,
        coords.join(" "),
        x + PAD,
        y + PAD - 4.0,
    );
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
