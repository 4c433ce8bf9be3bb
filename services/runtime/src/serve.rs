//! Endpoints and the request loop: one place where requests are decoded, handled and
//! answered, so handlers only return `Result<T, ShoalError>`. Every service wires its
//! endpoints through [`Endpoints`]: each served on its own task, one request at a
//! time ([`Endpoints::serve`]); the coordinator leader's writes go through
//! [`DrainableEndpoints`], served concurrently for a while and then handed over.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::service::{Request, Service, endpoint};
use async_nats::{Client, Message, Subscriber};
use futures::stream::Select;
use futures::{Stream, StreamExt};
use serde::Serialize;
use shoal_protocol::{Endpoint, ShoalError, Subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::NatsError;

/// Requests for one endpoint, from its shared subject and its per-instance subject.
pub struct EndpointRequests(Select<endpoint::Endpoint, endpoint::Endpoint>);

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

/// Requests for one endpoint from plain subscriptions to its shared subject and
/// this instance's direct subject. For endpoints one process serves at a time (the coordinator leader's
/// writes): no queue group, so while the subscription of a process that stopped
/// serving lingers at the server (a stopped or cut-off process, until the server
/// drops its connection), every request reaches the live server too instead of
/// half of them going unanswered. They are not counted in `$SRV.STATS`.
struct DrainableRequests {
    shared: Subscriber,
    direct: Subscriber,
}

impl DrainableRequests {
    async fn subscribe(
        client: &Client,
        subjects: &Subjects,
        endpoint: Endpoint,
        instance_id: &str,
    ) -> Result<DrainableRequests, NatsError> {
        let subscribe = |subject: String| async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|source| NatsError::Subscribe { subject, source })
        };
        Ok(DrainableRequests {
            shared: subscribe(subjects.endpoint(endpoint)).await?,
            direct: subscribe(subjects.direct(endpoint, instance_id)).await?,
        })
    }

    async fn next(&mut self) -> Option<Message> {
        tokio::select! {
            Some(m) = self.shared.next() => Some(m),
            Some(m) = self.direct.next() => Some(m),
            else => None,
        }
    }

    /// Unsubscribes; the streams end with what has reached this client. async-nats
    /// forgets the subscriptions one read after sending UNSUB, without waiting for
    /// the server, so a request the server routes here in between is lost: the
    /// caller hands over with a successor already subscribed.
    async fn drain(&mut self) {
        // A subscription already gone (the client closed) has nothing to drain.
        let _ = self.shared.drain().await;
        let _ = self.direct.drain().await;
    }
}

/// Answers requests concurrently, each on its own task, until `stop`; then
/// unsubscribes and answers what has still arrived with `refusal()`, so their
/// clients retry elsewhere, and returns once every reply owed is sent.
async fn serve_until<H, Fut, T>(
    client: Client,
    mut requests: DrainableRequests,
    stop: CancellationToken,
    refusal: fn() -> ShoalError,
    handler: H,
) where
    H: Fn(Message) -> Fut,
    Fut: Future<Output = Result<T, ShoalError>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    // Every reply owed is sent before this returns, so a process that waits for
    // it before exiting drops none.
    let replies = TaskTracker::new();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let handled = handler(message.clone());
        let client = client.clone();
        replies.spawn(async move { reply(&client, &message, handled.await).await });
    }
    requests.drain().await;
    // Bounded: a connection lost mid-drain never confirms it.
    let _ = tokio::time::timeout(DRAIN_PATIENCE, async {
        while let Some(message) = requests.next().await {
            reply::<()>(&client, &message, Err(refusal())).await;
        }
    })
    .await;
    replies.close();
    replies.wait().await;
}

/// How long a drain may take before the remaining requests are given up.
const DRAIN_PATIENCE: Duration = Duration::from_secs(2);

async fn reply<T: Serialize>(client: &Client, message: &Message, result: Result<T, ShoalError>) {
    if let Err(e) = shoal_protocol::respond_to(client, message, result).await {
        tracing::warn!(subject = %message.subject, error = %e, "reply not sent");
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
    pub(crate) service: &'a Service,
    pub(crate) subjects: &'a Subjects,
    pub(crate) instance_id: &'a str,
    pub(crate) tasks: &'a TaskTracker,
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

    async fn add(&self, endpoint: Endpoint) -> Result<EndpointRequests, NatsError> {
        add_endpoint(self.service, self.subjects, endpoint, self.instance_id).await
    }
}

/// Serves endpoints that one process at a time answers, on plain subscriptions
/// (no queue group, not counted in `$SRV.STATS`), each on a task of `tasks`, which
/// the caller waits for once `stop` is cancelled. A request routed here while it
/// unsubscribes is answered only if a successor is already subscribed: hand over by
/// subscribing the successor first.
pub struct DrainableEndpoints<'a> {
    client: &'a Client,
    subjects: &'a Subjects,
    instance_id: &'a str,
    tasks: &'a TaskTracker,
}

impl<'a> DrainableEndpoints<'a> {
    pub fn new(
        client: &'a Client,
        subjects: &'a Subjects,
        instance_id: &'a str,
        tasks: &'a TaskTracker,
    ) -> DrainableEndpoints<'a> {
        DrainableEndpoints {
            client,
            subjects,
            instance_id,
            tasks,
        }
    }

    /// Serves `endpoint` with `handler`, requests concurrently, until `stop`; then
    /// refuses what the server had already delivered with `refusal()` (see
    /// [`serve_until`]).
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
        let requests =
            DrainableRequests::subscribe(self.client, self.subjects, endpoint, self.instance_id)
                .await?;
        self.tasks.spawn(serve_until(
            self.client.clone(),
            requests,
            stop.clone(),
            refusal,
            handler,
        ));
        Ok(())
    }
}
