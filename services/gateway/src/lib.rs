//! shoal-gateway: Shoal's HTTP face.
//!
//! One more NATS client: every route is a request on another service's subject
//! (through [`ShoalClient`]), answered as JSON over HTTP. It serves the REST API the
//! systems Shoal replaces offered (`/api/cluster/...`), health, and later metrics and
//! the dashboard. It keeps no state of its own, so any number of gateways may run.

pub mod dashboard;
pub mod error;
mod routes;

use std::net::SocketAddr;

use async_nats::Client;
use axum::Router;
use shoal_protocol::{ServiceKind, ShoalClient};
use shoal_runtime::{CommonConfig, ConfigError, NatsError};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::ApiError;

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
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    routes::router()
        .merge(dashboard::routes())
        .with_state(state)
}

/// Serves HTTP until `shutdown`, then lets in-flight requests finish.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
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
    let state = AppState {
        client: ShoalClient::new(client, subjects),
    };
    info!(url = %format!("http://{local}/"), instance_id = %instance_id, "gateway ready");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Serve { source })
}
