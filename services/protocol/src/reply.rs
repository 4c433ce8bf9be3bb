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
    // The envelope travels in the body with the error headers set; passing `Err` to
    // async-nats would send the headers with an empty body.
    send_reply(&request.message, result, |body, headers| {
        request.respond_with_headers(Ok(body), headers)
    })
    .await
}

/// Answers a request taken from a plain subscription (one that can be drained)
/// with `result`, as [`respond`] does a micro request.
pub async fn respond_to<T: Serialize>(
    client: &async_nats::Client,
    message: &async_nats::Message,
    result: Result<T, ShoalError>,
) -> Result<(), PublishError> {
    let Some(reply) = message.reply.clone() else {
        return Err(PublishError::with_source(
            async_nats::client::PublishErrorKind::InvalidSubject,
            "the request has no reply subject",
        ));
    };
    send_reply(message, result, |body, headers| {
        let reply = reply.clone();
        async move {
            if headers.is_empty() {
                client.publish(reply, body).await
            } else {
                client.publish_with_headers(reply, headers, body).await
            }
        }
    })
    .await
}

async fn send_reply<T, F, Fut>(
    message: &async_nats::Message,
    result: Result<T, ShoalError>,
    send: F,
) -> Result<(), PublishError>
where
    T: Serialize,
    F: Fn(Bytes, HeaderMap) -> Fut,
    Fut: std::future::Future<Output = Result<(), PublishError>>,
{
    if let Err(e) = &result {
        tracing::debug!(subject = %message.subject, code = %e.code, message = %e.message, "request refused");
    }
    let (body, headers) = encode(&result);
    let size = body.len();
    match send(body, headers).await {
        // A reply the server would not carry would leave the client waiting for a
        // timeout that looks like an outage: say why instead.
        Err(e) if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
            let too_large: Result<(), ShoalError> = Err(too_large(size));
            let (body, headers) = encode(&too_large);
            send(body, headers).await
        }
        sent => sent,
    }
}

/// The error for a reply of `size` bytes that the server would not carry.
pub fn too_large(size: usize) -> ShoalError {
    ShoalError::bad_request(format!(
        "the reply would be {size} bytes, more than the NATS server's max payload: ask for less (a smaller limit, a page after a cursor, or a narrower filter)"
    ))
    .with_details(serde_json::json!({ "reply_bytes": size }))
}
