//! shoal-registry: keeps cluster membership and node health.

use async_nats::Client;
use shoal_protocol::ServiceKind;
use shoal_runtime::CommonConfig;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Configuration of a registry instance.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "shoal-registry",
    version,
    about = "Shoal registry: keeps cluster membership and node health"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
}

/// Errors that stop the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("nats: {0}")]
    Nats(String),
}

/// Runs the registry until `shutdown` is cancelled.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    let instance_id = cfg
        .common
        .instance_id()
        .map_err(|e| Error::Config(e.to_string()))?;
    let service = shoal_runtime::start_service(&client, ServiceKind::Registry, &instance_id)
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    info!(instance_id = %instance_id, "registry ready");
    shutdown.cancelled().await;
    service
        .stop()
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    Ok(())
}
