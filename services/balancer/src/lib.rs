//! shoal-balancer: picks nodes for new work.
//!
//! Any number of replicas share the `<prefix>.balancer.*` queue group. Each keeps its
//! own [`View`] of the cluster — membership from a watch of the `shoal_members` KV
//! bucket, live load from node heartbeats, placements from the coordinator's
//! assignment events plus its own in-flight picks — and follows the cluster strategy
//! kept in the `shoal_config` bucket. Selection runs on in-memory indexes
//! ([`pool`]), so it costs O(log n), not a scan of the cluster.

pub mod bench;
mod explain;
pub mod fenwick;
mod kv;
mod pool;
pub mod score;
mod select;
mod service;
pub mod view;

#[cfg(test)]
mod tests;

use std::time::Duration;

use async_nats::Client;
use shoal_protocol::Strategy;
use shoal_runtime::CommonConfig;
use tokio_util::sync::CancellationToken;

pub use bench::{BenchReport, select_throughput};
pub use kv::STRATEGY_KEY;
pub use view::{Settings, View};

/// Configuration of a balancer instance.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "shoal-balancer",
    version,
    about = "Shoal balancer: picks nodes for new work"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,

    /// Strategy used while none is set in the `shoal_config` bucket: round_robin,
    /// least_loaded, least_agents, random or weighted.
    #[arg(long, env = "SHOAL_BALANCER_STRATEGY", default_value = "least_loaded", value_parser = parse_strategy)]
    pub default_strategy: Strategy,

    /// How long a pick counts against its node while no assignment event from the
    /// coordinator has confirmed it (keeps bursts from piling onto one node).
    #[arg(long, env = "SHOAL_BALANCER_PICK_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pick_ttl: Duration,

    /// Longest list of candidates (with scores) in a select reply.
    #[arg(long, env = "SHOAL_BALANCER_MAX_CANDIDATES", default_value_t = 10)]
    pub max_candidates: usize,

    /// Replicas of the KV buckets this balancer creates when they are missing (use 3
    /// on a 3-server NATS cluster).
    #[arg(long, env = "SHOAL_KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,
}

fn parse_strategy(name: &str) -> Result<Strategy, String> {
    Strategy::parse(name).ok_or_else(|| {
        let valid: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown strategy {name:?}: use one of {}", valid.join(", "))
    })
}

/// Errors that stop the balancer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("nats: {0}")]
    Nats(String),
    #[error("jetstream: {0}")]
    JetStream(String),
}

/// Runs the balancer until `shutdown` is cancelled.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    service::run(cfg, client, shutdown).await
}
