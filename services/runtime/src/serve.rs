//! Endpoints and the request loop: one place where requests are decoded, handled and
//! answered, so handlers only return `Result<T, ShoalError>`. Every service wires its
//! endpoints through [`Endpoints`]: each served on its own task, one request at a
//! time ([`Endpoints::serve`]), or concurrently for a while and then handed over
//! ([`Endpoints::serve_until`], the coordinator leader's writes).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::service::{Request, Service, endpoint};
use futures::stream::Select;
use futures::{Stream, StreamExt};
use serde::Serialize;
use shoal_protocol::{Endpoint, ShoalError, Subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::NatsError;

/// How long requests delivered before an endpoint was unsubscribed are still
/// awaited, to be refused rather than left unanswered.
const STRAGGLERS: Duration = Duration::from_millis(100);

/// Requests for one endpoint, from its shared subject and its per-instance subject.
pub struct EndpointRequests(Select<endpoint::Endpoint, endpoint::Endpoint>);

impl EndpointRequests {
    /// Unsubscribes both subjects; requests already delivered still come out.
    pub async fn stop(&mut self) {
        let (shared, direct) = self.0.get_mut();
        // An endpoint whose subscription is already gone has nothing to stop.
        let _ = shared.stop().await;
        let _ = direct.stop().await;
    }
}

impl Stream for EndpointRequests {
    type Item = Request;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Request>> {
        self.0.poll_next_unpin(cx)
    }
}

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
    Ok(EndpointRequests(futures::stream::select(shared, direct)))
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
        answer(&request, result).await;
    }
}

/// Answers requests concurrently, each on its own task, until `stop`; then
/// unsubscribes the endpoint and answers the requests delivered before that with
/// `refusal()`, so none goes unanswered and their clients can retry elsewhere.
pub async fn serve_until<H, Fut, T>(
    mut requests: EndpointRequests,
    stop: CancellationToken,
    refusal: fn() -> ShoalError,
    handler: H,
) where
    H: Fn(async_nats::Message) -> Fut,
    Fut: Future<Output = Result<T, ShoalError>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => return,
            },
        };
        let handled = handler(request.message.clone());
        tokio::spawn(async move { answer(&request, handled.await).await });
    }
    requests.stop().await;
    while let Ok(Some(request)) = tokio::time::timeout(STRAGGLERS, requests.next()).await {
        answer::<()>(&request, Err(refusal())).await;
    }
}

async fn answer<T: Serialize>(request: &Request, result: Result<T, ShoalError>) {
    if let Err(e) = shoal_protocol::respond(request, result).await {
        tracing::warn!(subject = %request.message.subject, error = %e, "reply not sent");
    }
}

/// Adds endpoints to a micro service and serves each on a task of `tasks`, which
/// the caller waits for once the endpoints' tokens are cancelled.
pub struct Endpoints<'a> {
    service: &'a Service,
    subjects: &'a Subjects,
    instance_id: &'a str,
    tasks: &'a TaskTracker,
}

impl<'a> Endpoints<'a> {
    pub fn new(
        service: &'a Service,
        subjects: &'a Subjects,
        instance_id: &'a str,
        tasks: &'a TaskTracker,
    ) -> Endpoints<'a> {
        Endpoints {
            service,
            subjects,
            instance_id,
            tasks,
        }
    }

    /// Serves `endpoint` with `handler`, one request at a time, until `shutdown`
    /// (see [`serve`]).
    pub async fn serve<H, Fut, T>(
        &self,
        endpoint: Endpoint,
        shutdown: &CancellationToken,
        handler: H,
    ) -> Result<(), NatsError>
    where
        H: Fn(async_nats::Message) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ShoalError>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let requests = self.add(endpoint).await?;
        self.tasks.spawn(serve(requests, shutdown.clone(), handler));
        Ok(())
    }

    /// Serves `endpoint` with `handler`, requests concurrently, until `stop`; then
    /// refuses what is still arriving with `refusal()` (see [`serve_until`]).
    pub async fn serve_until<H, Fut, T>(
        &self,
        endpoint: Endpoint,
        stop: &CancellationToken,
        refusal: fn() -> ShoalError,
        handler: H,
    ) -> Result<(), NatsError>
    where
        H: Fn(async_nats::Message) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ShoalError>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let requests = self.add(endpoint).await?;
        self.tasks
            .spawn(serve_until(requests, stop.clone(), refusal, handler));
        Ok(())
    }

    async fn add(&self, endpoint: Endpoint) -> Result<EndpointRequests, NatsError> {
        add_endpoint(self.service, self.subjects, endpoint, self.instance_id).await
    }
}
