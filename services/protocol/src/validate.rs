//! Checks on decoded requests that types alone cannot express: ids usable as subject
//! tokens and KV keys, metrics that are finite and in range, sizes within limits.
//!
//! The limits keep every message Shoal derives from a request (a log record, a
//! membership record, a batch of picks) far below NATS' max payload; they are in the
//! JSON Schemas and in `docs/concepts.md`:
//!
//! | what | limit |
//! |---|---|
//! | node id, agent name, coordinator id | 1–128 of `A-Z a-z 0-9 - _` |
//! | labels | 64 pairs; key 1–128 characters, value up to 255 characters |
//! | services, features of a node | 64 each, 1–128 characters each |
//! | host name, address, version, reason, request id | up to 255 characters |
//! | ids in `exclude`, in a registry sync | 1,024 |
//! | a node's own `heartbeat_interval` | 0.01 to 3,600 seconds |
//!
//! Lengths count characters, as JSON Schema's `maxLength` does (so at most four
//! times as many bytes). Names, host names, label keys and request ids must also
//! hold something besides white space ([`NOT_BLANK_PATTERN`] in the schemas).

use schemars::{Schema, SchemaGenerator, json_schema};

use crate::ShoalError;

/// Longest node id or agent name: both become a subject token.
pub const MAX_ID_LEN: usize = 128;
/// What an id may hold: it becomes a NATS subject token and a KV key.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,128}$";
pub const MAX_TEXT_LEN: usize = 255;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_LEN: usize = 128;
pub const MAX_LABEL_VALUE_LEN: usize = 255;
/// Most services or features one node offers.
pub const MAX_NAMES: usize = 64;
pub const MAX_NAME_LEN: usize = 128;
/// Most ids in a list such as `exclude`.
pub const MAX_IDS: usize = 1024;
/// Shortest heartbeat interval a node may declare, in seconds (10 ms).
pub const MIN_HEARTBEAT_INTERVAL_S: f64 = 0.01;
/// Longest heartbeat interval a node may declare, in seconds (one hour): a node
/// heard from less often is not being watched.
pub const MAX_HEARTBEAT_INTERVAL_S: f64 = 3600.0;
/// What a value that must not be blank matches: a character other than white
/// space (Rust's `char::is_whitespace`, spelled out so every regex engine reads it
/// the same).
pub const NOT_BLANK_PATTERN: &str = "[^\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// The schema of a node's or a request's labels: at most [`MAX_LABELS`] pairs, keys
/// 1 to [`MAX_LABEL_KEY_LEN`] characters and not blank, values up to
/// [`MAX_LABEL_VALUE_LEN`] characters.
pub fn labels_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_LABELS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": MAX_LABEL_KEY_LEN,
            "pattern": NOT_BLANK_PATTERN,
        },
        "additionalProperties": { "type": "string", "maxLength": MAX_LABEL_VALUE_LEN },
    })
}

/// Longer than `max` characters.
fn longer_than(value: &str, max: usize) -> bool {
    value.chars().nth(max).is_some()
}

/// A message is checked after it is decoded; the default accepts everything.
pub trait Validate {
    fn validate(&self) -> Result<(), ShoalError> {
        Ok(())
    }
}

/// Why `token` cannot be one NATS subject token, if it cannot (the subject prefix's
/// tokens; ids have the stricter [`id`] rule).
pub(crate) fn token_problem(token: &str) -> Option<&'static str> {
    if token.is_empty() {
        Some("is empty")
    } else if token.len() > MAX_ID_LEN {
        Some("is longer than 128 bytes")
    } else if token
        .chars()
        .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
    {
        Some("must not contain '.', '*', '>' or white space")
    } else {
        None
    }
}

/// Why `value` is not an id, if it is not.
pub fn id_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("is empty")
    } else if value.len() > MAX_ID_LEN {
        Some("is longer than 128 bytes")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Some("may hold only ASCII letters, digits, '-' and '_'")
    } else {
        None
    }
}

/// An id: a node id, an agent name, a coordinator or instance id. It becomes a NATS
/// subject token and a KV key: 1 to 128 ASCII letters, digits, `-` and `_`.
pub fn id(field: &str, value: &str) -> Result<(), ShoalError> {
    match id_problem(value) {
        None => Ok(()),
        Some(problem) => Err(field_error(field, format!("{field} {value:?} {problem}"))),
    }
}

