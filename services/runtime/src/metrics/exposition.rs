//! Merging OpenMetrics text expositions: each part's samples get labels added
//! (`instance`, `service`), each metric family's HELP/TYPE/UNIT appears once, and
//! the text ends with a single `# EOF`. Only what merging needs is parsed: the
//! metadata lines and, in each sample line, where its name ends.

use std::collections::HashMap;
use std::fmt::Write as _;

/// An exposition that is not OpenMetrics text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpositionError {
    #[error("line {line}: sample {name:?} comes before any # TYPE or # HELP line")]
    Undeclared { line: usize, name: String },
    #[error(
        "line {line}: sample {name:?} does not belong to the family {family:?} declared above it"
    )]
    Foreign {
        line: usize,
        name: String,
        family: String,
    },
    #[error("line {line}: {text:?} is not a sample or a metadata line")]
    Malformed { line: usize, text: String },
    #[error("the exposition does not end with # EOF")]
    NoEof,
}

/// Suffixes a sample's name may add to its family's name.
const SUFFIXES: [&str; 8] = [
    "_total", "_created", "_bucket", "_count", "_sum", "_info", "_gcount", "_gsum",
];

/// One metric family of the merged text.
#[derive(Default)]
struct Family {
    /// Its `# HELP`, `# TYPE` and `# UNIT` lines, each kept from the first part that
    /// has it.
    help: Option<String>,
    kind: Option<String>,
    unit: Option<String>,
    /// Sample lines, labels added, in the parts' order.
    samples: Vec<String>,
}

/// Merges expositions: each is given with the labels to add to its samples (each
/// `(name, value)`; the names must not be labels its samples already have). A part
/// that is not OpenMetrics text is an error naming the problem; a family whose
/// type differs from the one an earlier part declared is left out of the later part.
pub fn merge<'a>(
    parts: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], &'a str)>,
) -> Result<String, ExpositionError> {
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, Family> = HashMap::new();
    for (labels, text) in parts {
        let added = label_text(labels);
        let mut current: Option<(String, bool)> = None;
        let mut eof = false;
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.is_empty() {
                continue;
            }
            if line == "# EOF" {
                eof = true;
                break;
            }
            if let Some((keyword, name)) = metadata(line) {
                if !families.contains_key(name) {
                    order.push(name.to_string());
                }
                let family = families.entry(name.to_string()).or_default();
                let slot = match keyword {
                    "HELP" => &mut family.help,
                    "TYPE" => &mut family.kind,
                    _ => &mut family.unit,
                };
                // A family declared with another type by an earlier part keeps its
                // type; this part's samples of it are left out. (The lines name the
                // same family: they differ only if the types do.)
                let clash = keyword == "TYPE" && slot.as_deref().is_some_and(|k| k != line);
                if slot.is_none() {
                    *slot = Some(line.to_string());
                }
                let keep = current
                    .as_ref()
                    .filter(|(n, _)| n == name)
                    .is_none_or(|(_, keep)| *keep);
                current = Some((name.to_string(), keep && !clash));
                continue;
            }
            if line.starts_with('#') {
                // A comment: OpenMetrics has none, Prometheus text may.
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| ExpositionError::Malformed {
                    line: line_no,
                    text: line.to_string(),
                })?;
            let name = &line[..name_end];
            let Some((family, keep)) = &current else {
                return Err(ExpositionError::Undeclared {
                    line: line_no,
                    name: name.to_string(),
                });
            };
            if !belongs(name, family) {
                return Err(ExpositionError::Foreign {
                    line: line_no,
                    name: name.to_string(),
                    family: family.clone(),
                });
            }
            if *keep {
                let sample = with_labels(line, name_end, &added);
                families
                    .get_mut(family)
                    .expect("declared above")
                    .samples
                    .push(sample);
            }
        }
        if !eof {
            return Err(ExpositionError::NoEof);
        }
    }
    let mut out = String::new();
    for name in &order {
        let family = &families[name];
        for line in [&family.help, &family.kind, &family.unit]
            .into_iter()
            .flatten()
        {
            out.push_str(line);
            out.push('\n');
        }
        for sample in &family.samples {
            out.push_str(sample);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    Ok(out)
}

/// `(keyword, family)` of a `# HELP|TYPE|UNIT <family> …` line.
fn metadata(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("# ")?;
    let (keyword, rest) = rest.split_once(' ')?;
    if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
        return None;
    }
    let name = rest.split_once(' ').map_or(rest, |(name, _)| name);
    Some((keyword, name))
}

