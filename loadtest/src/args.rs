//! Flags of `shoal-loadtest`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use shoal_announcer::sim::SimMetrics;
use shoal_protocol::Strategy;

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
burst       --agents assigned at once, then how evenly they spread (max-min, stddev, and for\n              least_loaded the spread of estimated loads); --strategy all: one burst per strategy\n  \
select      balancer selections with --nodes nodes in its view (10,000 for the goal)\n  \
discovery   time from a node's announce to being listed and selectable, percentiles\n  \
heartbeats  --nodes simulated nodes heartbeating: registry CPU and RSS, false suspect/offline\n  \
failover    a fault a third of the way into a stream of assigns (--spawn), chosen with --kill: coordinator (kill -9 of\n              the leader), coordinator-stop (SIGSTOP it for --pause, then SIGCONT), coordinator-term (SIGTERM it),\n              promote (leader.promote to a follower), nats-server / nats-server-term (kill -9 / SIGTERM of the\n              nats-server leading the assignment log, with --nats-servers 3), none (no fault); reports the time to\n              the first acknowledged assign after the fault, time without a leader, client timeouts apart from\n              error replies, leadership changes, and verifies nothing acknowledged was lost or duplicated and that\n              no deposed leader's write was accepted after a newer term began\n  \
partition   (--spawn, as root) cuts made under a stream of assigns on a 3-server cluster whose processes sit on\n              test hosts of their own (network namespaces), chosen with --cut, each held --cut-for: nats-server,\n              leader, registry, node; reports each cut's detection and the writes' stall, then checks the log,\n              Postgres history and every node's own agents\n  \
join        (--spawn) --nodes nodes holding --agents agents, then as many nodes again join with rebalancing on\n              (--rebalance-rate moves a minute, --rebalance-threshold): time to even, moves against the fewest\n              possible, and checks that no agent waited for a node\n  \
compaction  --changes assign+unassign changes on top of --agents kept (--spawn): log stream size, how soon a\n              coordinator started afterwards is ready (snapshot + tail), kill -9 of the leader to the next acknowledged assign"
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

    /// The failover scenario's fault, a third of the way into the run (see each
    /// value below; the nats-server ones need --nats-servers 3).
    #[arg(long, env = "SHOAL_LOADTEST_KILL", value_enum, default_value_t = Victim::Coordinator)]
    pub kill: Victim,

    /// With --kill coordinator-stop: how long the leader coordinator stays stopped
    /// (SIGSTOP) before it is continued (SIGCONT). Longer than the lease TTL (3 s)
    /// for a follower to take over while it is stopped.
    #[arg(long, env = "SHOAL_LOADTEST_PAUSE", value_parser = humantime::parse_duration, default_value = "5s")]
    pub pause: Duration,

    /// The partition scenario's cuts, in this order (comma-separated): nats-server
    /// (its routes cut, the balancer still attached to it), leader (the leader
    /// coordinator cut off with that server), registry, node (a real node).
    #[arg(long, env = "SHOAL_LOADTEST_CUT", value_enum, value_delimiter = ',', default_values_t = Cut::ALL)]
    pub cut: Vec<Cut>,

    /// How long each cut of the partition scenario lasts.
    #[arg(long, env = "SHOAL_LOADTEST_CUT_FOR", value_parser = humantime::parse_duration, default_value = "10s")]
    pub cut_for: Duration,

    /// With --spawn: the log level of the services started (error, warn, info,
    /// debug).
    #[arg(long, env = "SHOAL_LOADTEST_SERVICE_LOG_LEVEL", default_value = "warn")]
    pub service_log_level: String,

    /// With --spawn: copy the log of every service started into this directory at
    /// the end of the run (they are deleted with the private stack otherwise).
    #[arg(long, env = "SHOAL_LOADTEST_KEEP_LOGS")]
    pub keep_logs: Option<PathBuf>,

    /// Postgres URL of the coordinator's history database, for verification (ignored
    /// with --spawn).
    #[arg(long, env = "SHOAL_DATABASE_URL")]
    pub database_url: Option<String>,

    /// `discovery`: nodes that announce all at once after the one-by-one probes
    /// (0: none), each timed from its announce until the balancer selects it.
    #[arg(long, env = "SHOAL_LOADTEST_ANNOUNCE_STORM", default_value_t = 1_000)]
    pub announce_storm: usize,

    /// With --spawn: registry replicas to start (`heartbeats` scenario).
    #[arg(long, env = "SHOAL_LOADTEST_REGISTRIES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    pub registries: u16,

    /// With --spawn: heartbeat partitions shared among the registry replicas; above
    /// 1, the private nats-server maps heartbeats into them and each replica hears
    /// its share only. 1: every replica hears every heartbeat.
    #[arg(long, env = "SHOAL_HEARTBEAT_PARTITIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(shoal_protocol::partition::MAX_PARTITIONS)))]
    pub heartbeat_partitions: u32,

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

    /// Agents in the burst scenario; in the compaction scenario, agents kept assigned
    /// under the churn.
    #[arg(long, env = "SHOAL_LOADTEST_AGENTS", default_value_t = 1000)]
    pub agents: u64,

    /// Join scenario: the rebalance budget, in moves a minute (1 to 60000).
    #[arg(long, env = "SHOAL_LOADTEST_REBALANCE_RATE", default_value_t = 6000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub rebalance_rate: u32,

    /// Join scenario: the rebalance threshold, the agent-count spread (most minus
    /// fewest agents per node) the cluster is evened to.
    #[arg(long, env = "SHOAL_LOADTEST_REBALANCE_THRESHOLD", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rebalance_threshold: u32,

    /// Compaction scenario: changes to make (half assigns, half unassigns of the same
    /// agents) before a late replica starts.
    #[arg(long, env = "SHOAL_LOADTEST_CHANGES", default_value_t = 1_000_000)]
    pub changes: u64,

    /// Burst scenario: the balancing strategy, set cluster-wide through the
    /// balancer's strategy.set before the burst (round_robin, least_loaded,
    /// least_agents, random, weighted), or `all` for one burst per strategy, each on
    /// fresh agents (the previous burst's agents are unassigned first), with figures
    /// per strategy; the cluster's strategy is set back afterwards. Without it the
    /// burst uses the cluster's current strategy.
    #[arg(long, env = "SHOAL_LOADTEST_STRATEGY", value_parser = parse_strategies)]
    pub strategy: Option<Strategies>,

    /// What the simulated nodes report: `varied` (each node its own random walk of
    /// CPU and memory) or `equal` (every node CPU 30 %, memory 40 %, unchanging, so
    /// how evenly work spreads can be measured without the metrics tilting it).
    #[arg(long, env = "SHOAL_LOADTEST_NODE_METRICS", value_enum, default_value_t = NodeMetrics::Varied)]
    pub node_metrics: NodeMetrics,

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

    /// Exit with status 3 when a goal the report lists is missed (a failed
    /// verification exits 1). Off by default: one run on a noisy machine is not a
    /// verdict; compare medians of several.
    #[arg(long, env = "SHOAL_LOADTEST_CHECK_GOALS")]
    pub check_goals: bool,
}

