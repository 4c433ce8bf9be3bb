//! The one decode step every handler uses: bytes in, a validated message or a
//! `bad_request` that names the problem out.

use serde::de::DeserializeOwned;

use crate::{ShoalError, Validate};

/// Largest request payload accepted (bytes). NATS' own default max_payload is 1 MiB;
/// no Shoal message comes near this.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Decodes and validates `payload`. An empty payload means `{}`, so requests whose
/// fields are all optional (`stats`, `nodes.list`) can be sent with no body.
pub fn decode<T: DeserializeOwned + Validate>(payload: &[u8]) -> Result<T, ShoalError> {
    decode_with_limit(payload, MAX_PAYLOAD_BYTES)
}

pub fn decode_with_limit<T: DeserializeOwned + Validate>(
    payload: &[u8],
    limit: usize,
) -> Result<T, ShoalError> {
    if payload.len() > limit {
        return Err(ShoalError::bad_request(format!(
            "payload is {} bytes, over the limit of {limit} bytes",
            payload.len()
        ))
        .with_details(serde_json::json!({ "size": payload.len(), "limit": limit })));
    }
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        payload
    };
    // Strict where serde_json is lenient: the whole payload is UTF-8 (serde_json
    // skips unknown fields' strings unchecked), and a request is an object (serde
    // would fill a struct from an array by field order).
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(ShoalError::bad_request(format!(
            "payload is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
        .with_details(serde_json::json!({ "byte": e.valid_up_to() })));
    }
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload)
    {
        let kind = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Null => "null",
            serde_json::Value::Object(_) => "an object",
        };
        return Err(ShoalError::bad_request(format!(
            "a request must be a JSON object ({{\"field\": …}}), not {kind}"
        )));
    }
    let value: T = match parse(payload) {
        Ok(value) => value,
        // JSON Schema counts 2.0 as an integer: so does Shoal. Tried only when the
        // message as sent fails, whose error is the one reported.
        Err(e) => match integral_floats_as_integers(payload) {
            Some(normalised) => parse(&normalised).map_err(|_| e)?,
            None => return Err(e),
        },
    };
    value.validate()?;
    Ok(value)
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ShoalError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| describe(e, payload))?;
    // Anything after the value (`{"id":"a"} junk`) is malformed too.
    de.end().map_err(|e| {
        ShoalError::bad_request(format!(
            "malformed JSON: trailing characters after the message ({e})"
        ))
    })?;
    Ok(value)
}

