//! Checks on decoded requests that types alone cannot express: ids usable as subject
//! tokens, metrics that are finite and in range, sizes within limits.

use crate::ShoalError;

/// Longest node id or agent name: both become a subject token.
pub const MAX_ID_LEN: usize = 128;
const MAX_TEXT_LEN: usize = 255;
const MAX_LIST_LEN: usize = 64;

/// A message is checked after it is decoded; the default accepts everything.
pub trait Validate {
    fn validate(&self) -> Result<(), ShoalError> {
        Ok(())
    }
}

/// Why `token` cannot be one NATS subject token, if it cannot.
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

/// An id that becomes a subject token: node ids, agent names, coordinator ids.
pub fn id(field: &str, value: &str) -> Result<(), ShoalError> {
    match token_problem(value) {
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
    if value.len() > MAX_TEXT_LEN {
        return Err(field_error(
            field,
            format!("{field} is longer than {MAX_TEXT_LEN} bytes"),
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

/// A list of short strings (services, features, excluded ids).
pub fn short_list(field: &str, values: &[String]) -> Result<(), ShoalError> {
    if values.len() > MAX_LIST_LEN * 16 {
        return Err(field_error(
            field,
            format!("{field} has more than {} entries", MAX_LIST_LEN * 16),
        ));
    }
    values.iter().try_for_each(|v| non_empty_text(field, v))
}

pub fn labels(
    field: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), ShoalError> {
    if labels.len() > MAX_LIST_LEN {
        return Err(field_error(
            field,
            format!("{field} has more than {MAX_LIST_LEN} entries"),
        ));
    }
    for (k, v) in labels {
        non_empty_text(&format!("{field} key"), k)?;
        text(&format!("{field}.{k}"), v)?;
    }
    Ok(())
}

pub(crate) fn field_error(field: &str, message: String) -> ShoalError {
    ShoalError::bad_request(message).with_details(serde_json::json!({ "field": field }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_single_tokens() {
        assert!(id("id", "node-1").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(129)] {
            let e = id("id", bad).unwrap_err();
            assert!(e.message.starts_with("id "), "{}", e.message);
        }
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
}
