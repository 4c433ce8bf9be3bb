//! Encoding a handler's result once, at the edge: a handler returns
//! `Result<T, ShoalError>` and never builds an error reply itself.

use async_nats::service::Request;
use async_nats::{HeaderMap, PublishError};
use bytes::Bytes;
use serde::Serialize;

use crate::ShoalError;

/// The body and headers of the reply for `result`.
pub fn encode<T: Serialize>(result: &Result<T, ShoalError>) -> (Bytes, HeaderMap) {
    let failure = match result {
        Ok(value) => match serde_json::to_vec(value) {
            Ok(body) => return (Bytes::from(body), HeaderMap::new()),
            Err(e) => ShoalError::internal(format!("reply could not be encoded: {e}")),
        },
        Err(e) => e.clone(),
    };
    let body = serde_json::to_vec(&failure.envelope()).unwrap_or_else(|_| b"{}".to_vec());
    (Bytes::from(body), failure.headers())
}

/// Answers a NATS micro request with `result`.
pub async fn respond<T: Serialize>(
    request: &Request,
    result: Result<T, ShoalError>,
) -> Result<(), PublishError> {
    if let Err(e) = &result {
        tracing::debug!(subject = %request.message.subject, code = %e.code, message = %e.message, "request refused");
    }
    let (body, headers) = encode(&result);
    // The envelope travels in the body with the error headers set; passing `Err` to
    // async-nats would send the headers with an empty body.
    request.respond_with_headers(Ok(body), headers).await
}
