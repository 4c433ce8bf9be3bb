//! The what-if replay: the assignment history, oldest first, run again through the
//! balancer's own selection ([`shoal_balancer::View`]) under other strategies, side
//! by side with what really happened. Pure: no I/O, the same history, nodes and seed
//! give the same report.
//!
//! Every row is taken as it was meant:
//! - an arrival (`assigned`): where the balancer chose, the replayed strategy
//!   chooses; a pinned agent goes to its node (an operator's choice) if the replay
//!   has it up, else the strategy chooses;
//! - a departure (`unassigned`): the agent leaves wherever the replay put it;
//! - a failure or a drain (reason `orphaned` / `drained`, see [`super::world`]): the
//!   node goes down or drains in every run at once, and a replay moves the agents
//!   *it* put there, by its strategy; the real run moves the ones the rows say;
//! - an operator's move (`migrated`, reason `operator`): to the named node when it
//!   was pinned, else to the strategy's pick among the other nodes.
//!
//! Agents the history shows only leaving a node (placed before the first row) start
//! on that node in every run. A row's request filters (service, labels, group
//! rules) are not in the history: a replay picks among all its nodes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use shoal_balancer::{Decay, Settings, View};
use shoal_protocol::{AssignmentAction, HistoryEntry, Strategy, move_reason};

use super::run::Run;
use super::spread::{Sample, Summary};
use super::world::{NodeChange, NodeSource, NodeState, World};

/// Differing decisions kept as examples, per strategy.
pub const EXAMPLES: usize = 3;

/// The seed of `random` and `weighted` unless one is given.
pub const DEFAULT_SEED: u64 = 1;

/// What a replay starts from.
pub struct Input<'a> {
    /// The history, oldest first.
    pub history: &'a [HistoryEntry],
    pub nodes: NodeSource,
    pub strategies: &'a [Strategy],
    pub seed: u64,
}

/// Why there is nothing to replay.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ReplayError {
    #[error("the history has no rows to replay")]
    EmptyHistory,
    #[error(
        "no nodes to replay on: the registry lists none now (--nodes-from-history takes the nodes the history names)"
    )]
    NoNodes,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// History rows replayed.
    pub rows: usize,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `registry` or `history`.
    pub node_source: &'static str,
    pub nodes: usize,
    /// Nodes the history names that the registry does not know (left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_nodes: Vec<String>,
    pub seed: u64,
    /// The strategies the balancer really used, by its decisions.
    pub strategies_used: BTreeMap<String, u64>,
    /// The real run first, then each replayed strategy.
    pub runs: Vec<RunReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// `real`, or the strategy's name.
    pub name: String,
    /// The balancer's decisions in the history (rows where it chose the node).
    pub decisions: u64,
    /// Of those, the ones where this run put the agent elsewhere (0 for `real`).
    pub differed: u64,
    /// Agents moved from one node to another.
    pub moves: u64,
    /// Agents waiting for a node at the end.
    pub waiting: usize,
    #[serde(flatten)]
    pub summary: Summary,
    pub examples: Vec<Difference>,
    /// The spread after every row (for the picture; not in the JSON).
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// A decision a replayed strategy would have made differently.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub at: DateTime<Utc>,
    pub agent_name: String,
    pub action: AssignmentAction,
    pub real: String,
    /// Where the replay has the agent; `None` while it waits for a node.
    pub replayed: Option<String>,
}

/// Replays `input`: the real run and one run per strategy.
pub fn replay(input: Input<'_>) -> Result<Report, ReplayError> {
    let (first, last) = match (input.history.first(), input.history.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(ReplayError::EmptyHistory),
    };
    let node_source = match input.nodes {
        NodeSource::Registry(_) => "registry",
        NodeSource::History => "history",
    };
    let (mut world, joined) = World::new(input.nodes, input.history);
    if node_source == "registry" && world.len() == 0 {
        return Err(ReplayError::NoNodes);
    }
    let settings = Settings {
        // Nothing is measured in a replay: every placement's cost counts in full.
        decay: Decay {
            hold: Duration::from_secs(100 * 365 * 86_400),
            fade: Duration::from_secs(1),
        },
        ..Settings::default()
    };
    let view = || View::with_seed(settings.clone(), input.seed);
    let mut runs: Vec<(Run, Tally)> = std::iter::once(None)
        .chain(input.strategies.iter().copied().map(Some))
        .map(|s| (Run::new(s, view()), Tally::default()))
        .collect();
    let start = Instant::now();
    let mut clock = Clock::new(start, first.at);
    for change in &joined {
        for (run, _) in &mut runs {
            apply_node_change(run, &world, change, start);
        }
    }
    let mut strategies_used = BTreeMap::new();
    for row in input.history {
        let now = clock.at(row.at);
        let chooser = balancer_strategy(row);
        if let Some(s) = chooser {
            *strategies_used.entry(s.to_string()).or_default() += 1;
        }
        // An agent first seen leaving a node was on it before the first row.
        if let Some(from) = row.previous_node_id.as_deref() {
            for (run, _) in &mut runs {
                if !run.knows(&row.agent_name) {
                    run.place(&world, &row.agent_name, from, now);
                }
            }
        }
        for change in world.observe(row) {
            for (run, _) in &mut runs {
                apply_node_change(run, &world, &change, now);
            }
        }
        for (run, tally) in &mut runs {
            match run.strategy {
                None => follow(run, &world, row, now),
                Some(_) => decide(run, &world, row, now),
            }
            if let (Some(_), Some(real)) = (chooser, row.node_id.as_deref()) {
                tally.decision(row, real, run.node_of(&row.agent_name));
            }
            run.sample(row.at);
        }
    }
    let load_known = world.load_known();
    Ok(Report {
        rows: input.history.len(),
        from: first.at,
        to: last.at,
        node_source,
        nodes: world.len(),
        unknown_nodes: world.unknown.iter().cloned().collect(),
        seed: input.seed,
        strategies_used,
        runs: runs
            .into_iter()
            .map(|(run, tally)| RunReport {
                name: run
                    .strategy
                    .map_or_else(|| "real".to_string(), |s| s.to_string()),
                decisions: tally.decisions,
                differed: tally.differed,
                moves: run.moves,
                waiting: run.waiting(),
                summary: Summary::of(&run.samples, load_known),
                examples: tally.examples,
                samples: run.samples,
            })
            .collect(),
    })
}

