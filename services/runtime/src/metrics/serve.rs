//! Serving a process's [`Metrics`]: on its NATS subject
//! `<prefix>.<service>.instance.<id>.metrics` (an endpoint of its micro service,
//! so `$SRV.INFO` lists it), and, with `--metrics-listen`, as `GET /metrics` over
//! HTTP/1 for a Prometheus server to scrape directly ([`serve_http`] alone for an
//! announcer, whose NATS user is confined to its node's subjects).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::endpoint::Endpoint;
use futures::StreamExt;
use shoal_protocol::ShoalError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{CONTENT_TYPE, Metrics};
use crate::{Endpoints, NatsError};

/// Why a process's metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("--metrics-listen {addr}: cannot listen there: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Endpoints<'_> {
    /// Serves `metrics` on this instance's metrics subject and, with `listen`, over
    /// HTTP, until `shutdown`. An address already in use is an error now, not later.
    pub async fn serve_metrics(
        &self,
        metrics: Metrics,
        listen: Option<SocketAddr>,
        shutdown: &CancellationToken,
    ) -> Result<(), MetricsError> {
        let subject = self.subjects.metrics(metrics.kind(), self.instance_id);
        let endpoint = self
            .service
            .endpoint_builder()
            .name("metrics")
            .add(subject.clone())
            .await
            .map_err(|source| NatsError::Endpoint { subject, source })?;
        let metrics = Arc::new(metrics);
        if let Some(addr) = listen {
            serve_http(metrics.clone(), addr, self.tasks, shutdown).await?;
        }
        self.tasks
            .spawn(answer(endpoint, metrics, shutdown.clone()));
        Ok(())
    }
}

/// Serves `metrics` over HTTP alone, at `http://addr/metrics`, on a task of `tasks`
/// until `shutdown`: for a process whose NATS user may not subscribe to its metrics
/// subject (an announcer is confined to its node's subjects). An address already
/// in use is an error now.
pub async fn serve_http(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Listen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(address = %bound, "serving metrics over http at /metrics");
    tasks.spawn(http(listener, metrics, shutdown.clone()));
    Ok(())
}

/// Answers metrics requests on NATS until `shutdown`.
async fn answer(mut requests: Endpoint, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            request = requests.next() => match request {
                Some(request) => request,
                None => return,
            },
        };
        let sent = match metrics.encode() {
            Ok(text) => request.respond(Ok(text.into())).await,
            Err(e) => {
                let e = ShoalError::internal(format!("metrics not encoded: {e}"));
                shoal_protocol::respond::<()>(&request, Err(e)).await
            }
        };
        if let Err(e) = sent {
            debug!(error = %e, "metrics reply not sent");
        }
    }
}

/// Longest a client may take to send its request head.
const READ_PATIENCE: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Accepts HTTP connections until `shutdown`, one short task each.
async fn http(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(respond_http(stream, metrics.clone()));
            }
            Err(e) => {
                // Out of file descriptors, say: pause rather than spin.
                warn!(error = %e, "metrics connection not accepted");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request, answers it and closes the connection.
async fn respond_http(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let response = match tokio::time::timeout(READ_PATIENCE, read_head(&mut stream)).await {
        Ok(Some(head)) => route(&head, &metrics),
        Ok(None) => Response::text(400, "Bad Request", "not an HTTP/1 request\n"),
        Err(_) => Response::text(408, "Request Timeout", "no request within 5 s\n"),
    };
    if let Err(e) = response.write(&mut stream).await {
        debug!(error = %e, "metrics response not sent");
    }
}

/// The request head (up to the blank line); None if it is too long, not text, or
/// the connection ends first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return String::from_utf8(buf).ok();
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// HEAD: the headers without the body.
    head_only: bool,
    allow: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
            allow: false,
        }
    }

    async fn write(self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        if !self.head_only {
            stream.write_all(self.body.as_bytes()).await?;
        }
        stream.shutdown().await
    }
}

/// `GET /metrics` (or HEAD) gets the exposition; anything else a plain error.
fn route(head: &str, metrics: &Metrics) -> Response {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request", "not an HTTP/1 request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "Bad Request", "not an HTTP/1 request\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Response::text(404, "Not Found", "metrics are served at /metrics\n");
    }
    if method != "GET" && method != "HEAD" {
        return Response {
            allow: true,
            ..Response::text(405, "Method Not Allowed", "use GET /metrics\n")
        };
    }
    let mut response = match metrics.encode() {
        Ok(text) => Response {
            content_type: CONTENT_TYPE,
            ..Response::text(200, "OK", text)
        },
        Err(e) => Response::text(
            500,
            "Internal Server Error",
            format!("metrics not encoded: {e}\n"),
        ),
    };
    response.head_only = method == "HEAD";
    response
}
