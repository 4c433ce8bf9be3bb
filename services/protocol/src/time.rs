//! Timestamps on the wire are RFC 3339 (`2026-02-10T08:00:00Z`), read strictly:
//! chrono's default also takes unpadded fields (`2026-1-29T6:26:19Z`), spaces and
//! `UTC`, which other clients would not read back the same way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, de};

fn parse<E: de::Error>(text: &str) -> Result<DateTime<Utc>, E> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            E::custom(format!(
                "{text:?} is not an RFC 3339 time such as 2026-02-10T08:00:00Z ({e})"
            ))
        })
}

/// `#[serde(deserialize_with = "crate::time::rfc3339")]`
pub fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    parse(&String::deserialize(d)?)
}

/// `#[serde(default, deserialize_with = "crate::time::optional_rfc3339")]`
pub fn optional_rfc3339<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| parse(&text))
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct At {
        #[serde(deserialize_with = "super::rfc3339")]
        at: chrono::DateTime<chrono::Utc>,
        #[serde(default, deserialize_with = "super::optional_rfc3339")]
        since: Option<chrono::DateTime<chrono::Utc>>,
    }

    fn at(text: &str) -> Result<At, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn only_rfc3339_is_a_time() {
        assert!(at(r#"{"at":"2026-01-29T06:26:19Z"}"#).is_ok());
        assert!(at(r#"{"at":"2026-01-29T06:26:19.123+02:00"}"#).is_ok());
        let t = at(r#"{"at":"2026-01-29T06:26:19Z","since":"2026-01-28T00:00:00Z"}"#).unwrap();
        assert!(t.since.unwrap() < t.at);
        for bad in [
            "2026-1-29T06:26:19Z",
            "2026-01-29 06:26:19 UTC",
            "2026-01-29T06:26:19",
            "yesterday",
        ] {
            let e = at(&format!(r#"{{"at":"{bad}"}}"#)).err().expect(bad);
            assert!(e.to_string().contains("RFC 3339"), "{e}");
            let since = format!(r#"{{"at":"2026-01-29T06:26:19Z","since":"{bad}"}}"#);
            assert!(at(&since).is_err(), "{bad}");
        }
    }
}