/// `--strategy`: one strategy, or every one in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategies {
    One(Strategy),
    All,
}

impl Strategies {
    pub fn list(self) -> Vec<Strategy> {
        match self {
            Strategies::One(s) => vec![s],
            Strategies::All => Strategy::ALL.to_vec(),
        }
    }
}

/// `--strategy` names no strategy.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown strategy {0:?}: use round_robin, least_loaded, least_agents, random, weighted or all"
)]
pub struct UnknownStrategy(String);

fn parse_strategies(name: &str) -> Result<Strategies, UnknownStrategy> {
    match name {
        "all" => Ok(Strategies::All),
        _ => Strategy::parse(name)
            .map(Strategies::One)
            .ok_or_else(|| UnknownStrategy(name.to_string())),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NodeMetrics {
    /// Each simulated node random-walks its own CPU and memory.
    Varied,
    /// Every simulated node reports the same fixed CPU and memory.
    Equal,
}

impl NodeMetrics {
    pub fn sim(self) -> SimMetrics {
        match self {
            NodeMetrics::Varied => SimMetrics::Varied,
            NodeMetrics::Equal => SimMetrics::EQUAL,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeMetrics::Varied => "varied",
            NodeMetrics::Equal => "equal",
        }
    }
}

/// `--kill`: the failover scenario's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Victim {
    /// kill -9 of the coordinator holding the leader lease.
    Coordinator,
    /// SIGSTOP of the leader coordinator, SIGCONT after --pause; verifies that none
    /// of its writes was accepted once the new leader's term began.
    CoordinatorStop,
    /// SIGTERM of the leader coordinator (a graceful stop).
    CoordinatorTerm,
    /// `leader.promote` asks the leader to hand over to a follower; no signal.
    Promote,
    /// kill -9 of the nats-server leading the assignment log stream (needs
    /// --nats-servers 3).
    NatsServer,
    /// SIGTERM of the nats-server leading the assignment log stream (needs
    /// --nats-servers 3).
    NatsServerTerm,
    /// no fault: a run under full load that counts leadership changes (false
    /// takeovers), which should be 0.
    None,
}

impl Victim {
    /// Whether the fault is to a nats-server (and so needs a cluster).
    pub fn is_nats_server(self) -> bool {
        matches!(self, Victim::NatsServer | Victim::NatsServerTerm)
    }

    /// The value's name on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// `--cut`: a partition of the partition scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cut {
    /// A nats-server's routes cut while its clients (the balancer) stay attached:
    /// it is in the minority and they must leave it.
    NatsServer,
    /// The leader coordinator cut off from the NATS majority, with the server it
    /// is attached to.
    Leader,
    /// The registry cut off.
    Registry,
    /// A real node cut off from its servers.
    Node,
}

impl Cut {
    pub const ALL: [Cut; 4] = [Cut::NatsServer, Cut::Leader, Cut::Registry, Cut::Node];

    /// The value's name on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Assign,
    Burst,
    Select,
    Discovery,
    Heartbeats,
    Failover,
    Compaction,
    Partition,
    Join,
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
