//! The balancer's view of the cluster, as a plain struct with pure methods:
//! membership records, live metrics from heartbeats, the coordinator's placements,
//! this replica's own in-flight picks, each node's estimated load ([`crate::estimate`])
//! and the per-pool indexes the strategies use. The service feeds it; nothing here
//! does I/O and every method takes the time, so it is unit-tested directly.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_protocol::{
    AssignmentAction, AssignmentEvent, BalancerStats, Heartbeat, Node, NodeMetrics, Resources,
    Strategy,
};

use crate::counters::Counters;
use crate::estimate::Decay;
use crate::orders::Order;
use crate::pool::Pool;
use crate::slot::{Slot, record_has_metrics};

/// How long a node's heartbeat metrics win over the metrics in its membership record
/// (written every ~10 s): a few heartbeat intervals.
pub const HEARTBEAT_FRESH: Duration = Duration::from_secs(3);

/// Heartbeats of unknown nodes kept before stale ones are dropped.
const EARLY_LIMIT: usize = 1024;

/// Tunables of a view.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The strategy used when a request names none, until the cluster setting loads.
    pub strategy: Strategy,
    /// How long a pick counts against its node while no assignment event confirms it.
    pub pick_ttl: Duration,
    /// Longest candidate list in a select reply.
    pub max_candidates: usize,
    /// What an agent without a resource request is assumed to use, at least.
    pub agent_cost: Resources,
    /// How a placement's cost fades into the measured load.
    pub decay: Decay,
}

