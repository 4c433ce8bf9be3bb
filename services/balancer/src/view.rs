//! The balancer's view of the cluster, as a plain struct with pure methods:
//! membership records, live metrics from heartbeats, the coordinator's placements,
//! this replica's own in-flight picks, and the per-pool indexes the strategies use.
//! The service feeds it; nothing here does I/O, so it is unit-tested directly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_protocol::{
    AssignmentAction, AssignmentEvent, BalancerStats, Heartbeat, Node, NodeStatus, Strategy,
};

use crate::pool::{Keys, Pool};
use crate::score::{effective_agents, free_slots, load_score};

/// How long a node's heartbeat metrics win over the metrics in its membership record
/// (written every ~10 s): a few heartbeat intervals.
pub const HEARTBEAT_FRESH: Duration = Duration::from_secs(3);

/// Tunables of a view.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The strategy used when a request names none, until the cluster setting loads.
    pub strategy: Strategy,
    /// How long a pick counts against its node while no assignment event confirms it.
    pub pick_ttl: Duration,
    /// Longest candidate list in a select reply.
    pub max_candidates: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            strategy: Strategy::default(),
            pick_ttl: Duration::from_secs(5),
            max_candidates: 10,
        }
    }
}

pub(crate) struct Slot {
    pub node: Node,
    /// When the last heartbeat arrived (local clock).
    pub heartbeat_at: Option<Instant>,
    /// Agents the coordinator has placed here.
    pub assigned: u32,
    /// Expiry times of this replica's unconfirmed picks, oldest first.
    pub in_flight: VecDeque<Instant>,
    /// The keys the pools hold this node under; `None` while not eligible.
    pub keys: Option<Keys>,
    pub pools: Vec<usize>,
}

impl Slot {
    pub fn agents(&self) -> u32 {
        effective_agents(self.node.active_agents, self.assigned, self.in_flight.len())
    }

