//! shoal-balancer: picks nodes for new work.
//!
//! Any number of replicas share the `<prefix>.balancer.*` queue group. Each keeps its
//! own [`View`] of the cluster — membership from a watch of the `shoal_members` KV
//! bucket, live load from node heartbeats, placements from the coordinator's
//! assignment events plus its own in-flight picks, and from these each node's
//! estimated load ([`estimate`]) — and follows the cluster strategy kept in the
//! `shoal_config` bucket. Selection runs on in-memory indexes
//! ([`pool`]), so it costs O(log n), not a scan of the cluster.

#[cfg(any(test, feature = "test-util"))]
pub mod bench;
mod counters;
pub mod estimate;
mod explain;
pub mod fenwick;
mod metrics;
mod ordered;
mod orders;
mod pool;
pub mod score;
mod select;
mod service;
mod slot;
pub mod view;

#[cfg(test)]
mod estimate_tests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_nats::Client;
use shoal_protocol::{Resources, Strategy};
use shoal_runtime::{CommonConfig, ConfigError, JetStreamArgs, JetStreamError, NatsError};
use tokio_util::sync::CancellationToken;

#[cfg(any(test, feature = "test-util"))]
pub use bench::{BenchReport, select_throughput};
pub use estimate::Decay;
pub use shoal_protocol::STRATEGY_KEY;
pub use view::{DEFAULT_AGENT_COST, Settings, View};

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

    /// CPU, in percent of a node, that an agent placed without `resources` in its
    /// assign request is counted as using: added to the node's estimated load (what
    /// least_loaded ranks by) the moment the agent is placed. A node whose agents are
    /// measured to use more on average counts that instead.
    #[arg(long, env = "SHOAL_BALANCER_AGENT_CPU", default_value_t = DEFAULT_AGENT_COST.cpu, value_parser = parse_percent)]
    pub agent_cpu: f64,

    /// Memory, in percent of a node, counted for an agent placed without `resources`
    /// (as --agent-cpu).
    #[arg(long, env = "SHOAL_BALANCER_AGENT_MEMORY", default_value_t = DEFAULT_AGENT_COST.memory, value_parser = parse_percent)]
    pub agent_memory: f64,

    /// How long a placement's cost counts in full on top of the node's measured load,
    /// in time covered by the node's heartbeats after the placement: the agent
    /// starting, and a heartbeat interval sampling it.
    #[arg(long, env = "SHOAL_BALANCER_COST_HOLD", default_value = "3s", value_parser = humantime::parse_duration)]
    pub cost_hold: Duration,

    /// After --cost-hold, the placement's cost fades linearly to nothing over this
    /// long as the measured load takes it over. A node that stops heartbeating keeps
    /// its placements' costs in full.
    #[arg(long, env = "SHOAL_BALANCER_COST_FADE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cost_fade: Duration,

    #[command(flatten)]
    pub jetstream: JetStreamArgs,
}

/// A flag that should be a percentage is not one.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a percentage from 0 to 100")]
pub struct PercentError {
    value: String,
    #[source]
    source: Option<std::num::ParseFloatError>,
}

fn parse_percent(value: &str) -> Result<f64, PercentError> {
    let error = |source| PercentError {
        value: value.to_string(),
        source,
    };
    let v: f64 = value.trim().parse().map_err(|e| error(Some(e)))?;
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(error(None))
    }
}

impl Config {
    /// The view's settings from the flags.
    pub fn settings(&self) -> Settings {
        Settings {
            strategy: self.default_strategy,
            pick_ttl: self.pick_ttl,
            max_candidates: self.max_candidates,
            agent_cost: Resources {
                cpu: self.agent_cpu,
                memory: self.agent_memory,
            },
            decay: Decay {
                hold: self.cost_hold,
                fade: self.cost_fade,
            },
        }
    }
}

/// A `--default-strategy` that names no strategy.
#[derive(Debug, thiserror::Error)]
#[error("unknown strategy {0:?}: use one of {valid}", valid = Strategy::ALL.map(Strategy::as_str).join(", "))]
pub struct UnknownStrategy(String);

fn parse_strategy(name: &str) -> Result<Strategy, UnknownStrategy> {
    Strategy::parse(name).ok_or_else(|| UnknownStrategy(name.to_string()))
}

/// Errors that stop the balancer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error(transparent)]
    Metrics(#[from] shoal_runtime::metrics::MetricsError),
}

/// Runs the balancer until `shutdown` is cancelled.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    service::run(cfg, client, shutdown).await
}