fn belongs(sample: &str, family: &str) -> bool {
    sample
        .strip_prefix(family)
        .is_some_and(|suffix| suffix.is_empty() || SUFFIXES.contains(&suffix))
}

/// `name="value",…` with values escaped as OpenMetrics asks.
fn label_text(labels: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let escaped = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(text, "{name}=\"{escaped}\"");
    }
    text
}

/// The sample line with `added` put first among its labels.
fn with_labels(line: &str, name_end: usize, added: &str) -> String {
    if added.is_empty() {
        return line.to_string();
    }
    let (name, rest) = line.split_at(name_end);
    match rest.strip_prefix('{') {
        Some(rest) if rest.starts_with('}') => format!("{name}{{{added}{rest}"),
        Some(rest) => format!("{name}{{{added},{rest}"),
        None => format!("{name}{{{added}}}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = "# HELP shoal_registry_heartbeats_received Heartbeats.\n\
        # TYPE shoal_registry_heartbeats_received counter\n\
        shoal_registry_heartbeats_received_total 7\n\
        # HELP shoal_registry_members Members.\n\
        # TYPE shoal_registry_members gauge\n\
        shoal_registry_members{status=\"online\"} 2\n\
        shoal_registry_members{} 0\n\
        # EOF\n";

    #[test]
    fn labels_are_added_and_families_declared_once() {
        let a: &[(&str, &str)] = &[("instance", "r-1"), ("service", "registry")];
        let b: &[(&str, &str)] = &[("instance", "r-2"), ("service", "registry")];
        let merged = merge([(a, REGISTRY), (b, REGISTRY)]).unwrap();
        assert_eq!(
            merged,
            "# HELP shoal_registry_heartbeats_received Heartbeats.\n\
             # TYPE shoal_registry_heartbeats_received counter\n\
             shoal_registry_heartbeats_received_total{instance=\"r-1\",service=\"registry\"} 7\n\
             shoal_registry_heartbeats_received_total{instance=\"r-2\",service=\"registry\"} 7\n\
             # HELP shoal_registry_members Members.\n\
             # TYPE shoal_registry_members gauge\n\
             shoal_registry_members{instance=\"r-1\",service=\"registry\",status=\"online\"} 2\n\
             shoal_registry_members{instance=\"r-1\",service=\"registry\"} 0\n\
             shoal_registry_members{instance=\"r-2\",service=\"registry\",status=\"online\"} 2\n\
             shoal_registry_members{instance=\"r-2\",service=\"registry\"} 0\n\
             # EOF\n"
        );
    }

    #[test]
    fn bad_expositions_are_refused_with_the_reason() {
        let none: &[(&str, &str)] = &[];
        assert_eq!(
            merge([(none, "x_total 1\n# EOF\n")]),
            Err(ExpositionError::Undeclared {
                line: 1,
                name: "x_total".into()
            })
        );
        assert!(matches!(
            merge([(none, "# TYPE x counter\ny_total 1\n# EOF\n")]),
            Err(ExpositionError::Foreign { .. })
        ));
        assert_eq!(
            merge([(none, "# TYPE x counter\nx_total 1\n")]),
            Err(ExpositionError::NoEof)
        );
        assert!(matches!(
            merge([(none, "# TYPE x gauge\nnonsense\n# EOF\n")]),
            Err(ExpositionError::Malformed { .. })
        ));
    }

    #[test]
    fn a_family_of_another_type_keeps_the_first() {
        let none: &[(&str, &str)] = &[];
        let merged = merge([
            (none, "# TYPE x gauge\nx 1\n# EOF\n"),
            (none, "# TYPE x counter\nx_total 2\n# EOF\n"),
        ])
        .unwrap();
        assert_eq!(merged, "# TYPE x gauge\nx 1\n# EOF\n");
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(label_text(&[("a", "x\"y\\z")]), "a=\"x\\\"y\\\\z\"");
    }
}
