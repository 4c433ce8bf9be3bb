//! The run's report: a summary table for people, JSON for machines, checks that make
//! the exit code, and ratios of each figure to its same-run baseline.

use serde::Serialize;

use crate::measure::Measurement;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    /// The goal, when the project has one for this figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub measurements: Vec<Measurement>,
    pub ratios: Vec<Ratio>,
    /// Scenario-specific figures (distribution, failover gap, CPU share, …).
    pub figures: serde_json::Map<String, serde_json::Value>,
    /// Verification: a failed check makes the run exit non-zero.
    pub checks: Vec<Check>,
    /// The project's speed goals: reported, met or not, without failing the run
    /// (these machines are noisy; compare medians of several runs).
    pub goals: Vec<Check>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            ..Default::default()
        }
    }

    pub fn figure(&mut self, name: &str, value: impl Serialize) {
        self.figures.insert(
            name.to_string(),
            serde_json::to_value(value).unwrap_or_default(),
        );
    }

    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn goal(&mut self, name: &str, met: bool, detail: impl Into<String>) {
        self.goals.push(Check {
            name: name.to_string(),
            ok: met,
            detail: detail.into(),
        });
    }

    pub fn ratio(&mut self, name: &str, value: f64, goal: Option<&str>) {
        self.ratios.push(Ratio {
            name: name.to_string(),
            value,
            goal: goal.map(str::to_string),
        });
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The goals this run missed.
    pub fn missed_goals(&self) -> Vec<&str> {
        self.goals
            .iter()
            .filter(|g| !g.ok)
            .map(|g| g.name.as_str())
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = format!("scenario: {}\n\n", self.scenario);
        out += &format!(
            "{:<34} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
            "measurement",
            "ok",
            "per sec",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "errors"
        );
        for m in &self.measurements {
            out += &format!(
                "{:<34} {:>9} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}\n",
                m.name,
                m.ok,
                m.per_sec,
                m.p50_us,
                m.p95_us,
                m.p99_us,
                m.p999_us,
                m.max_us,
                m.error_count()
            );
            for (code, n) in &m.errors {
                out += &format!("{:<34}   {n} × {code}\n", "");
            }
        }
        if !self.ratios.is_empty() {
            out += "\nratios to the same-run baseline\n";
            for r in &self.ratios {
                out += &format!(
                    "  {:<52} {:>8.3}  {}\n",
                    r.name,
                    r.value,
                    r.goal.as_deref().unwrap_or("")
                );
            }
        }
        if !self.figures.is_empty() {
            out += "\nfigures\n";
            for (k, v) in &self.figures {
                render_figure(&mut out, 1, k, v);
            }
        }
        if !self.goals.is_empty() {
            out += "\ngoals\n";
            for g in &self.goals {
                out += &format!(
                    "  [{}] {:<40} {}\n",
                    if g.ok { "met" } else { "MISSED" },
                    g.name,
                    g.detail
                );
            }
        }
        if !self.checks.is_empty() {
            out += "\nverification\n";
            for c in &self.checks {
                out += &format!(
                    "  [{}] {:<40} {}\n",
                    if c.ok { "ok" } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
        }
        out
    }
}

/// A figure on one line, or a group of them (per strategy, say) indented below its
/// name.
fn render_figure(out: &mut String, depth: usize, name: &str, value: &serde_json::Value) {
    let indent = "  ".repeat(depth);
    match value {
        serde_json::Value::Object(group) => {
            *out += &format!("{indent}{name}\n");
            for (k, v) in group {
                render_figure(out, depth + 1, k, v);
            }
        }
        v => {
            let width = 42usize.saturating_sub(indent.len());
            *out += &format!("{indent}{name:<width$} {v}\n");
        }
    }
}
