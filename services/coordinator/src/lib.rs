//! shoal-coordinator: leader-elected assignment of agents to nodes.

use async_nats::Client;
use shoal_protocol::ServiceKind;
use shoal_runtime::CommonConfig;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Configuration of a coordinator instance.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "shoal-coordinator",
    version,
    about = "Shoal coordinator: leader-elected assignment of agents to nodes"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
}

/// Errors that stop the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("nats: {0}")]
    Nats(String),
}

/// Runs the coordinator until `shutdown` is cancelled.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    let instance_id = cfg
        .common
        .instance_id()
        .map_err(|e| Error::Config(e.to_string()))?;
    let service = shoal_runtime::start_service(&client, ServiceKind::Coordinator, &instance_id)
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    info!(instance_id = %instance_id, "coordinator ready");
    shutdown.cancelled().await;
    service
        .stop()
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    Ok(())
}
