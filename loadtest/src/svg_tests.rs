//! Tests of the loadtest picture: axes, shared ranges, short runs, and a real
//! render to PNG.

use std::process::Command;
use std::time::Duration;

use super::*;
use crate::measure::Recorder;

/// A measurement as the recorder makes it: these latencies (µs), all successful,
/// over `seconds`, with this timeline (completions/s per 100 ms step).
fn measured(name: &str, latencies: &[u64], seconds: f64, timeline: &[u64]) -> Measurement {
    let mut recorder = Recorder::new();
    for us in latencies {
        recorder.record(Duration::from_micros(*us), &Ok(()));
    }
    let mut m = recorder.measurement(name, Duration::from_secs_f64(seconds));
    m.timeline_per_sec = timeline.to_vec();
    m
}

/// A baseline: 400 requests of 40–200 µs in 38 ms, all within one 100 ms step.
fn baseline() -> Measurement {
    let latencies: Vec<u64> = (0..400).map(|i| 40 + i % 160).collect();
    measured("baseline: nats request/reply", &latencies, 0.038, &[4000])
}

/// A scenario: 2 000 requests of 0.8–5 ms over 2 s, slower at the end.
fn scenario() -> Measurement {
    let latencies: Vec<u64> = (0..2000).map(|i| 800 + (i * 7) % 4200).collect();
    let timeline: Vec<u64> = (0..20).map(|i| if i < 15 { 1100 } else { 700 }).collect();
    measured("assign", &latencies, 2.0, &timeline)
}

/// The texts of the `class` elements in each `<g class="{group}">`, in order.
fn labels(svg: &str, group: &str, class: &str) -> Vec<Vec<String>> {
    let (open, tag) = (
        format!(r#"<g class="{group}">"#),
        format!(r#"class="{class}""#),
    );
    let text = |t: &str| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].to_string();
    let groups = svg
        .split(&open)
        .skip(1)
        .map(|g| &g[..g.find("</g>").unwrap()]);
    groups
        .map(|g| g.split(&tag).skip(1).map(text).collect())
        .collect()
}

#[test]
fn both_axes_of_both_plots_have_titles_and_tick_labels() {
    let svg = render("shoal-loadtest assign", &[baseline(), scenario()]);
    let titles = ["latency (log scale)", "share of requests", "requests/s"];
    for title in titles.into_iter().chain(["time since the run's start"]) {
        assert!(svg.contains(title), "no axis title {title:?} in {svg}");
    }
    for group in ["latency", "throughput"] {
        for class in ["xtick", "ytick"] {
            for ticks in labels(&svg, group, class) {
                assert!(ticks.len() >= 3, "{group} {class}: {ticks:?}");
            }
        }
    }
    let has = |group, class, i: usize, label: &str| {
        labels(&svg, group, class)[i].iter().any(|l| l == label)
    };
    assert!(has("latency", "ytick", 0, "0%") && has("latency", "xtick", 0, "1 ms"));
    assert!(has("throughput", "ytick", 1, "10k"));
    assert!(has("throughput", "xtick", 0, "10 ms") && has("throughput", "xtick", 1, "1.0 s"));
}

#[test]
fn every_latency_histogram_has_the_same_x_and_y_axes() {
    let svg = render("t", &[baseline(), scenario()]);
    let x = labels(&svg, "latency", "xtick");
    assert_eq!(x.len(), 2);
    assert_eq!(x[0], x[1], "one x axis for both histograms");
    // From below the baseline's fastest (40 µs) to above the scenario's slowest.
    assert_eq!(x[0], ["20 µs", "100 µs", "1 ms", "10 ms"]);
    let y = labels(&svg, "latency", "ytick");
    assert_eq!(y[0], y[1], "one share axis for both histograms");
}

#[test]
fn every_throughput_timeline_has_the_same_y_axis() {
    let svg = render("t", &[baseline(), scenario()]);
    let y = labels(&svg, "throughput", "ytick");
    assert_eq!(y.len(), 2);
    assert_eq!(y[0], y[1]);
    // The baseline's 400 in 38 ms is ~10.5k/s: the shared axis holds it.
    assert_eq!(y[0].last().map(String::as_str), Some("15k"), "{y:?}");
}

#[test]
fn a_run_within_one_step_is_one_bar_at_its_mean_rate_across_its_panel() {
    let m = baseline();
    let steps = steps(&m);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!((steps[0].from, steps[0].to), (0.0, 0.038));
    assert!(
        (steps[0].rate - m.per_sec).abs() < 1.0,
        "{steps:?}, {}",
        m.per_sec
    );
    // Drawn: the filled area spans most of the plot's width and is tall.
    let svg = render("t", &[m]);
    let d = svg.split(r#"class="rate" d=""#).nth(1).unwrap();
    let d = &d[..d.find('"').unwrap()];
    let n: Vec<f64> = (d.split(|c: char| !(c.is_ascii_digit() || c == '.')))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(n.len(), 6, "one bar: {d}");
    let (width, height, plot) = (n[4] - n[0], n[1] - n[3], in_panel(0.0, 0.0));
    assert!(width > 0.7 * plot.w && height > 0.5 * plot.h, "{d}");
    assert!(svg.contains("one bar at its mean rate"));
}

#[test]
fn a_short_last_step_joins_the_one_before_instead_of_drawing_a_spike() {
    // 100 per step, then 3 completions in the last 3 ms.
    let steps = steps(&measured("t", &[100; 203], 0.203, &[1000, 1000, 30]));
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!((steps[1].to - 0.203).abs() < 1e-9 && (steps[1].rate - 1000.0).abs() < 1.0);
}

#[test]
fn text_is_escaped_and_ticks_are_round_values() {
    let svg = render("a<b & c>", &[measured("x<y>", &[100], 0.01, &[100])]);
    assert!(svg.contains("a&lt;b &amp; c&gt;") && svg.contains("x&lt;y&gt;: latency"));
    assert!(!svg.contains("x<y>"));
    assert_eq!(
        (fmt_us(1_000.0), fmt_us(38_000.0)),
        ("1 ms".into(), "38 ms".into())
    );
}

/// rsvg-convert renders the picture to a PNG; it fails on malformed SVG.
#[test]
fn the_picture_renders_to_a_png() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (svg, png) = (dir.path().join("in.svg"), dir.path().join("out.png"));
    let picture = render("shoal-loadtest assign", &[baseline(), scenario()]);
    std::fs::write(&svg, picture).expect("writing the SVG");
    let output = match Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&svg)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("rsvg-convert is not installed: run scripts/deps.sh (Debian's librsvg2-bin)")
        }
        Err(e) => panic!("running rsvg-convert: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rsvg-convert {}: {stderr}",
        output.status
    );
    let bytes = std::fs::read(&png).expect("reading the PNG rsvg-convert wrote");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 8 * 1024,
        "a PNG of only {} bytes",
        bytes.len()
    );
}
