//! The nodes a replay runs on and, change by change, whether each is up, down or
//! draining, as the history shows it. The real run and every replayed strategy see
//! the same nodes come and go; only where agents go differs.
//!
//! What the history says of nodes: a row moving agents off a node because it went
//! offline (reason `orphaned`) takes the node down; one moving them off because it
//! drains (reason `drained`) starts its drain; a row placing an agent on a node
//! shows it up again.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use shoal_protocol::{HistoryEntry, Node, NodeStatus, move_reason};

/// Agent slots of a node known only from the history, which does not say.
pub const HISTORY_NODE_CAPACITY: u32 = 1_000;

/// Where the replay's nodes come from.
#[derive(Clone, Debug)]
pub enum NodeSource {
    /// The registry's nodes now: those not offline, and offline ones the history
    /// names (they may have failed in it). Present from the start.
    Registry(Vec<Node>),
    /// The nodes the history names, each present from the first row naming it, with
    /// [`HISTORY_NODE_CAPACITY`] slots.
    History,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Down,
    Draining,
}

/// What happened to a node, in the order the runs must follow.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeChange {
    Joined(String),
    Now(String, NodeState),
}

pub struct World {
    records: HashMap<String, Node>,
    states: HashMap<String, NodeState>,
    from_history: bool,
    /// Nodes the history names that the registry does not know: left out.
    pub unknown: BTreeSet<String>,
    /// The time written into records made from the history (never shown).
    epoch: DateTime<Utc>,
}

impl World {
    /// The world before the first row of `history`, and the nodes present from the
    /// start (in id order, so every run indexes them alike).
    pub fn new(source: NodeSource, history: &[HistoryEntry]) -> (World, Vec<NodeChange>) {
        let epoch = history.first().map_or_else(Utc::now, |h| h.at);
        let mut world = World {
            records: HashMap::new(),
            states: HashMap::new(),
            from_history: matches!(source, NodeSource::History),
            unknown: BTreeSet::new(),
            epoch,
        };
        let mut joined = Vec::new();
        if let NodeSource::Registry(nodes) = source {
            let named: BTreeSet<&str> = history.iter().flat_map(named_nodes).collect();
            let mut nodes: Vec<Node> = nodes
                .into_iter()
                .filter(|n| n.status != NodeStatus::Offline || named.contains(n.id.as_str()))
                .collect();
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            for node in nodes {
                joined.push(NodeChange::Joined(node.id.clone()));
                world.join(idle(node));
            }
        }
        (world, joined)
    }

    /// Every node present (in any state).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn state(&self, id: &str) -> Option<NodeState> {
        self.states.get(id).copied()
    }

    /// Whether the node can take agents: present and up.
    pub fn is_up(&self, id: &str) -> bool {
        self.state(id) == Some(NodeState::Up)
    }

    /// Whether loads can be estimated: the nodes' capacities are known.
    pub fn load_known(&self) -> bool {
        !self.from_history
    }

    /// The node's record as the balancer's view should hold it now.
    pub fn record(&self, id: &str) -> Option<Node> {
        let mut node = self.records.get(id)?.clone();
        let state = self.state(id)?;
        node.status = match state {
            NodeState::Down => NodeStatus::Offline,
            NodeState::Up | NodeState::Draining => NodeStatus::Online,
        };
        node.draining = state == NodeState::Draining;
        Some(node)
    }

    /// What `row` shows of the nodes: nodes it names for the first time (from the
    /// history), and nodes going down, draining or coming back.
    pub fn observe(&mut self, row: &HistoryEntry) -> Vec<NodeChange> {
        let mut changes = Vec::new();
        for id in named_nodes(row) {
            if self.records.contains_key(id) {
                continue;
            }
            if self.from_history {
                let node = history_node(id, self.epoch);
                self.join(node);
                changes.push(NodeChange::Joined(id.to_string()));
            } else {
                self.unknown.insert(id.to_string());
            }
        }
        if let Some(to) = row.node_id.as_deref()
            && matches!(self.state(to), Some(NodeState::Down | NodeState::Draining))
        {
            changes.push(self.set(to, NodeState::Up));
        }
        let off = match row.reason.as_str() {
            move_reason::ORPHANED => Some(NodeState::Down),
            move_reason::DRAINED => Some(NodeState::Draining),
            _ => None,
        };
        if let (Some(off), Some(from)) = (off, row.previous_node_id.as_deref())
            && row.node_id.as_deref() != Some(from)
            && let Some(state) = self.state(from)
            && state != off
            && state != NodeState::Down
        {
            changes.push(self.set(from, off));
        }
        changes
    }

    fn join(&mut self, node: Node) {
        self.states.insert(node.id.clone(), NodeState::Up);
        self.records.insert(node.id.clone(), node);
    }

    fn set(&mut self, id: &str, state: NodeState) -> NodeChange {
        self.states.insert(id.to_string(), state);
        NodeChange::Now(id.to_string(), state)
    }
}

/// The nodes a row names: where it put the agent, where it took it from, and the
/// balancer's candidates.
pub fn named_nodes(row: &HistoryEntry) -> impl Iterator<Item = &str> {
    let candidates = row
        .candidates
        .as_ref()
        .and_then(|c| c["candidates"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c["node_id"].as_str());
    row.node_id
        .as_deref()
        .into_iter()
        .chain(row.previous_node_id.as_deref())
        .chain(candidates)
}

/// A node as the replay counts it: measured idle, running nothing, so that its
/// estimated load is what the replayed placements put on it.
fn idle(mut node: Node) -> Node {
    node.status = NodeStatus::Online;
    node.healthy = true;
    node.draining = false;
    node.active_agents = 0;
    node.cpu_usage = 0.0;
    node.memory_usage = 0.0;
    node.disk_usage = 0.0;
    node.load_average = 0.0;
    node.load = 0.0;
    node.capacity = 1.0;
    // Measured (the view ranks a node never measured as busy).
    node.uptime_s = node.uptime_s.max(1);
    node
}

/// A node the history names, as a record of its own.
fn history_node(id: &str, at: DateTime<Utc>) -> Node {
    idle(Node {
        hostname: id.to_string(),
        max_agents: HISTORY_NODE_CAPACITY,
        ..Node::blank(id, at)
    })
}