pub fn optional_id(field: &str, value: Option<&str>) -> Result<(), ShoalError> {
    value.map_or(Ok(()), |v| id(field, v))
}

/// A percentage such as cpu_usage: finite, 0 to 100.
pub fn percent(field: &str, value: f64) -> Result<(), ShoalError> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{field} must be a number from 0 to 100, got {value}"),
        ))
    }
}

/// A finite, non-negative number such as load_average.
pub fn non_negative(field: &str, value: f64) -> Result<(), ShoalError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{field} must be a finite number >= 0, got {value}"),
        ))
    }
}

pub fn text(field: &str, value: &str) -> Result<(), ShoalError> {
    if longer_than(value, MAX_TEXT_LEN) {
        return Err(field_error(
            field,
            format!("{field} is longer than {MAX_TEXT_LEN} characters"),
        ));
    }
    Ok(())
}

pub fn non_empty_text(field: &str, value: &str) -> Result<(), ShoalError> {
    if value.trim().is_empty() {
        return Err(field_error(field, format!("{field} must not be empty")));
    }
    text(field, value)
}

/// A list of names such as services or features: at most [`MAX_NAMES`], each
/// 1 to [`MAX_NAME_LEN`] characters.
pub fn names(field: &str, values: &[String]) -> Result<(), ShoalError> {
    if values.len() > MAX_NAMES {
        return Err(field_error(
            field,
            format!(
                "{field} has {} entries, more than {MAX_NAMES}",
                values.len()
            ),
        ));
    }
    values.iter().try_for_each(|v| name(field, v))
}

/// One name (a service): 1 to [`MAX_NAME_LEN`] characters, not blank.
pub fn name(field: &str, value: &str) -> Result<(), ShoalError> {
    bounded_text(field, value, MAX_NAME_LEN)
}

/// Text of 1 to `max` characters, not blank.
fn bounded_text(field: &str, value: &str, max: usize) -> Result<(), ShoalError> {
    if longer_than(value, max) {
        return Err(field_error(
            field,
            format!("{field} {value:?} is longer than {max} characters"),
        ));
    }
    non_empty_text(field, value)
}

/// A list of ids (excluded nodes, nodes asked to announce): at most [`MAX_IDS`].
pub fn ids(field: &str, values: &[String]) -> Result<(), ShoalError> {
    if values.len() > MAX_IDS {
        return Err(field_error(
            field,
            format!("{field} has {} entries, more than {MAX_IDS}", values.len()),
        ));
    }
    values.iter().try_for_each(|v| id(field, v))
}

/// Labels: at most [`MAX_LABELS`] pairs, keys 1 to [`MAX_LABEL_KEY_LEN`] characters,
/// values up to [`MAX_LABEL_VALUE_LEN`].
pub fn labels(
    field: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), ShoalError> {
    if labels.len() > MAX_LABELS {
        return Err(field_error(
            field,
            format!(
                "{field} has {} entries, more than {MAX_LABELS}",
                labels.len()
            ),
        ));
    }
    for (k, v) in labels {
        label_key(&format!("{field} key"), k)?;
        if longer_than(v, MAX_LABEL_VALUE_LEN) {
            return Err(field_error(
                field,
                format!("{field}.{k} is longer than {MAX_LABEL_VALUE_LEN} characters"),
            ));
        }
    }
    Ok(())
}

/// A label key (of `labels`, or named by `spread_by`): 1 to [`MAX_LABEL_KEY_LEN`]
/// characters, not blank.
pub fn label_key(field: &str, key: &str) -> Result<(), ShoalError> {
    bounded_text(field, key, MAX_LABEL_KEY_LEN)
}

/// A page size: 1 to `max` when given.
pub fn page_limit(field: &str, limit: Option<u32>, max: u32) -> Result<(), ShoalError> {
    match limit {
        Some(n) if n == 0 || n > max => Err(field_error(
            field,
            format!("{field} must be 1 to {max}, got {n}"),
        )),
        _ => Ok(()),
    }
}