/// The strategy the balancer used for `row`, when it chose the node.
pub fn balancer_strategy(row: &HistoryEntry) -> Option<Strategy> {
    let name = row.candidates.as_ref()?["strategy"].as_str()?;
    Strategy::parse(name)
}

/// The real run: the agent goes where the row says.
fn follow(run: &mut Run, world: &World, row: &HistoryEntry, now: Instant) {
    match (row.action, row.node_id.as_deref()) {
        (_, Some(node)) => run.place(world, &row.agent_name, node, now),
        (AssignmentAction::Unassigned, None) => run.remove(world, &row.agent_name, now),
        (_, None) => run.wait(world, &row.agent_name, now),
    }
}

/// A replayed run: the agent goes where the strategy picks, wherever the balancer
/// chose.
fn decide(run: &mut Run, world: &World, row: &HistoryEntry, now: Instant) {
    let agent = row.agent_name.as_str();
    let pinned = row
        .node_id
        .as_deref()
        .filter(|n| row.candidates.is_none() && world.is_up(n));
    match row.action {
        AssignmentAction::Assigned if run.node_of(agent).is_none() => match pinned {
            Some(node) => run.place(world, agent, node, now),
            None => drop(run.select(world, agent, Vec::new(), now)),
        },
        AssignmentAction::Unassigned => run.remove(world, agent, now),
        AssignmentAction::Migrated if row.reason == move_reason::OPERATOR => {
            match (pinned, run.node_of(agent)) {
                (Some(node), _) => run.place(world, agent, node, now),
                (None, Some(current)) => {
                    let exclude = vec![current.to_string()];
                    drop(run.select(world, agent, exclude, now));
                }
                (None, None) => drop(run.select(world, agent, Vec::new(), now)),
            }
        }
        // Failures and drains: the node change moved this run's agents already; an
        // agent it still has waiting tries again.
        _ if run.node_of(agent).is_none() && run.knows(agent) => {
            drop(run.select(world, agent, Vec::new(), now));
        }
        _ => {}
    }
}

/// A node joined, went down, started draining or came back: every run's view
/// follows; a replayed run moves its agents off a node that cannot keep them, and
/// places its waiting agents when a node comes (back).
fn apply_node_change(run: &mut Run, world: &World, change: &NodeChange, now: Instant) {
    let id = match change {
        NodeChange::Joined(id) | NodeChange::Now(id, _) => id.as_str(),
    };
    run.node_changed(world, id, now);
    if run.strategy.is_none() {
        return;
    }
    match change {
        NodeChange::Now(_, NodeState::Down | NodeState::Draining) => {
            for agent in run.agents_on(id) {
                run.wait(world, &agent, now);
                drop(run.select(world, &agent, Vec::new(), now));
            }
        }
        NodeChange::Joined(_) | NodeChange::Now(_, NodeState::Up) => {
            for agent in run.waiting_agents() {
                drop(run.select(world, &agent, Vec::new(), now));
            }
        }
    }
}

/// Decisions and the ones that differed, per run.
#[derive(Default)]
struct Tally {
    decisions: u64,
    differed: u64,
    examples: Vec<Difference>,
}

impl Tally {
    fn decision(&mut self, row: &HistoryEntry, real: &str, replayed: Option<&str>) {
        self.decisions += 1;
        if replayed == Some(real) {
            return;
        }
        self.differed += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(Difference {
                at: row.at,
                agent_name: row.agent_name.clone(),
                action: row.action,
                real: real.to_string(),
                replayed: replayed.map(str::to_string),
            });
        }
    }
}

/// The views' clock: the history's times, from the first row, never going back
/// (leaders' clocks may differ a little).
struct Clock {
    start: Instant,
    first: DateTime<Utc>,
    last: Duration,
}

impl Clock {
    fn new(start: Instant, first: DateTime<Utc>) -> Clock {
        Clock {
            start,
            first,
            last: Duration::ZERO,
        }
    }

    fn at(&mut self, t: DateTime<Utc>) -> Instant {
        let since = (t - self.first).to_std().unwrap_or(Duration::ZERO);
        self.last = self.last.max(since);
        self.start + self.last
    }
}