/// The default cost of an agent without a resource request: 2.5 % of CPU and of
/// memory, about what kube-scheduler assumes for a pod without requests (100
/// millicores, 200 MiB) on a node of 4 cores and 8 GiB.
pub const DEFAULT_AGENT_COST: Resources = Resources {
    cpu: 2.5,
    memory: 2.5,
};

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            strategy: Strategy::default(),
            pick_ttl: Duration::from_secs(5),
            max_candidates: 10,
            agent_cost: DEFAULT_AGENT_COST,
            decay: Decay::default(),
        }
    }
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
    /// The latest heartbeat of nodes whose record has not arrived yet.
    early: HashMap<String, (NodeMetrics, Instant)>,
    /// Size of `early` at which stale entries are dropped.
    early_limit: usize,
    pub(crate) rng: StdRng,
    pub(crate) counters: Counters,
    /// When a request last read each [`Order`] (the cluster strategy's needs none).
    pub(crate) order_read_at: [Option<Instant>; Order::ALL.len()],
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
        let strategy = settings.strategy;
        let mut view = View {
            settings,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            pools: vec![Pool::new(0, std::iter::empty())],
            pool_of_service: HashMap::new(),
            assignments: HashMap::new(),
            assigned: HashMap::new(),
            expiries: VecDeque::new(),
            early: HashMap::new(),
            early_limit: EARLY_LIMIT,
            rng,
            counters: Counters::default(),
            order_read_at: [None; Order::ALL.len()],
        };
        if let Some(order) = Order::of(strategy) {
            view.keep_order(order);
        }
        view
    }

    pub fn strategy(&self) -> Strategy {
        self.settings.strategy
    }

    /// Returns whether the strategy changed.
    pub fn set_strategy(&mut self, strategy: Strategy) -> bool {
        if let Some(order) = Order::of(strategy) {
            self.keep_order(order);
        }
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

    /// A node as this replica sees it (live metrics, effective agents).
    pub fn node(&self, id: &str) -> Option<Node> {
        self.by_id.get(id).map(|&i| self.slot(i).live_node())
    }

    pub fn stats(&self) -> BalancerStats {
        BalancerStats {
            strategy: self.settings.strategy,
            selections: self.counters.selections,
            selections_by_strategy: self.counters.by_strategy(),
            no_capacity: self.counters.no_capacity,
            round_robin_index: self.pools[0].cursor as u64,
            nodes: self.by_id.len(),
            unmeasured_nodes: self
                .slots
                .iter()
                .flatten()
                .filter(|s| !s.has_metrics)
                .count(),
            estimated_load: self.load_spread(),
        }
    }

    pub(crate) fn slot(&self, i: usize) -> &Slot {
        self.slots[i].as_ref().expect("indexed slot is occupied")
    }

    /// Adds or replaces a node from its membership record.
    pub fn upsert(&mut self, mut node: Node, now: Instant) {
        let pools = self.pools_for(&node.services);
        let Some(&i) = self.by_id.get(&node.id) else {
            let assigned = self.assigned.get(&node.id).copied().unwrap_or(0);
            let early = self.early.remove(&node.id);
            let mut slot = Slot::new(node, assigned, pools);
            if let Some((metrics, at)) = early
                && now.saturating_duration_since(at) < HEARTBEAT_FRESH
            {
                // Without it the node would rank by the record's metrics, which for
                // a node that just announced are zeros: it would look idle.
                slot.heartbeat_at = Some(at);
                slot.node.set_metrics(&metrics);
                slot.measured(at, &self.settings.decay);
            }
            let i = self.allocate(slot);
            self.reindex(i);
            return;
        };
        let decay = self.settings.decay;
        let slot = self.slots[i].as_mut().expect("known node has a slot");
        let fresh = slot
            .heartbeat_at
            .is_some_and(|at| now.saturating_duration_since(at) < HEARTBEAT_FRESH);
        let record_measured = record_has_metrics(&node);
        // A record without metrics never replaces measured ones.
        let keep_live = fresh || (slot.has_metrics && !record_measured);
        if keep_live {
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
        let slot = self.slots[i].as_mut().expect("slot");
        slot.node = node;
        if !keep_live && record_measured {
            // Heartbeats are stale: the record's metrics are the latest measurement.
            slot.measured(now, &decay);
        }
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

    /// Live metrics from a node's heartbeat. Membership comes from the registry's
    /// records only: the heartbeat of an unknown node is kept a moment
    /// ([`HEARTBEAT_FRESH`]) for its record to arrive, as a node's first heartbeat
    /// usually overtakes it, and is otherwise ignored. Returns whether the node is
    /// known.
    pub fn apply_heartbeat(&mut self, hb: &Heartbeat, now: Instant) -> bool {
        let Some(&i) = self.by_id.get(&hb.id) else {
            self.keep_early(hb, now);
            return false;
        };
        let decay = self.settings.decay;
        let slot = self.slots[i].as_mut().expect("slot");
        slot.heartbeat_at = Some(now);
        slot.node.set_metrics(&hb.into());
        slot.measured(now, &decay);
        self.reindex(i);
        true
    }

    /// Follows the coordinator's placements, which arrive at `now`. A placement on a
    /// node also confirms the oldest of this replica's in-flight picks there: from
    /// now on the coordinator's count carries it, and its cost counts as the agent's
    /// (the event's resources, else the node's per-agent cost). An agent leaving a
    /// node takes its pending cost with it.
    pub fn apply_assignment(&mut self, ev: &AssignmentEvent, now: Instant) {
        let previous = self.assignments.get(&ev.agent_name).cloned();
        let target = match ev.event {
            AssignmentAction::Assigned
            | AssignmentAction::Reassigned
            | AssignmentAction::Migrated
            | AssignmentAction::Rebalanced => ev.node_id.as_deref(),
            AssignmentAction::Unassigned | AssignmentAction::Orphaned => None,
        };
        if let Some(old) = previous.as_deref()
            && target != Some(old)
        {
            self.unpend(old, &ev.agent_name);
        }
        let Some(node_id) = target else {
            self.place(&ev.agent_name, None);
            return;
        };
        self.place(&ev.agent_name, Some(node_id));
        self.confirm_pick(node_id, &ev.agent_name, ev.resources, now);
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
            // The node will report one agent fewer once it has stopped it: count that
            // now, so the freed slot is pickable before the node's next heartbeat.
            if let Some(&i) = self.by_id.get(&o) {
                let node = &mut self.slots[i].as_mut().expect("slot").node;
                node.active_agents = node.active_agents.saturating_sub(1);
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

    fn confirm_pick(
        &mut self,
        node_id: &str,
        agent: &str,
        resources: Option<Resources>,
        now: Instant,
    ) {
        let (floor, decay) = (self.settings.agent_cost, self.settings.decay);
        if let Some(&i) = self.by_id.get(node_id) {
            let slot = self.slots[i].as_mut().expect("slot");
            let cost = slot.cost(resources, floor);
            slot.pending.place(agent, cost, now, &decay);
            self.reindex(i);
        }
    }

    fn unpend(&mut self, node_id: &str, agent: &str) {
        let decay = self.settings.decay;
        if let Some(&i) = self.by_id.get(node_id)
            && self.slots[i]
                .as_mut()
                .expect("slot")
                .pending
                .remove(agent, &decay)
        {
            self.reindex(i);
        }
    }

    /// Counts a pick against its node, agent and cost, until it is confirmed or
    /// expires.
    pub(crate) fn record_pick(&mut self, i: usize, now: Instant, cost: Resources) {
        if self.settings.pick_ttl.is_zero() {
            return;
        }
        let (expiry, decay) = (now + self.settings.pick_ttl, self.settings.decay);
        self.slots[i]
            .as_mut()
            .expect("slot")
            .pending
            .pick(now, expiry, cost, &decay);
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
            let decay = self.settings.decay;
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            // A confirmed pick already left the queue; then the front is a later one.
            if slot.pending.expire_front(now, &decay) {
                self.reindex(i);
            }
        }
    }

    /// Keeps the latest heartbeat of a node not known yet; stale ones are dropped
    /// whenever the map outgrows its limit, so it stays bounded.
    fn keep_early(&mut self, hb: &Heartbeat, now: Instant) {
        self.early.insert(hb.id.clone(), (hb.into(), now));
        if self.early.len() > self.early_limit {
            self.early
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < HEARTBEAT_FRESH);
            self.early_limit = EARLY_LIMIT.max(2 * self.early.len());
        }
    }

    fn pools_for(&mut self, services: &[String]) -> Vec<usize> {
        let mut pools = vec![0];
        for s in services {
            let p = match self.pool_of_service.get(s) {
                Some(&p) => p,
                None => {
                    let kept: Vec<Order> =
                        Order::ALL.into_iter().filter(|&o| self.keeps(o)).collect();
                    self.pools
                        .push(Pool::new(self.slots.len(), kept.into_iter()));
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
                    pool.grow(self.slots.len());
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
