//! The gateway's HTTP errors: Shoal's error envelope (`{"error": {"code", "message"}}`)
//! with the HTTP status its code stands for, or, for input HTTP itself refuses (a
//! body too large, the wrong content type, a method the route does not take), the
//! status HTTP has for it.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use shoal_protocol::{ClientError, ErrorCode, ShoalError};

/// A handler's failure, answered as an error envelope.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub ShoalError);

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        ApiError(match e {
            ClientError::Service(e) => e,
            ClientError::NoResponders { .. } | ClientError::Timeout { .. } => {
                ShoalError::unavailable(e.to_string())
            }
            other => ShoalError::internal(other.to_string()),
        })
    }
}

/// The HTTP status for an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict | ErrorCode::NoCapacity => StatusCode::CONFLICT,
        ErrorCode::NotLeader | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The envelope for `error` with `status`, and `Retry-After` when retrying helps.
pub fn envelope_response(status: StatusCode, error: &ShoalError) -> Response {
    let mut response = (status, Json(error.envelope())).into_response();
    if error.code.is_retryable() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        envelope_response(status_of(self.0.code), &self.0)
    }
}

/// Input refused before a handler runs: a bad path, query or body. Answered as an
/// envelope (`bad_request`) with the HTTP status the refusal calls for (400, 413 or
/// 415).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Rejection {
    pub status: StatusCode,
    pub error: ShoalError,
}

impl Rejection {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            error: ShoalError::bad_request(message),
        }
    }
}

impl From<ShoalError> for Rejection {
    fn from(error: ShoalError) -> Rejection {
        Rejection {
            status: status_of(error.code),
            error,
        }
    }
}

impl From<PathRejection> for Rejection {
    fn from(r: PathRejection) -> Rejection {
        Rejection::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<BytesRejection> for Rejection {
    fn from(r: BytesRejection) -> Rejection {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the body is over the limit of {} bytes",
                shoal_protocol::MAX_PAYLOAD_BYTES
            )
        } else {
            r.body_text()
        };
        let mut rejection = Rejection::new(status, message);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            rejection.error = rejection
                .error
                .with_details(serde_json::json!({ "limit": shoal_protocol::MAX_PAYLOAD_BYTES }));
        }
        rejection
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        envelope_response(self.status, &self.error)
    }
}

/// The answer for a path no route serves.
pub async fn unknown_route(method: Method, uri: Uri) -> Rejection {
    Rejection {
        status: StatusCode::NOT_FOUND,
        error: ShoalError::not_found(format!(
            "no route {method} {}: the routes are listed in /api/openapi.json",
            uri.path()
        ))
        .with_details(serde_json::json!({ "path": uri.path() })),
    }
}

/// The answer for a method the path's route does not take (axum adds `Allow`).
pub async fn method_not_allowed(method: Method, uri: Uri) -> Rejection {
    Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}: the Allow header lists what it takes",
            uri.path()
        ),
    )
}
