//! The error envelope every Shoal reply uses for failures:
//! `{"error": {"code": "...", "message": "...", "details": ...}}`, with the NATS
//! service error headers set so standard NATS tooling sees the failure too.

use std::fmt;

use async_nats::HeaderMap;
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Header carrying the machine-readable code (`bad_request`, …) next to the numeric
/// `Nats-Service-Error-Code`.
pub const SHOAL_ERROR_CODE: &str = "Shoal-Error-Code";

/// What went wrong, in a form clients can branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, wrong types, missing fields, out of range.
    BadRequest,
    /// The named node, agent or coordinator does not exist.
    NotFound,
    /// The request contradicts the current state (e.g. pinning to a draining node).
    Conflict,
    /// No node can take the work; the message says why.
    NoCapacity,
    /// This coordinator is not the leader, or there is no leader yet: retry.
    NotLeader,
    /// A dependency (JetStream, Postgres, another service) is not reachable: retry.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::NoCapacity,
        ErrorCode::NotLeader,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NoCapacity => "no_capacity",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The number put in `Nats-Service-Error-Code` (HTTP-like, as NATS micro expects).
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::NotLeader => 421,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::NoCapacity => 507,
        }
    }

    pub fn from_status(status: u16) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.status() == status)
            .unwrap_or(ErrorCode::Internal)
    }

    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// Worth retrying the same request later (possibly on another replica).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::NotLeader | ErrorCode::Unavailable)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of the error envelope; also the error type at every service boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ShoalError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// `{"error": {...}}` — the whole error reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorEnvelope {
    pub error: ShoalError,
}

impl ShoalError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ShoalError {
        ShoalError {
            code,
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::Conflict, message)
    }
    pub fn no_capacity(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::NoCapacity, message)
    }
    pub fn not_leader(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::NotLeader, message)
    }
    pub fn unavailable(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> ShoalError {
        ShoalError::new(ErrorCode::Internal, message)
    }

    /// "no such node": `not_found`, naming the node in the details as `node_id` (what
    /// clients such as the CLI look for).
    pub fn no_node(id: &str) -> ShoalError {
        ShoalError::not_found(format!("no node with id {id:?}"))
            .with_details(serde_json::json!({ "node_id": id }))
    }

    pub fn with_details(mut self, details: Value) -> ShoalError {
        self.details = Some(details);
        self
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: self.clone(),
        }
    }

    /// The NATS service error headers for this error.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // Header values cannot hold line breaks; the full message is in the body.
        let one_line: String = self
            .message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        headers.insert(NATS_SERVICE_ERROR, one_line.as_str());
        headers.insert(
            NATS_SERVICE_ERROR_CODE,
            self.code.status().to_string().as_str(),
        );
        headers.insert(SHOAL_ERROR_CODE, self.code.as_str());
        headers
    }

    /// Reads an error reply: the envelope in the body if there is one, else the
    /// NATS service error headers alone (a reply from non-Shoal tooling).
    pub fn from_reply(headers: Option<&HeaderMap>, payload: &[u8]) -> Option<ShoalError> {
        if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(payload) {
            return Some(envelope.error);
        }
        let headers = headers?;
        let status: u16 = headers
            .get(NATS_SERVICE_ERROR_CODE)?
            .as_str()
            .parse()
            .ok()?;
        let code = headers
            .get(SHOAL_ERROR_CODE)
            .and_then(|v| ErrorCode::parse(v.as_str()))
            .unwrap_or_else(|| ErrorCode::from_status(status));
        let message = headers
            .get(NATS_SERVICE_ERROR)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        Some(ShoalError::new(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_contract_shape() {
        let v = serde_json::to_value(ShoalError::no_node("n9").envelope()).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no node with id \"n9\"");
        assert_eq!(v["error"]["details"]["node_id"], "n9");
    }

    #[test]
    fn codes_round_trip_through_headers() {
        for code in ErrorCode::ALL {
            let e = ShoalError::new(code, "line one\nline two");
            let h = e.headers();
            assert_eq!(
                h.get(NATS_SERVICE_ERROR).unwrap().as_str(),
                "line one line two"
            );
            let back = ShoalError::from_reply(Some(&h), b"").unwrap();
            assert_eq!(back.code, code);
            assert_eq!(ErrorCode::from_status(code.status()), code);
        }
    }
}