    /// Online, not draining and not full: the only nodes ever picked.
    fn eligible_keys(&self) -> Option<Keys> {
        let n = &self.node;
        if n.status != NodeStatus::Online || n.draining {
            return None;
        }
        let agents = self.agents();
        (agents < n.max_agents).then(|| Keys {
            agents,
            load_bits: load_score(n.cpu_usage, n.memory_usage, agents, n.max_agents).to_bits(),
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
        node.load = load_score(node.cpu_usage, node.memory_usage, agents, node.max_agents);
        node
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub selections: u64,
    pub by_strategy: BTreeMap<String, u64>,
    pub no_capacity: u64,
}

pub struct View {
    pub(crate) settings: Settings,
    pub(crate) slots: Vec<Option<Slot>>,
    /// Bumped when a slot is freed, so stale expiry entries are recognised.
    generations: Vec<u32>,
    free: Vec<usize>,
    pub(crate) by_id: HashMap<String, usize>,
    /// Pool 0 holds every node; the others one service each.
    pub(crate) pools: Vec<Pool>,
    pool_of_service: HashMap<String, usize>,
    /// agent → node, from the coordinator's assignment events.
    assignments: HashMap<String, String>,
    /// node → agents placed there by the coordinator.
    assigned: HashMap<String, u32>,
    /// (expiry, slot, generation) of every pick, in expiry order (one TTL for all).
    expiries: VecDeque<(Instant, usize, u32)>,
    pub(crate) rng: StdRng,
    pub(crate) counters: Counters,
}

impl View {
    pub fn new(settings: Settings) -> View {
        View::with_rng(settings, StdRng::from_os_rng())
    }

    /// A view whose random strategies are reproducible (tests, benchmarks).
    pub fn with_seed(settings: Settings, seed: u64) -> View {
        View::with_rng(settings, StdRng::seed_from_u64(seed))
    }

    fn with_rng(settings: Settings, rng: StdRng) -> View {
        View {
            settings,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            pools: vec![Pool::new(0)],
            pool_of_service: HashMap::new(),
            assignments: HashMap::new(),
            assigned: HashMap::new(),
            expiries: VecDeque::new(),
            rng,
            counters: Counters::default(),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.settings.strategy
    }

    /// Returns whether the strategy changed.
    pub fn set_strategy(&mut self, strategy: Strategy) -> bool {
        std::mem::replace(&mut self.settings.strategy, strategy) != strategy
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Nodes that can take work now.
    pub fn eligible(&self) -> usize {
        self.pools[0].len()
    }

    pub fn node_ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// A node as this replica sees it (live metrics, effective agents).
    pub fn node(&self, id: &str) -> Option<Node> {
        self.by_id.get(id).map(|&i| self.slot(i).live_node())
    }

    pub fn stats(&self) -> BalancerStats {
        BalancerStats {
            strategy: self.settings.strategy,
            selections: self.counters.selections,
            selections_by_strategy: self.counters.by_strategy.clone(),
            no_capacity: self.counters.no_capacity,
            round_robin_index: self.pools[0].cursor as u64,
            nodes: self.by_id.len(),
        }
    }

    pub(crate) fn slot(&self, i: usize) -> &Slot {
        self.slots[i].as_ref().expect("indexed slot is occupied")
    }

    /// Adds or replaces a node from its membership record.
    pub fn upsert(&mut self, mut node: Node, now: Instant) {
        let pools = self.pools_for(&node.services);
        let Some(&i) = self.by_id.get(&node.id) else {
            let slot = Slot {
                assigned: self.assigned.get(&node.id).copied().unwrap_or(0),
                node,
                heartbeat_at: None,
                in_flight: VecDeque::new(),
                keys: None,
                pools,
            };
            let i = self.allocate(slot);
            self.reindex(i);
            return;
        };
        let slot = self.slots[i].as_mut().expect("known node has a slot");
        if slot
            .heartbeat_at
            .is_some_and(|at| now.saturating_duration_since(at) < HEARTBEAT_FRESH)
        {
            // The record's metrics are up to ~10 s old; the last heartbeat is fresher.
            let live = &slot.node;
            node.cpu_usage = live.cpu_usage;
            node.memory_usage = live.memory_usage;
            node.disk_usage = live.disk_usage;
            node.load_average = live.load_average;
            node.active_agents = live.active_agents;
            node.uptime_s = live.uptime_s;
            node.uptime = live.uptime.clone();
        }
        if slot.pools != pools {
            self.unindex(i);
            self.slots[i].as_mut().expect("slot").pools = pools;
        }
        self.slots[i].as_mut().expect("slot").node = node;
        self.reindex(i);
    }

    /// Forgets a node (its membership record was deleted). Returns whether it was known.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.by_id.remove(id) else {
            return false;
        };
        self.unindex(i);
        self.slots[i] = None;
        self.generations[i] = self.generations[i].wrapping_add(1);
        self.free.push(i);
        true
    }

    /// Live metrics from a node's heartbeat; heartbeats of unknown nodes are ignored
    /// (membership comes from the registry's records only).
    pub fn apply_heartbeat(&mut self, hb: &Heartbeat, now: Instant) -> bool {
        let Some(&i) = self.by_id.get(&hb.id) else {
            return false;
        };
        let slot = self.slots[i].as_mut().expect("slot");
        slot.heartbeat_at = Some(now);
        slot.node.set_metrics(&hb.into());
        self.reindex(i);
        true
    }

    /// Follows the coordinator's placements. A placement on a node also confirms the
    /// oldest of this replica's in-flight picks there: from now on the coordinator's
    /// count carries it.
    pub fn apply_assignment(&mut self, ev: &AssignmentEvent) {
        match ev.event {
            AssignmentAction::Assigned
            | AssignmentAction::Reassigned
            | AssignmentAction::Migrated => {
                if let Some(node_id) = &ev.node_id {
                    self.place(&ev.agent_name, Some(node_id));
                    self.confirm_pick(node_id);
                }
            }
            AssignmentAction::Unassigned | AssignmentAction::Orphaned => {
                self.place(&ev.agent_name, None)
            }
        }
    }

    /// Seeds placements from the coordinator's current state, for agents no event has
    /// mentioned yet (events are newer than any snapshot).
    pub fn load_assignments<'a>(
        &mut self,
        placements: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        for (agent, node) in placements {
            if !self.assignments.contains_key(agent) {
                self.place(agent, Some(node));
            }
        }
    }

    fn place(&mut self, agent: &str, node: Option<&str>) {
        let old = match node {
            Some(n) => self.assignments.insert(agent.to_string(), n.to_string()),
            None => self.assignments.remove(agent),
        };
        if old.as_deref() == node {
            return;
        }
        if let Some(o) = old {
            if let Some(count) = self.assigned.get_mut(&o) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.assigned.remove(&o);
                }
            }
            self.refresh_assigned(&o);
        }
        if let Some(n) = node {
            *self.assigned.entry(n.to_string()).or_default() += 1;
            self.refresh_assigned(n);
        }
    }

