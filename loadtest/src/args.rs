//! Flags of `shoal-loadtest`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::measure::{Limit, Load};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "shoal-loadtest",
    version,
    about = "Throughput and latency runs against a Shoal control plane",
    long_about = "Throughput and latency runs against a Shoal control plane.\n\n\
Targets a running stack (--nats-url, --database-url) or starts its own real nats-server, \
Postgres and services (--spawn). Every run also measures raw NATS request/reply and \
JetStream publish at the same load, and reports each figure as a ratio to that baseline. \
Runs that make assignments end by verifying that every acknowledged assignment is in the \
coordinator's state and in Postgres history exactly once; a failed verification exits 1.\n\n\
Scenarios:\n  \
assign      throughput and latency of assign, then unassign, of distinct agents\n  \
burst       --agents assigned at once, then how evenly they spread (max-min, stddev)\n  \
select      balancer selections with --nodes nodes in its view (10,000 for the goal)\n  \
discovery   time from a node's announce to being listed and selectable, percentiles\n  \
heartbeats  --nodes simulated nodes heartbeating: registry CPU and RSS, false suspect/offline\n  \
failover    kill -9 the leader coordinator mid-run (--spawn): time without a leader, client errors, nothing lost;\n              with --kill nats-server and --nats-servers 3, kill -9 the NATS server leading the assignment log instead"
)]
pub struct Args {
    /// What to measure (see the list above).
    #[arg(long, env = "SHOAL_LOADTEST_SCENARIO", value_enum)]
    pub scenario: Scenario,

    /// Start a private stack (nats-server, Postgres, registry, balancer, coordinators,
    /// simulated nodes) instead of using a running one.
    #[arg(long, env = "SHOAL_LOADTEST_SPAWN")]
    pub spawn: bool,

    /// NATS URL of the stack under test, or several separated by commas (ignored
    /// with --spawn).
    #[arg(long, env = "SHOAL_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// With --spawn: how many routed nats-servers to start. With more than one the
    /// services keep their KV buckets and the assignment log on up to 3 replicas.
    #[arg(long, env = "SHOAL_LOADTEST_NATS_SERVERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    pub nats_servers: u16,

    /// What the failover scenario kills with -9: the leader coordinator, or (with
    /// --nats-servers 3) the nats-server leading the assignment log stream.
    #[arg(long, env = "SHOAL_LOADTEST_KILL", value_enum, default_value_t = Victim::Coordinator)]
    pub kill: Victim,

    /// Postgres URL of the coordinator's history database, for verification (ignored
    /// with --spawn).
    #[arg(long, env = "SHOAL_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Subject prefix of the stack under test.
    #[arg(long, env = "SHOAL_PREFIX", default_value = "shoal")]
    pub prefix: String,

    /// Simulated nodes heartbeating during the run.
    #[arg(long, env = "SHOAL_LOADTEST_NODES", default_value_t = 100)]
    pub nodes: usize,

    /// Agent slots per simulated node.
    #[arg(long, env = "SHOAL_LOADTEST_MAX_AGENTS", default_value_t = 1000)]
    pub max_agents: u32,

    /// Open loop: start requests at this rate per second (latency counted from each
    /// request's scheduled time). Without it, closed loop at --concurrency.
    #[arg(long, env = "SHOAL_LOADTEST_RATE")]
    pub rate: Option<f64>,

    /// Closed loop: requests in flight at all times.
    #[arg(long, env = "SHOAL_LOADTEST_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// Stop after this long (e.g. 10s, 1m).
    #[arg(long, env = "SHOAL_LOADTEST_DURATION", value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,

    /// Stop after this many requests (default 2,000 when no --duration).
    #[arg(long, env = "SHOAL_LOADTEST_REQUESTS")]
    pub requests: Option<u64>,

    /// Agents in the burst scenario.
    #[arg(long, env = "SHOAL_LOADTEST_AGENTS", default_value_t = 1000)]
    pub agents: u64,

    /// Selections per strategy in the select scenario's in-process engine benchmark.
    #[arg(
        long,
        env = "SHOAL_LOADTEST_ENGINE_SELECTIONS",
        default_value_t = 200_000
    )]
    pub engine_selections: usize,

    /// Skip the same-run baselines.
    #[arg(long, env = "SHOAL_LOADTEST_NO_BASELINE")]
    pub no_baseline: bool,

    /// Write the report as JSON to this file.
    #[arg(long, env = "SHOAL_LOADTEST_JSON")]
    pub json: Option<PathBuf>,

    /// Write latency histograms and throughput over time as SVG to this file.
    #[arg(long, env = "SHOAL_LOADTEST_SVG")]
    pub svg: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Victim {
    /// The coordinator holding the leader lease.
    Coordinator,
    /// The nats-server leading the assignment log stream (needs --nats-servers 3).
    NatsServer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Assign,
    Burst,
    Select,
    Discovery,
    Heartbeats,
    Failover,
}

impl Args {
    pub fn load(&self) -> Load {
        match self.rate {
            Some(rate) => Load::Open { rate },
            None => Load::Closed {
                concurrency: self.concurrency,
            },
        }
    }

    pub fn limit(&self) -> Limit {
        match (self.duration, self.requests) {
            (Some(d), _) => Limit::Duration(d),
            (None, Some(n)) => Limit::Requests(n),
            (None, None) => Limit::Requests(2_000),
        }
    }
}
