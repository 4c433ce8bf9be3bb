//! shoal-announcer: announces this node and sends its heartbeats.

use async_nats::Client;
use shoal_protocol::ServiceKind;
use shoal_runtime::CommonConfig;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Configuration of an announcer (one per node).
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "shoal-announcer",
    version,
    about = "Shoal announcer: announces this node and sends its heartbeats"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,

    /// This node's id (a subject token: no dots, spaces, `*` or `>`); default: the host name.
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<String>,
}

impl Config {
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(shoal_runtime::hostname)
    }
}

/// Errors that stop the announcer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("nats: {0}")]
    Nats(String),
}

/// Runs the announcer until `shutdown` is cancelled.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    let node_id = cfg.node_id();
    shoal_protocol::validate::id("node_id", &node_id).map_err(|e| Error::Config(e.message))?;
    let service = shoal_runtime::start_service(&client, ServiceKind::Announcer, &node_id)
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    info!(node_id = %node_id, "announcer ready");
    shutdown.cancelled().await;
    service
        .stop()
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    Ok(())
}
