//! Endpoints and the request loop: one place where requests are decoded, handled and
//! answered, so handlers only return `Result<T, ShoalError>`.

use std::future::Future;
use std::pin::Pin;

use async_nats::service::{Request, Service};
use futures::{Stream, StreamExt};
use serde::Serialize;
use shoal_protocol::{Endpoint, ShoalError, Subjects};
use tokio_util::sync::CancellationToken;

use crate::error::NatsError;

/// Requests for one endpoint, from its shared subject and its per-instance subject.
pub type EndpointRequests = Pin<Box<dyn Stream<Item = Request> + Send>>;

/// Adds `endpoint` to the micro service twice: on the shared subject (replicas share
/// the queue group) and on this instance's direct subject.
pub async fn add_endpoint(
    service: &Service,
    subjects: &Subjects,
    endpoint: Endpoint,
    instance_id: &str,
) -> Result<EndpointRequests, NatsError> {
    let add = |name: String, subject: String| async move {
        service
            .endpoint_builder()
            .name(name)
            .add(subject.clone())
            .await
            .map_err(|source| NatsError::Endpoint { subject, source })
    };
    let shared = add(endpoint.name(), subjects.endpoint(endpoint)).await?;
    let direct = add(
        format!("{}-direct", endpoint.name()),
        subjects.direct(endpoint, instance_id),
    )
    .await?;
    Ok(Box::pin(futures::stream::select(shared, direct)))
}

/// Answers requests one at a time with `handler` until `shutdown` or the stream
/// ends. Each result is encoded once (value or error envelope with headers).
pub async fn serve<H, Fut, T>(
    mut requests: EndpointRequests,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(async_nats::Message) -> Fut,
    Fut: Future<Output = Result<T, ShoalError>>,
    T: Serialize,
{
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let result = handler(request.message.clone()).await;
        if let Err(e) = shoal_protocol::respond(&request, result).await {
            tracing::warn!(subject = %request.message.subject, error = %e, "reply not sent");
        }
    }
}
