//! One node in a replica's view: its record with live metrics, the agents counted
//! against it, the placements its measurements do not show yet, and the keys the
//! pools index it under.

use std::time::Instant;

use shoal_protocol::{Node, NodeStatus, Resources};

use crate::estimate::{Decay, Observed, Pending, load_of};
use crate::pool::Keys;
use crate::score::{effective_agents, free_slots, load_score};

pub(crate) struct Slot {
    pub node: Node,
    /// When the last heartbeat arrived (local clock).
    pub heartbeat_at: Option<Instant>,
    /// Agents the coordinator has placed here.
    pub assigned: u32,
    /// Placements (this replica's unconfirmed picks included) whose cost the
    /// measurements do not show yet.
    pub pending: Pending,
    /// What the measurements say the node's agents use.
    pub observed: Observed,
    /// Whether any metrics have been measured on the node (a heartbeat, or a record
    /// carrying a heartbeat's metrics). The record of a node that just announced has
    /// none: its zeros are not an idle node.
    pub has_metrics: bool,
    /// The keys the pools hold this node under; `None` while not eligible.
    pub keys: Option<Keys>,
    pub pools: Vec<usize>,
}

impl Slot {
    pub(crate) fn new(node: Node, assigned: u32, pools: Vec<usize>) -> Slot {
        Slot {
            has_metrics: record_has_metrics(&node),
            node,
            heartbeat_at: None,
            assigned,
            pending: Pending::default(),
            observed: Observed::default(),
            keys: None,
            pools,
        }
    }

    pub fn agents(&self) -> u32 {
        effective_agents(self.node.active_agents, self.assigned, self.pending.picks())
    }

    /// Measured load plus the cost of the placements not measured yet. A node
    /// never measured counts as busy (CPU and memory at 100 %), as garbage in does:
    /// ranking its empty record as idle would send a burst to it.
    pub fn estimated_load(&self) -> f64 {
        let n = &self.node;
        let (cpu, memory) = if self.has_metrics {
            (n.cpu_usage, n.memory_usage)
        } else {
            (100.0, 100.0)
        };
        load_score(cpu, memory, self.agents(), n.max_agents) + load_of(self.pending.total())
    }

    /// What one more agent would use here: its request, or the node's observed
    /// per-agent average, at least `floor`.
    pub fn cost(&self, requested: Option<Resources>, floor: Resources) -> Resources {
        requested.unwrap_or_else(|| self.observed.cost(floor))
    }

    /// A measurement arrived at `now` (the node's metrics are already updated).
    pub(crate) fn measured(&mut self, now: Instant, decay: &Decay) {
        self.has_metrics = true;
        self.pending.measured(now, decay);
        let usage = Resources {
            cpu: self.node.cpu_usage,
            memory: self.node.memory_usage,
        };
        self.observed.learn(
            usage,
            self.node.active_agents,
            self.assigned,
            self.pending.is_empty(),
        );
    }

    /// Online, not draining and not full: the only nodes ever picked.
    pub(crate) fn eligible_keys(&self) -> Option<Keys> {
        let n = &self.node;
        if n.status != NodeStatus::Online || n.draining {
            return None;
        }
        let agents = self.agents();
        (agents < n.max_agents).then(|| Keys {
            agents,
            // Never negative: the bit patterns order like the values.
            load_bits: self.estimated_load().max(0.0).to_bits(),
            free: free_slots(agents, n.max_agents),
        })
    }

    /// The node as this replica sees it now: live metrics and effective agents.
    pub fn live_node(&self) -> Node {
        let mut node = self.node.clone();
        let agents = self.agents();
        node.active_agents = agents;
        node.capacity = if node.max_agents == 0 {
            0.0
        } else {
            f64::from(free_slots(agents, node.max_agents)) / f64::from(node.max_agents)
        };
        node.load = self.estimated_load();
        node
    }
}

/// Whether a membership record carries measured metrics: the registry writes a
/// heartbeat's metrics (uptime included) on it; a record made from an announce or a
/// manual registration has none.
pub(crate) fn record_has_metrics(node: &Node) -> bool {
    node.uptime_s > 0 || node.cpu_usage > 0.0 || node.memory_usage > 0.0
}
