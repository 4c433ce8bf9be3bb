//! shoal-announcer: announces this node and sends its heartbeats.
//!
//! One announcer runs per node. It publishes `<prefix>.node.<id>.announce` at start,
//! when its identity changes, after a reconnect and when a registry asks
//! (`<prefix>.registry.sync`); `<prefix>.node.<id>.heartbeat` every interval with a
//! sequence number and host metrics; `<prefix>.node.<id>.leave` on a graceful stop.
//! It counts the agents the coordinator tells it about on `<prefix>.node.<id>.agents`.
//!
//! [`sim::SimulatedCluster`] runs many lightweight nodes with the same wire behaviour
//! in one process, for tests and the loadtest.

pub mod agents;
pub mod identity;
pub mod metrics;
mod node;
pub mod pace;
pub mod sim;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::Client;
use shoal_protocol::NodeRole;
use shoal_runtime::{CommonConfig, ConfigError, NatsError};
use tokio_util::sync::CancellationToken;

pub use identity::Identity;

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

    /// This node's id (a subject token: letters, digits, `-`, `_`); default: the host
    /// name with other characters replaced by `-`.
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<String>,

    /// Host name to announce; default: this machine's.
    #[arg(long, env = "SHOAL_NODE_HOSTNAME")]
    pub hostname: Option<String>,

    /// IP address to announce; default: the address of this host's outbound route.
    #[arg(long, env = "SHOAL_NODE_IP")]
    pub ip_address: Option<String>,

    /// Port this node's workload listens on (announced, not used by Shoal).
    #[arg(long, env = "SHOAL_NODE_PORT", default_value_t = 0)]
    pub port: u16,

    /// Role: leader, worker, replica or standby.
    #[arg(long, env = "SHOAL_NODE_ROLE", default_value = "worker", value_parser = identity::parse_role)]
    pub role: NodeRole,

    /// Services this node offers, comma-separated (`wrapper,database`).
    #[arg(long, env = "SHOAL_NODE_SERVICES", value_delimiter = ',')]
    pub services: Vec<String>,

    /// Labels, comma-separated `key=value` pairs (`zone=eu-1,disk=ssd`).
    #[arg(long, env = "SHOAL_NODE_LABELS", value_delimiter = ',', value_parser = identity::parse_label)]
    pub labels: Vec<(String, String)>,

    /// Most agents this node runs at once.
    #[arg(long, env = "SHOAL_NODE_MAX_AGENTS", default_value_t = 10)]
    pub max_agents: u32,

    /// Version to announce; default: this announcer's.
    #[arg(long, env = "SHOAL_NODE_VERSION")]
    pub node_version: Option<String>,

    /// Features this node supports, comma-separated.
    #[arg(long, env = "SHOAL_NODE_FEATURES", value_delimiter = ',')]
    pub features: Vec<String>,

    /// Time between heartbeats; the registry must use the same value.
    #[arg(long, env = "SHOAL_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Path whose file system's usage is reported as disk_usage.
    #[arg(long, env = "SHOAL_NODE_DISK_PATH", default_value = "/")]
    pub disk_path: PathBuf,
}

impl Config {
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| identity::id_from_hostname(&shoal_runtime::hostname()))
    }

    /// The identity announced at start (host name and address detected if unset).
    pub fn identity(&self) -> Identity {
        Identity {
            id: self.node_id(),
            hostname: self
                .hostname
                .clone()
                .unwrap_or_else(shoal_runtime::hostname),
            ip_address: self.ip_address.clone().unwrap_or_else(identity::detect_ip),
            port: self.port,
            role: self.role,
            services: self.services.clone(),
            labels: self.labels.iter().cloned().collect(),
            max_agents: self.max_agents,
            version: self
                .node_version
                .clone()
                .unwrap_or_else(|| shoal_runtime::VERSION.to_string()),
            features: self.features.clone(),
            started_at: chrono::Utc::now(),
        }
    }
}

/// Errors that stop the announcer (or a simulated cluster), and a message not sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Metrics(#[from] shoal_runtime::metrics::MetricsError),
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Runs the announcer until `shutdown` is cancelled, then says goodbye.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    node::run(cfg, client, shutdown).await
}
