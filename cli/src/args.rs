//! The command line: `shoal`'s flags and commands, and the parsers that refuse a
//! bad value with the accepted ones.

use std::time::Duration;

use clap::{Parser, Subcommand};
use shoal_protocol::{AssignmentStatus, NodeRole, NodeStatus, Strategy};
use shoal_runtime::NatsArgs;

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "Operate a Shoal control plane over NATS"
)]
pub struct Cli {
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true, env = "SHOAL_JSON")]
    pub json: bool,

    /// How long to wait for each reply.
    #[arg(long, global = true, env = "SHOAL_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Whether --nats-url / SHOAL_NATS_URL was given rather than defaulted: `shoal up`
    /// then uses that NATS instead of starting its own.
    #[arg(skip)]
    pub nats_url_given: bool,

    /// Where `shoal up` keeps its data, logs and state. Unless given, the first
    /// `.shoal` directory in the current directory or above it (as git finds
    /// `.git`), else `./.shoal`.
    #[arg(long, global = true, env = "SHOAL_DIR", default_value = ".shoal")]
    pub dir: std::path::PathBuf,

    /// Whether --dir / SHOAL_DIR was given rather than defaulted.
    #[arg(skip)]
    pub dir_given: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the whole control plane locally (nats-server, Postgres, registry,
    /// balancer, two coordinators, N announcers) and keep it running until Ctrl-C.
    #[command(
        after_help = "Examples:\n  shoal up\n  shoal up --nodes 5\n  shoal up --nats-port 4333 --monitor-port 8333 --pg-port 55433 --http-port 8152"
    )]
    Up {
        /// Announcer processes (one per simulated machine).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Coordinators (two, so failover can be seen).
        #[arg(long, default_value_t = 2)]
        coordinators: usize,
        /// Use this Postgres instead of starting one.
        #[arg(long, env = "SHOAL_DATABASE_URL")]
        database_url: Option<String>,
        /// Port of the local nats-server.
        #[arg(long, default_value_t = 4222)]
        nats_port: u16,
        /// Monitoring port of the local nats-server.
        #[arg(long, default_value_t = 8222)]
        monitor_port: u16,
        /// Port of the local Postgres.
        #[arg(long, default_value_t = 55432)]
        pg_port: u16,
        /// Port of the HTTP gateway (REST API, dashboard, metrics) on 127.0.0.1.
        #[arg(long, default_value_t = 8151)]
        http_port: u16,
    },
    /// The processes `shoal up` runs: status, pid, health.
    Status,
    /// Stop one process of the running `shoal up` (a node, a coordinator, the
    /// registry, the balancer); it stays stopped until `shoal start`.
    #[command(
        after_help = "Examples:\n  shoal stop node-2          # its agents move once it is offline\n  shoal start node-2\n  shoal restart coordinator-1"
    )]
    Stop {
        /// The instance, as `shoal status` names it.
        #[arg(value_parser = parse_id)]
        instance: String,
    },
    /// Start again one process of the running `shoal up` that was stopped or
    /// exited; `shoal up` keeps it, and `shoal down` stops it with the rest.
    #[command(after_help = "Examples:\n  shoal start node-2\n  shoal status")]
    Start {
        /// The instance, as `shoal status` names it.
        #[arg(value_parser = parse_id)]
        instance: String,
    },
    /// Stop and start one process of the running `shoal up`.
    #[command(after_help = "Examples:\n  shoal restart coordinator-1\n  shoal leader")]
    Restart {
        /// The instance, as `shoal status` names it.
        #[arg(value_parser = parse_id)]
        instance: String,
    },
    /// Stop the control plane `shoal up` started.
    Down,
    /// Show the logs of one instance (e.g. `registry`, `coordinator-2`), a kind
    /// (`coordinator`, `announcer`), or all.
    #[command(
        after_help = "Examples:\n  shoal logs registry\n  shoal logs coordinator -n 200\n  shoal logs"
    )]
    Logs {
        service: Option<String>,
        /// Lines from the end of each log.
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
    },
    /// A live view of nodes, the leader and recent events (Ctrl-C to leave).
    #[command(after_help = "Examples:\n  shoal watch\n  shoal watch --refreshes 1 > snapshot.txt")]
    Watch {
        /// Redraw this many times, then exit (default: until Ctrl-C).
        #[arg(long)]
        refreshes: Option<u64>,
    },
    /// List nodes, optionally filtered.
    #[command(
        after_help = "Examples:\n  shoal nodes\n  shoal nodes --status offline\n  shoal nodes --label zone=eu-1 --json"
    )]
    Nodes {
        /// Only nodes with this role.
        #[arg(long, value_parser = choice(&NodeRole::ALL, NodeRole::as_str))]
        role: Option<NodeRole>,
        /// Only nodes offering this service.
        #[arg(long)]
        service: Option<String>,
        /// Only nodes in this state.
        #[arg(long, value_parser = choice(&NodeStatus::ALL, NodeStatus::as_str))]
        status: Option<NodeStatus>,
        /// `key=value` (or `key`).
        #[arg(long)]
        label: Option<String>,
    },
    /// Show one node.
    Node {
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Drain a node: its agents move off and it takes no new ones.
    #[command(
        after_help = "Examples:\n  shoal drain node-2\n  shoal assignments --node node-2   # until it is empty\n  shoal undrain node-2"
    )]
    Drain {
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// End a drain.
    Undrain {
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Cluster statistics (coordinator, registry, balancer).
    Stats,
    /// The current coordinator leader.
    Leader,
    /// Hand coordinator leadership to the named coordinator.
    #[command(
        after_help = "Examples:\n  shoal promote coordinator-2\n  shoal leader                 # coordinator-2, one term later"
    )]
    Promote {
        #[arg(value_parser = parse_id)]
        coordinator: String,
    },
    /// Assign an agent to a node (the balancer picks unless --node pins one).
    #[command(
        after_help = "Examples:\n  shoal assign agent-1\n  shoal assign agent-2 --node node-3\n  shoal assign agent-3 --service web --label zone=eu-1\n  shoal assign web-1 --group web --spread-by zone\n  shoal assign db-1 --group db --anti-affinity"
    )]
    Assign {
        #[arg(value_parser = parse_id)]
        agent: String,
        #[arg(long)]
        service: Option<String>,
        /// `key=value`; repeat for several. The node must carry all of them.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Pin to this node.
        #[arg(long, value_parser = parse_id)]
        node: Option<String>,
        /// The agent's group, which --spread-by and --anti-affinity place it within.
        #[arg(long, value_parser = parse_id)]
        group: Option<String>,
        /// A node label key (e.g. zone): spread the group's agents evenly over its
        /// values. Nodes without the label are not eligible.
        #[arg(long, requires = "group")]
        spread_by: Option<String>,
        /// No two agents of the group on one node.
        #[arg(long, requires = "group")]
        anti_affinity: bool,
    },
    /// Remove an agent's assignment.
    Unassign {
        #[arg(value_parser = parse_id)]
        agent: String,
    },
    /// Move a placed agent: to the named node, or (without --node) wherever the
    /// balancer picks among the other nodes. Recorded as `migrated` by `operator`.
    #[command(after_help = "Examples:\n  shoal move agent-1 --node node-3\n  shoal move agent-1")]
    Move {
        #[arg(value_parser = parse_id)]
        agent: String,
        /// Move it to this node.
        #[arg(long, value_parser = parse_id)]
        node: Option<String>,
    },
    /// Current assignments; `--status orphaned` (or `migrating`) lists the agents
    /// waiting for a node.
    #[command(
        after_help = "Examples:\n  shoal assignments\n  shoal assignments --node node-1\n  shoal assignments --status orphaned\n  shoal assignments --group web"
    )]
    Assignments {
        #[arg(long, value_parser = parse_id)]
        node: Option<String>,
        /// Only agents of this group.
        #[arg(long, value_parser = parse_id)]
        group: Option<String>,
        /// Only assignments in this state.
        #[arg(long, value_parser = choice(&AssignmentStatus::ALL, AssignmentStatus::as_str))]
        status: Option<AssignmentStatus>,
    },
    /// Assignment history (from Postgres), newest first.
    #[command(
        after_help = "Examples:\n  shoal history --agent agent-1\n  shoal history --node node-2 --since 10m\n  shoal history --since 2026-02-10T08:00:00Z --limit 200"
    )]
    History {
        #[arg(long, value_parser = parse_id)]
        agent: Option<String>,
        #[arg(long, value_parser = parse_id)]
        node: Option<String>,
        /// Only rows at or after this time (RFC 3339, e.g. 2026-02-10T08:00:00Z) or
        /// this long ago (e.g. 10m, 2h).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// What if the balancer had used another strategy? Replays the assignment
    /// history (arrivals, departures, failures, drains and moves, in order) through
    /// the balancer's own selection under the strategy, in process, and compares it
    /// with what really happened: spread of agents over time, moves, and the
    /// decisions that would have differed.
    #[command(
        after_help = "Examples:\n  shoal replay --strategy least_agents\n  shoal replay --strategy all --since 2h\n  shoal replay --strategy all --since 2026-02-10T08:00:00Z --until 2026-02-10T09:00:00Z\n  shoal replay --strategy weighted --seed 7 --nodes-from-history\n  shoal replay --strategy all --svg spread.svg\n  shoal --json replay --strategy random"
    )]
    Replay(crate::replay::ReplayArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  shoal completions bash > ~/.local/share/bash-completion/completions/shoal\n  shoal completions zsh > ~/.zfunc/_shoal\n  shoal completions fish > ~/.config/fish/completions/shoal.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (shoal.1, and shoal-<command>.1 for each command) into a
    /// directory.
    #[command(after_help = "Examples:\n  shoal man ~/.local/share/man/man1\n  man shoal-assign")]
    Man { dir: std::path::PathBuf },
    /// Send one NATS request to any Shoal subject and print the reply, as
    /// `nats req` does; an error envelope fails the command. An instance's metrics
    /// subject (`<prefix>.<service>.instance.<id>.metrics`) prints its OpenMetrics
    /// text.
    #[command(
        after_help = "Examples:\n  shoal request shoal.registry.nodes.list '{\"status\":\"online\"}'\n  shoal request shoal.registry.stats\n  shoal request shoal.coordinator.assign '{\"agent_name\":\"a1\",\"service\":\"wrapper\"}'\n  shoal request shoal.coordinator.instance.coordinator-1.metrics"
    )]
    Request {
        /// The subject, e.g. shoal.registry.stats (`shoal services` and
        /// schemas/asyncapi.yaml list them).
        #[arg(value_parser = parse_subject)]
        subject: String,
        /// The request body, JSON.
        #[arg(value_parser = parse_json, default_value = "{}")]
        body: serde_json::Value,
    },
    /// Every running Shoal service instance, as NATS micro's `$SRV.PING` finds
    /// them (as `nats micro ls` lists them).
    #[command(after_help = "Examples:\n  shoal services\n  shoal --json services")]
    Services,
    /// Show the balancing strategy, or `strategy set <name>` to change it.
    #[command(after_help = "Examples:\n  shoal strategy\n  shoal strategy set least_agents")]
    Strategy {
        #[command(subcommand)]
        action: Option<StrategyAction>,
    },
    /// Even out agents across nodes: show the settings and spread, turn rebalancing
    /// on or off, or run a round now (`--dry-run` prints the moves it would make).
    /// Moves respect services, labels, capacity, pins and group rules, and are
    /// recorded as `rebalanced`.
    #[command(
        after_help = "Examples:\n  shoal rebalance\n  shoal rebalance enable --max-moves-per-minute 600 --threshold 2\n  shoal rebalance now --dry-run\n  shoal rebalance disable"
    )]
    Rebalance {
        #[command(subcommand)]
        action: Option<crate::rebalance::RebalanceAction>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StrategyAction {
    /// Switch every balancer to this strategy.
    Set {
        #[arg(value_parser = choice(&Strategy::ALL, Strategy::as_str))]
        name: Strategy,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 500ms, 3s or 1m ({e})"))
}

pub(crate) fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 10m"))?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago).map_err(|e| e.to_string())?)
}

/// A node id, agent name or coordinator id, by the protocol's one id rule.
fn parse_id(s: &str) -> Result<String, String> {
    match shoal_protocol::validate::id_problem(s) {
        None => Ok(s.to_string()),
        Some(problem) => Err(format!("{s:?} {problem}")),
    }
}

fn parse_subject(s: &str) -> Result<String, String> {
    let bad = s.is_empty()
        || s.split('.').any(|token| {
            token.is_empty()
                || token
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>')
        });
    if bad {
        Err(format!(
            "{s:?} is not a subject to send to: dot-separated tokens, no spaces or wildcards (e.g. shoal.registry.stats)"
        ))
    } else {
        Ok(s.to_string())
    }
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s)
        .map_err(|e| format!("not JSON ({e}); quote it for the shell: '{{\"key\":\"value\"}}'"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {s:?} must be key=value"))
}

fn one_of<T: Copy>(s: &str, all: &[T], name: impl Fn(T) -> &'static str) -> Result<T, String> {
    all.iter().copied().find(|v| name(*v) == s).ok_or_else(|| {
        let valid: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        format!("{s:?} is not one of: {}", valid.join(", "))
    })
}

/// A flag that takes one of `all`, by name: `--help` lists the names and a wrong
/// one is refused with them.
fn choice<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(all.iter().map(|v| name(*v)))
        .try_map(move |s: String| one_of(&s, all, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given;

    #[test]
    fn flags_parse_with_clear_errors() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").unwrap_err().contains("500ms"));
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert!(parse_label("zone").is_err());
        assert_eq!(
            one_of("weighted", &Strategy::ALL, Strategy::as_str).unwrap(),
            Strategy::Weighted
        );
        assert!(
            one_of("fast", &Strategy::ALL, Strategy::as_str)
                .unwrap_err()
                .contains("round_robin")
        );
        assert!(parse_since("10m").unwrap() < chrono::Utc::now());
        assert_eq!(parse_id("node-1").unwrap(), "node-1");
        let e = parse_id("node@1").unwrap_err();
        assert!(e.contains("letters, digits, '-' and '_'"), "{e}");
        use clap::Parser;
        let refused = Cli::try_parse_from(["shoal", "assign", "a/b"]).unwrap_err();
        assert!(refused.to_string().contains("letters, digits"), "{refused}");
    }

    #[test]
    fn a_nats_url_given_before_or_after_up_means_use_it() {
        use clap::CommandFactory;
        let given_in = |args: &[&str]| {
            given(
                &Cli::command().try_get_matches_from(args).unwrap(),
                "nats_url",
            )
        };
        if std::env::var_os("SHOAL_NATS_URL").is_none() {
            assert!(!given_in(&["shoal", "up"]));
        }
        assert!(given_in(&[
            "shoal",
            "up",
            "--nats-url",
            "nats://127.0.0.1:14999"
        ]));
        assert!(given_in(&[
            "shoal",
            "--nats-url",
            "nats://127.0.0.1:14999",
            "up"
        ]));
    }

    #[test]
    fn help_mentions_every_operator_command() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for cmd in [
            "nodes",
            "node",
            "drain",
            "undrain",
            "stats",
            "leader",
            "promote",
            "assign",
            "unassign",
            "move",
            "assignments",
            "history",
            "strategy",
            "rebalance",
        ] {
            assert!(help.contains(cmd), "{cmd} missing from --help");
        }
    }
}
