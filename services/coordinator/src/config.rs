//! The coordinator's flags. Every one has an `SHOAL_…` environment variable.

use std::time::Duration;

use shoal_runtime::{CommonConfig, ConfigError, JetStreamArgs, SystemAccountArgs};

use crate::liveness;

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

    /// Leader lease time to live: the lease bucket's max_age. The leader renews every
    /// third of it; a crashed leader is replaced about this long after its last renewal.
    #[arg(long, env = "SHOAL_LEASE_TTL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// A follower takes the lease from a leader that has not answered its probes
    /// (`leader.get`, every 100 ms) for this long; a leader whose connection is
    /// closed, or that says it no longer leads, is replaced at once. Keep it well
    /// above the leader's answer time under load: deposing a slow leader is safe
    /// but costs a term change.
    #[arg(long, env = "SHOAL_TAKEOVER_AFTER", default_value = "600ms", value_parser = humantime::parse_duration)]
    pub takeover_after: Duration,

    /// Postgres URL for the assignment history (`postgres://user@host/db`). Without it,
    /// assignments work and `history` answers `unavailable`.
    #[arg(long, env = "SHOAL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    #[command(flatten)]
    pub jetstream: JetStreamArgs,

    /// Connection advisories: a leader whose connection closes is replaced at once.
    #[command(flatten)]
    pub sys: SystemAccountArgs,

    /// After winning the lease, judge no node dead for this long (one heartbeat
    /// detection window), as the registry's view may predate the failover.
    #[arg(long, env = "SHOAL_DETECTION_WINDOW", default_value = "3s", value_parser = humantime::parse_duration)]
    pub detection_window: Duration,

    /// How often the leader sweeps for agents on offline or draining nodes, as a
    /// backstop to the registry's events.
    #[arg(long, env = "SHOAL_SWEEP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// At most this many agents are moved (orphaned or drained) per second.
    #[arg(long, env = "SHOAL_MAX_REASSIGNMENTS_PER_SEC", default_value_t = 200)]
    pub max_reassignments_per_sec: u32,

    /// Pause reassignments while more than this share (0 to 1) of the nodes is offline:
    /// a mass failure is more likely a partition than dead machines.
    #[arg(long, env = "SHOAL_MASS_FAILURE_SHARE", default_value_t = 0.5)]
    pub mass_failure_share: f64,

    /// How long to wait for JetStream to answer (stream info, a lease renewal, a new
    /// term's first append), and how long an ending term keeps confirming the
    /// appends it sent. An append left unanswered while the log's stream changes
    /// leader is sent again every 200 ms for as long as the term lasts.
    #[arg(long, env = "SHOAL_JETSTREAM_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub jetstream_timeout: Duration,

    /// How long to wait for the balancer, registry and other replicas to answer.
    #[arg(long, env = "SHOAL_PEER_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub peer_timeout: Duration,

    /// How often the leader checks whether to snapshot the assignments and purge the
    /// log below the snapshot; 0s turns compaction off.
    #[arg(long, env = "SHOAL_SNAPSHOT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Duration,

    /// The log must have grown by at least this many records since the last snapshot
    /// (and by as many as there are assignments) before a new one is written.
    #[arg(long, env = "SHOAL_SNAPSHOT_MIN_RECORDS", default_value_t = 10_000)]
    pub snapshot_min_records: u64,

    /// Most history rows written to Postgres in one statement.
    #[arg(long, env = "SHOAL_HISTORY_BATCH", default_value_t = 500)]
    pub history_batch: usize,
}

impl Config {
    /// The checks clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |message: &str| Err(ConfigError::invalid(message));
        if self.lease_ttl < Duration::from_secs(1) {
            return refuse(
                "--lease-ttl must be at least 1s (JetStream ages keys out in whole seconds)",
            );
        }
        if self.takeover_after < liveness::PROBE_EVERY * 2 {
            return refuse("--takeover-after must be at least 200ms (two probes)");
        }
        if !(0.0..=1.0).contains(&self.mass_failure_share) {
            return refuse("--mass-failure-share must be between 0 and 1");
        }
        if self.max_reassignments_per_sec == 0 {
            return refuse("--max-reassignments-per-sec must be at least 1");
        }
        if self.history_batch == 0 || self.history_batch > 5000 {
            return refuse("--history-batch must be from 1 to 5000");
        }
        if !self.snapshot_interval.is_zero()
            && self.snapshot_interval < crate::compaction::MIN_INTERVAL
        {
            return refuse("--snapshot-interval must be 0s (off) or at least 100ms");
        }
        if self.snapshot_min_records == 0 {
            return refuse("--snapshot-min-records must be at least 1");
        }
        Ok(())
    }
}
