//! Human tables and `--json` output, and writing it to stdout.

use std::io::{ErrorKind, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Writes `bytes` to stdout. A reader that went away early (`shoal --json nodes |
/// head`) ends the command quietly with success, as Unix tools do, rather than in
/// a panic or an error; any other failed write (a full disk behind a redirect) is
/// said on stderr and exits 1.
pub fn write(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing the output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`write`].
pub fn line(args: std::fmt::Arguments<'_>) {
    write(format!("{args}\n").as_bytes());
}

/// A time as tables show it: to the millisecond, in UTC.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

/// How long before `now` `t` was, roughly: `800ms ago`, `12s ago`, `5m ago`,
/// `3h ago`, `2d ago` (`in the future` for a clock ahead of this one).
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let Ok(d) = (now - t).to_std() else {
        return "in the future".to_string();
    };
    let (ms, s) = (d.as_millis(), d.as_secs());
    match s {
        0 => format!("{ms}ms ago"),
        1..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A plain text table: a header row and rows of cells, columns padded to fit.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = vec![line(self.header.clone())];
        out.extend(
            self.rows
                .iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        );
        out.join("\n")
    }
}

/// Why the balancer chose a node, from a history row's `candidates`:
/// `least_loaded chose node-2 of 3: node-2 0.21, node-1 0.35, node-3 0.40`, the first
/// three candidates as the balancer listed them.
pub fn why(candidates: &serde_json::Value) -> Option<String> {
    let strategy = candidates["strategy"].as_str()?;
    let chosen = candidates["chosen"].as_str()?;
    let listed = candidates["candidates"].as_array()?;
    let best: Vec<String> = listed
        .iter()
        .take(3)
        .filter_map(|c| {
            Some(format!(
                "{} {:.2}",
                c["node_id"].as_str()?,
                c["score"].as_f64()?
            ))
        })
        .collect();
    let more = if listed.len() > best.len() {
        ", …"
    } else {
        ""
    };
    Some(format!(
        "{strategy} chose {chosen} of {}: {}{more}",
        listed.len(),
        best.join(", ")
    ))
}

/// Key/value lines for a single object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn opt<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(vec!["ID", "STATUS"]);
        t.row(vec!["node-1".into(), "online".into()]);
        t.row(vec!["n2".into(), "offline".into()]);
        assert_eq!(
            t.render(),
            "ID      STATUS\nnode-1  online\nn2      offline"
        );
    }

    #[test]
    fn why_names_the_strategy_the_choice_and_the_best_candidates() {
        let c = serde_json::json!({
            "strategy": "least_loaded",
            "chosen": "n2",
            "candidates": [
                {"node_id": "n2", "score": 0.2104},
                {"node_id": "n1", "score": 0.35},
                {"node_id": "n3", "score": 0.4},
                {"node_id": "n4", "score": 0.9}
            ]
        });
        assert_eq!(
            why(&c).unwrap(),
            "least_loaded chose n2 of 4: n2 0.21, n1 0.35, n3 0.40, …"
        );
        assert_eq!(why(&serde_json::json!({"strategy": "random"})), None);
    }
}