/// `payload` with every number that is a whole number written with a fraction or
/// an exponent (`8151.0`, `2e3`) written as an integer; `None` when it holds none
/// (or is not JSON).
fn integral_floats_as_integers(payload: &[u8]) -> Option<Vec<u8>> {
    fn walk(value: &mut serde_json::Value) -> bool {
        match value {
            // A whole f64 in range converts to u64 or i64 exactly.
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && (0.0..2f64.powi(64)).contains(&f) => {
                    *n = serde_json::Number::from(f as u64);
                    true
                }
                Some(f)
                    if n.is_f64() && f.fract() == 0.0 && (-(2f64.powi(63))..0.0).contains(&f) =>
                {
                    *n = serde_json::Number::from(f as i64);
                    true
                }
                _ => false,
            },
            serde_json::Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= walk(item);
                }
                changed
            }
            serde_json::Value::Object(map) => {
                let mut changed = false;
                for item in map.values_mut() {
                    changed |= walk(item);
                }
                changed
            }
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if !walk(&mut value) {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

fn describe(err: serde_path_to_error::Error<serde_json::Error>, payload: &[u8]) -> ShoalError {
    let path = err.path().to_string();
    let inner = err.inner();
    let (line, column) = (inner.line(), inner.column());
    // serde_json appends " at line L column C"; the position goes in details instead.
    let text = inner.to_string();
    let text = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(head, _)| head)
        .to_string();
    // serde_json reports some shape mismatches (an enum given as an array) as syntax
    // errors; if the payload is valid JSON, it is the field that is wrong.
    let well_formed = || serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok();
    let message = match inner.classify() {
        serde_json::error::Category::Syntax if path != "." && well_formed() => {
            format!("field `{path}` has the wrong type or shape ({text})")
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("malformed JSON: {text}")
        }
        serde_json::error::Category::Io => format!("unreadable payload: {text}"),
        serde_json::error::Category::Data if path == "." => text,
        serde_json::error::Category::Data => format!("field `{path}`: {text}"),
    };
    let mut details = serde_json::json!({ "line": line, "column": column });
    if path != "." {
        details["field"] = serde_json::Value::String(path);
    }
    ShoalError::bad_request(message).with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Colour {
        Red,
        Blue,
    }

    #[derive(Debug, Deserialize)]
    struct Msg {
        id: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        colour: Option<Colour>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        ratio: f64,
    }

    impl Validate for Msg {
        fn validate(&self) -> Result<(), ShoalError> {
            crate::validate::id("id", &self.id)
        }
    }

    fn err(payload: &str) -> ShoalError {
        let e = decode::<Msg>(payload.as_bytes()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        e
    }

    #[test]
    fn good_payload_decodes() {
        let m: Msg = decode(br#"{"id":"n1","count":3,"colour":"blue"}"#).unwrap();
        assert_eq!((m.id.as_str(), m.count), ("n1", 3));
        assert!(matches!(m.colour, Some(Colour::Blue)));
        assert!(matches!(
            decode::<Msg>(br#"{"id":"n1","colour":"red"}"#)
                .unwrap()
                .colour,
            Some(Colour::Red)
        ));
        assert!(decode::<Msg>(br#"{"id":"n1"}"#).unwrap().inner.is_none());
    }

    #[test]
    fn only_objects_of_valid_utf8_are_requests() {
        // An array would fill the struct by field order.
        let e = err(r#"["n1", 3]"#);
        assert!(e.message.contains("JSON object"), "{}", e.message);
        assert!(e.message.contains("an array"), "{}", e.message);
        for other in ["\"n1\"", "3", "true", "null"] {
            assert!(err(other).message.contains("JSON object"), "{other}");
        }
        // Invalid UTF-8 in an unknown field's value, which serde would skip.
        let mut bad = br#"{"id":"n1","x":"#.to_vec();
        bad.extend_from_slice(&[b'"', 0xff, 0xfe, b'"', b'}']);
        let e = decode::<Msg>(&bad).unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
        assert_eq!(e.details.unwrap()["byte"], 16);
        // Leading white space is fine.
        assert!(decode::<Msg>(b"  \n {\"id\":\"n1\"}").is_ok());
    }

    #[test]
    fn malformed_json_is_bad_request() {
        let e = err(r#"{"id": "n1""#);
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = err("not json");
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = err(r#"{"id":"n1"} trailing"#);
        assert!(e.message.contains("trailing"), "{}", e.message);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = err(r#"{"id":"n1","count":"three"}"#);
        assert!(e.message.contains("`count`"), "{}", e.message);
        assert!(e.message.contains("invalid type"), "{}", e.message);
        assert_eq!(e.details.unwrap()["field"], "count");
        let e = err(r#"{"id":"n1","inner":{"ratio":"x"}}"#);
        assert!(e.message.contains("`inner.ratio`"), "{}", e.message);
    }

    #[test]
    fn enum_given_as_array_names_the_field() {
        let e = err(r#"{"id":"n1","colour":["red"]}"#);
        assert!(e.message.starts_with("field `colour`"), "{}", e.message);
    }

    #[test]
    fn missing_field_is_named() {
        let e = err(r#"{"count":1}"#);
        assert!(e.message.contains("missing field `id`"), "{}", e.message);
        // An empty payload is `{}`, so a required field is reported missing too.
        let e = err("");
        assert!(e.message.contains("missing field `id`"), "{}", e.message);
    }

    #[test]
    fn unknown_enum_value_lists_the_valid_ones() {
        let e = err(r#"{"id":"n1","colour":"green"}"#);
        assert!(e.message.contains("`colour`"), "{}", e.message);
        assert!(
            e.message.contains("unknown variant `green`"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("red") && e.message.contains("blue"),
            "{}",
            e.message
        );
    }

    #[test]
    fn oversized_payload_is_refused_before_parsing() {
        let big = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_PAYLOAD_BYTES));
        let e = err(&big);
        assert!(e.message.contains("over the limit"), "{}", e.message);
        assert_eq!(e.details.unwrap()["limit"], MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn whole_numbers_written_as_floats_are_integers() {
        let m: Msg = decode(br#"{"id":"n1","count":3.0}"#).unwrap();
        assert_eq!(m.count, 3);
        let m: Msg = decode(br#"{"id":"n1","count":2e1,"inner":{"ratio":1.0}}"#).unwrap();
        assert_eq!(m.count, 20);
        let m: Msg = decode(br#"{"id":"n1","count":4294967295.0}"#).unwrap();
        assert_eq!(m.count, u32::MAX);
        // A fraction is still refused, and the error is about the message as sent.
        let e = err(r#"{"id":"n1","count":3.5}"#);
        assert!(e.message.contains("`count`"), "{}", e.message);
        assert!(e.message.contains("3.5"), "{}", e.message);
        let e = err(r#"{"id":"n1","count":-1.0}"#);
        assert!(e.message.contains("`count`"), "{}", e.message);
    }

    #[test]
    fn validation_runs_after_decoding() {
        let e = err(r#"{"id":"a.b"}"#);
        assert!(e.message.contains("id \"a.b\""), "{}", e.message);
    }
}
