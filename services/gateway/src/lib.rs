//! shoal-gateway: Shoal's HTTP face.
//!
//! One more NATS client: every route is a request on another service's subject
//! (through [`ShoalClient`]), answered as JSON over HTTP. It serves the REST API the
//! systems Shoal replaces offered (`/api/cluster/...`), health, live events (SSE), its
//! own OpenAPI document, the control plane's metrics and the dashboard. It keeps no
//! state but a memory of the replicas it has seen (for health), so any number may
//! run.
//!
//! Every API route is in one table ([`routes::table`]), from which both the router
//! and the OpenAPI document ([`openapi`]) are built; the dashboard's pages
//! ([`dashboard`]) and `/metrics` are merged beside them.

pub mod dashboard;
pub mod error;
pub mod extract;
pub mod health;
mod metrics;
pub mod openapi;
pub mod routes;
pub mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::Client;
use axum::Router;
use shoal_protocol::{ServiceKind, ShoalClient};
use shoal_runtime::{CommonConfig, ConfigError, NatsError};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::ApiError;
use health::{HealthMonitor, HealthSettings};

/// The gateway's flags (and `SHOAL_…` environment variables).
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "shoal-gateway",
    version,
    about = "Shoal's HTTP API (/api/cluster/...), health and dashboard, over NATS"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,

    /// Address the HTTP server listens on (`host:port`; port 0 picks a free one).
    #[arg(long, env = "SHOAL_HTTP_LISTEN", default_value = "127.0.0.1:8151")]
    pub http_listen: SocketAddr,

    /// How long a health check waits for the services' answers (pings, leader,
    /// JetStream); a replica silent for this long counts as down.
    #[arg(long, env = "SHOAL_HEALTH_TIMEOUT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub health_timeout: Duration,

    /// How long health lists a replica that stopped answering as down before
    /// forgetting it (a replica removed on purpose stops showing then).
    #[arg(long, env = "SHOAL_HEALTH_FORGET_AFTER", default_value = "5m", value_parser = humantime::parse_duration)]
    pub health_forget_after: Duration,
}

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub client: ShoalClient,
    pub health: Arc<HealthMonitor>,
    /// The `seq` of the last heartbeat sent for a node over HTTP.
    pub heartbeat_seq: Arc<AtomicU64>,
    /// Cancelled when the gateway stops: streams that would never end (the event
    /// stream) end then, so a graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// State for a gateway named `instance_id` that stops at `shutdown`; its health
    /// memory starts empty (see [`HealthMonitor::run`]).
    pub fn new(
        client: ShoalClient,
        instance_id: String,
        health: HealthSettings,
        shutdown: CancellationToken,
    ) -> AppState {
        AppState {
            health: Arc::new(HealthMonitor::new(client.clone(), instance_id, health)),
            client,
            heartbeat_seq: Arc::new(AtomicU64::new(0)),
            shutdown,
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let served = routes::router()
        .merge(dashboard::routes())
        .merge(metrics::routes());
    routes::with_fallbacks(served).with_state(state)
}

impl Config {
    /// Refuses the common flags the gateway has no use for, rather than ignoring
    /// them: `--metrics-listen` (the gateway has no metrics of its own; it serves
    /// the whole control plane's at `GET /metrics` on `--http-listen`).
    pub fn check(&self) -> Result<(), ConfigError> {
        match self.common.metrics_listen {
            Some(addr) => Err(ConfigError::Invalid(format!(
                "--metrics-listen {addr}: the gateway has no metrics of its own; it serves \
                 the whole control plane's at GET /metrics on --http-listen"
            ))),
            None => Ok(()),
        }
    }
}

/// Serves HTTP until `shutdown`, then lets in-flight requests finish.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    cfg.check()?;
    let subjects = cfg.common.subjects()?;
    let instance_id = cfg.common.instance_id()?;
    let _service =
        shoal_runtime::start_service(&client, ServiceKind::Gateway, &instance_id).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|source| Error::Listen {
            addr: cfg.http_listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Listen {
        addr: cfg.http_listen,
        source,
    })?;
    let settings = HealthSettings {
        window: cfg.health_timeout,
        forget_after: cfg.health_forget_after,
    };
    let state = AppState::new(
        ShoalClient::new(client, subjects),
        instance_id.clone(),
        settings,
        shutdown.clone(),
    );
    let monitor = state.health.clone();
    let rounds = shutdown.clone();
    tokio::spawn(async move { monitor.run(rounds).await });
    info!(url = %format!("http://{local}/"), instance_id = %instance_id, "gateway ready");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Serve { source })
}