/// A node's own heartbeat interval in seconds, when given:
/// [`MIN_HEARTBEAT_INTERVAL_S`] to [`MAX_HEARTBEAT_INTERVAL_S`].
pub fn heartbeat_interval(field: &str, seconds: Option<f64>) -> Result<(), ShoalError> {
    match seconds {
        Some(s)
            if !s.is_finite()
                || !(MIN_HEARTBEAT_INTERVAL_S..=MAX_HEARTBEAT_INTERVAL_S).contains(&s) =>
        {
            Err(field_error(
                field,
                format!(
                    "{field} must be {MIN_HEARTBEAT_INTERVAL_S} to {MAX_HEARTBEAT_INTERVAL_S} seconds, got {s}"
                ),
            ))
        }
        _ => Ok(()),
    }
}

pub(crate) fn field_error(field: &str, message: String) -> ShoalError {
    ShoalError::bad_request(message).with_details(serde_json::json!({ "field": field }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_letters_digits_dashes_and_underscores() {
        assert!(id("id", "node-1").is_ok());
        assert!(id("id", "Node_7").is_ok());
        assert!(id("id", &"x".repeat(128)).is_ok());
        let pattern = regex_lite(ID_PATTERN);
        for bad in [
            "",
            "a.b",
            "a*",
            ">",
            "a b",
            "a/b",
            "a=b",
            "node@1",
            "nöde",
            &"x".repeat(129),
        ] {
            let e = id("id", bad).unwrap_err();
            assert!(e.message.starts_with("id "), "{}", e.message);
            assert!(!pattern(bad), "{bad} matches the schema's pattern");
        }
        let e = id("id", "a/b").unwrap_err();
        assert!(
            e.message.contains("letters, digits, '-' and '_'"),
            "{}",
            e.message
        );
    }

    /// The schema's id pattern, checked by hand (the rule is simple enough).
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        assert_eq!(pattern, "^[A-Za-z0-9_-]{1,128}$");
        |s: &str| id_problem(s).is_none()
    }

    #[test]
    fn labels_and_names_have_limits() {
        use std::collections::BTreeMap;
        let ok: BTreeMap<String, String> = (0..MAX_LABELS)
            .map(|i| (format!("{i:0>128}"), "v".repeat(MAX_LABEL_VALUE_LEN)))
            .collect();
        assert!(labels("labels", &ok).is_ok());
        let mut more = ok.clone();
        more.insert("one-more".into(), String::new());
        assert!(labels("labels", &more).is_err());
        let long_key = BTreeMap::from([("k".repeat(129), String::new())]);
        assert!(labels("labels", &long_key).is_err());
        let long_value = BTreeMap::from([("k".into(), "v".repeat(256))]);
        assert!(labels("labels", &long_value).is_err());
        let services: Vec<String> = (0..MAX_NAMES).map(|i| format!("s{i}")).collect();
        assert!(names("services", &services).is_ok());
        let too_many: Vec<String> = (0..=MAX_NAMES).map(|i| format!("s{i}")).collect();
        assert!(names("services", &too_many).is_err());
        assert!(names("services", &["x".repeat(129)]).is_err());
        assert!(ids("exclude", &vec!["n".to_string(); MAX_IDS + 1]).is_err());
    }

    #[test]
    fn metrics_must_be_finite_and_in_range() {
        assert!(percent("cpu_usage", 42.5).is_ok());
        for bad in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            assert!(
                percent("cpu_usage", bad)
                    .unwrap_err()
                    .message
                    .contains("cpu_usage")
            );
        }
        assert!(non_negative("load_average", -0.1).is_err());
    }

    #[test]
    fn a_heartbeat_interval_is_a_positive_number_of_seconds_up_to_an_hour() {
        for ok in [None, Some(0.01), Some(0.5), Some(30.0), Some(3600.0)] {
            assert!(
                heartbeat_interval("heartbeat_interval", ok).is_ok(),
                "{ok:?}"
            );
        }
        for bad in [0.0, -30.0, 0.001, 3600.5, 86_400.0, f64::NAN, f64::INFINITY] {
            let e = heartbeat_interval("heartbeat_interval", Some(bad)).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::BadRequest);
            assert!(
                e.message
                    .starts_with("heartbeat_interval must be 0.01 to 3600 seconds"),
                "{}",
                e.message
            );
        }
    }
}
