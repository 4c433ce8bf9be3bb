//! The gateway's HTTP errors: Shoal's error envelope (`{"error": {"code", "message"}}`)
//! with the HTTP status its code stands for.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let mut response = (status_of(code), Json(self.0.envelope())).into_response();
        if code.is_retryable() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
