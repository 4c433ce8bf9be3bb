//! The registry's flags.

use std::time::Duration;

use shoal_runtime::{CommonConfig, ConfigError, JetStreamArgs, SystemAccountArgs};

use crate::member::Thresholds;

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

    /// Time between a node's heartbeats; must match the announcers' --heartbeat-interval.
    /// A node that declares a longer `heartbeat_interval` (on `nodes.register` or its
    /// announce) has its suspect and offline thresholds scaled to it.
    #[arg(long, env = "SHOAL_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Missed heartbeat intervals after which a node is suspect.
    #[arg(long, env = "SHOAL_SUSPECT_AFTER", default_value_t = 2)]
    pub suspect_after: u32,

    /// Missed heartbeat intervals after which a node is offline.
    #[arg(long, env = "SHOAL_OFFLINE_AFTER", default_value_t = 3)]
    pub offline_after: u32,

    /// How long an offline or departed node stays listed before it is pruned.
    #[arg(long, env = "SHOAL_RETENTION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// How often a node's metrics are written to the membership bucket (status and
    /// capacity changes are written at once, heartbeats never). Past 10,000 nodes the
    /// period stretches to keep these snapshots under 1,000 writes a second (50 s at
    /// 50,000 nodes); nodes.list always serves the latest heartbeat's metrics.
    #[arg(long, env = "SHOAL_METRICS_SNAPSHOT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub metrics_snapshot: Duration,

    /// Heartbeat partitions shared among the registry replicas; 1 (the default):
    /// every replica hears and judges every node. Above 1, the nats-server must map
    /// `<prefix>.node.*.heartbeat` into as many partitions (`shoal-registry
    /// --print-heartbeat-mapping` prints the block to add), and each replica hears and
    /// judges only its share, handed over as replicas come and go.
    #[arg(long, env = "SHOAL_HEARTBEAT_PARTITIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(shoal_protocol::partition::MAX_PARTITIONS)))]
    pub heartbeat_partitions: u32,

    /// Print the nats-server `mappings` block for --heartbeat-partitions and exit.
    #[arg(long)]
    pub print_heartbeat_mapping: bool,

    #[command(flatten)]
    pub jetstream: JetStreamArgs,

    /// Connection advisories: a node whose connection drops is suspect at once.
    #[command(flatten)]
    pub sys: SystemAccountArgs,
}

impl Config {
    pub fn thresholds(&self) -> Result<Thresholds, ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::invalid(
                "--heartbeat-interval must be more than zero",
            ));
        }
        if self.suspect_after == 0 || self.offline_after <= self.suspect_after {
            return Err(ConfigError::invalid(format!(
                "need 0 < --suspect-after ({}) < --offline-after ({})",
                self.suspect_after, self.offline_after
            )));
        }
        Ok(Thresholds {
            interval: self.heartbeat_interval,
            suspect_after: self.heartbeat_interval * self.suspect_after,
            offline_after: self.heartbeat_interval * self.offline_after,
            retention: self.retention,
            metrics_snapshot: self.metrics_snapshot,
        })
    }
}