    fn refresh_assigned(&mut self, node_id: &str) {
        if let Some(&i) = self.by_id.get(node_id) {
            self.slots[i].as_mut().expect("slot").assigned =
                self.assigned.get(node_id).copied().unwrap_or(0);
            self.reindex(i);
        }
    }

    fn confirm_pick(&mut self, node_id: &str) {
        if let Some(&i) = self.by_id.get(node_id)
            && self.slots[i]
                .as_mut()
                .expect("slot")
                .in_flight
                .pop_front()
                .is_some()
        {
            self.reindex(i);
        }
    }

    /// Counts a pick against its node until it is confirmed or expires.
    pub(crate) fn record_pick(&mut self, i: usize, now: Instant) {
        if self.settings.pick_ttl.is_zero() {
            return;
        }
        let expiry = now + self.settings.pick_ttl;
        self.slots[i]
            .as_mut()
            .expect("slot")
            .in_flight
            .push_back(expiry);
        self.expiries.push_back((expiry, i, self.generations[i]));
        self.reindex(i);
    }

    /// Drops picks older than the pick TTL.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(expiry, i, generation)) = self.expiries.front() {
            if expiry > now {
                break;
            }
            self.expiries.pop_front();
            if self.generations[i] != generation {
                continue;
            }
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            // A confirmed pick already left the queue; then the front is a later one.
            if slot.in_flight.front().is_some_and(|&t| t <= now) {
                slot.in_flight.pop_front();
                self.reindex(i);
            }
        }
    }

    fn pools_for(&mut self, services: &[String]) -> Vec<usize> {
        let mut pools = vec![0];
        for s in services {
            let p = match self.pool_of_service.get(s) {
                Some(&p) => p,
                None => {
                    self.pools.push(Pool::new(self.slots.len()));
                    let p = self.pools.len() - 1;
                    self.pool_of_service.insert(s.clone(), p);
                    p
                }
            };
            if !pools.contains(&p) {
                pools.push(p);
            }
        }
        pools.sort_unstable();
        pools
    }

    pub(crate) fn pool_of(&self, service: Option<&str>) -> Option<usize> {
        match service {
            None => Some(0),
            Some(s) => self.pool_of_service.get(s).copied(),
        }
    }

    fn allocate(&mut self, slot: Slot) -> usize {
        let id = slot.node.id.clone();
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.generations.push(0);
                for pool in &mut self.pools {
                    while pool.weights.len() < self.slots.len() {
                        pool.weights.push();
                    }
                }
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, i);
        i
    }

    /// Brings the pools in line with the node's current state.
    pub(crate) fn reindex(&mut self, i: usize) {
        let slot = self.slots[i].as_mut().expect("slot");
        let new = slot.eligible_keys();
        if new == slot.keys {
            return;
        }
        let old = std::mem::replace(&mut slot.keys, new);
        for &p in &slot.pools {
            self.pools[p].update(i, &slot.node.id, old.as_ref(), new.as_ref());
        }
    }

    fn unindex(&mut self, i: usize) {
        let slot = self.slots[i].as_mut().expect("slot");
        if let Some(old) = slot.keys.take() {
            for &p in &slot.pools {
                self.pools[p].update(i, &slot.node.id, Some(&old), None);
            }
        }
    }
}
