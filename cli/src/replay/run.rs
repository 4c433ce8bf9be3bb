//! One run through the history: where its agents are, node by node, in a balancer
//! view of its own, with its moves and its spread kept up to date. The real run
//! puts agents where the history says; a replayed run asks its view, under its
//! strategy, wherever the balancer chose (see [`super::engine`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use chrono::{DateTime, Utc};
use shoal_balancer::View;
use shoal_protocol::{AssignmentAction, AssignmentEvent, SelectRequest, Strategy};

use super::spread::{Sample, Spread};
use super::world::World;

pub struct Run {
    /// `None` for the real run.
    pub strategy: Option<Strategy>,
    view: View,
    /// agent → the node it runs on.
    placed: HashMap<String, String>,
    /// agent → the node it was on, while it waits for one (sorted: retried in order).
    waiting: BTreeMap<String, String>,
    /// node → its agents (sorted: moved off in order).
    on_node: HashMap<String, BTreeSet<String>>,
    /// The counted nodes, with the figures they are counted with.
    counted: HashMap<String, (u32, f64)>,
    spread: Spread,
    pub moves: u64,
    pub samples: Vec<Sample>,
}

impl Run {
    pub fn new(strategy: Option<Strategy>, view: View) -> Run {
        Run {
            strategy,
            view,
            placed: HashMap::new(),
            waiting: BTreeMap::new(),
            on_node: HashMap::new(),
            counted: HashMap::new(),
            spread: Spread::default(),
            moves: 0,
            samples: Vec::new(),
        }
    }

    /// Where `agent` runs now.
    pub fn node_of(&self, agent: &str) -> Option<&str> {
        self.placed.get(agent).map(String::as_str)
    }

    /// Whether this run has seen `agent` (placed, or waiting for a node).
    pub fn knows(&self, agent: &str) -> bool {
        self.placed.contains_key(agent) || self.waiting.contains_key(agent)
    }

    /// Agents waiting for a node.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The node's record changed in the world (joined, down, draining, up).
    pub fn node_changed(&mut self, world: &World, id: &str, now: Instant) {
        if let Some(record) = world.record(id) {
            self.view.upsert(record, now);
        }
        self.recount(world, id);
    }

    /// The agents on `id`, which can no longer keep them, in name order.
    pub fn agents_on(&self, id: &str) -> Vec<String> {
        self.on_node
            .get(id)
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Agents waiting for a node, in name order.
    pub fn waiting_agents(&self) -> Vec<String> {
        self.waiting.keys().cloned().collect()
    }

    /// Places `agent` on `node`: a move if it was on another node (or waited after
    /// one). Nothing changes if it is there already.
    pub fn place(&mut self, world: &World, agent: &str, node: &str, now: Instant) {
        let (before, was_placed) = match self.placed.get(agent) {
            Some(n) if n == node => return,
            Some(n) => (Some(n.clone()), true),
            None => (self.waiting.remove(agent), false),
        };
        if before.as_deref().is_some_and(|old| old != node) {
            self.moves += 1;
        }
        self.placed.insert(agent.to_string(), node.to_string());
        self.on_node
            .entry(node.to_string())
            .or_default()
            .insert(agent.to_string());
        let action = match before {
            None => AssignmentAction::Assigned,
            Some(_) => AssignmentAction::Reassigned,
        };
        self.tell_view(agent, action, Some(node), now);
        if let Some(old) = before.filter(|_| was_placed) {
            self.leave(world, agent, &old);
        }
        self.recount(world, node);
    }

    /// Places `agent` where this run's strategy picks, leaving out `exclude`;
    /// without a node for it, it waits. Returns where it went.
    pub fn select(
        &mut self,
        world: &World,
        agent: &str,
        exclude: Vec<String>,
        now: Instant,
    ) -> Option<String> {
        let request = SelectRequest {
            strategy: self.strategy,
            exclude,
            ..SelectRequest::default()
        };
        match self.view.select(&request, now) {
            Ok(reply) => {
                self.place(world, agent, &reply.node_id, now);
                Some(reply.node_id)
            }
            Err(_) => {
                self.wait(world, agent, now);
                None
            }
        }
    }

    /// `agent` waits for a node (its node went down, or nothing could take it).
    pub fn wait(&mut self, world: &World, agent: &str, now: Instant) {
        if let Some(old) = self.placed.remove(agent) {
            self.tell_view(agent, AssignmentAction::Orphaned, None, now);
            self.leave(world, agent, &old);
            self.waiting.insert(agent.to_string(), old);
        }
    }

    /// `agent` is gone (unassigned).
    pub fn remove(&mut self, world: &World, agent: &str, now: Instant) {
        self.waiting.remove(agent);
        if let Some(old) = self.placed.remove(agent) {
            self.tell_view(agent, AssignmentAction::Unassigned, None, now);
            self.leave(world, agent, &old);
        }
    }

    /// Records the spread after a change at `at`.
    pub fn sample(&mut self, at: DateTime<Utc>) {
        self.samples.push(self.spread.sample(at));
    }

    /// `agent` is off `node` (the view already knows).
    fn leave(&mut self, world: &World, agent: &str, node: &str) {
        if let Some(agents) = self.on_node.get_mut(node) {
            agents.remove(agent);
            if agents.is_empty() {
                self.on_node.remove(node);
            }
        }
        self.recount(world, node);
    }

    /// The view follows this run's placements as a balancer follows the
    /// coordinator's: its counts and estimated loads move with them.
    fn tell_view(
        &mut self,
        agent: &str,
        event: AssignmentAction,
        node: Option<&str>,
        now: Instant,
    ) {
        let event = AssignmentEvent {
            event,
            agent_name: agent.to_string(),
            node_id: node.map(str::to_string),
            previous_node_id: None,
            reason: String::new(),
            epoch: 0,
            at: DateTime::<Utc>::MIN_UTC,
            resources: None,
        };
        self.view.apply_assignment(&event, now);
    }

    /// Counts `id` again with its current agents and load: counted while it can
    /// take work.
    fn recount(&mut self, world: &World, id: &str) {
        if let Some((agents, load)) = self.counted.remove(id) {
            self.spread.remove(agents, load);
        }
        if !world.is_up(id) {
            return;
        }
        let agents = self.on_node.get(id).map_or(0, |a| a.len() as u32);
        let load = self.view.node(id).map_or(0.0, |n| n.load);
        self.spread.add(agents, load);
        self.counted.insert(id.to_string(), (agents, load));
    }
}
