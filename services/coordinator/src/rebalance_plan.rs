//! The rebalance planner: which agent to move where so that the agent-count spread
//! over the nodes that take agents (online, not draining) falls to a threshold, with
//! the fewest moves. Each move takes an agent from the fullest node that has a
//! movable one to the emptiest node that can take it, two or more agents apart, so
//! every move narrows the gap it closes and none is undone by a later one. Pure.

use chrono::{DateTime, Utc};
use shoal_protocol::{Assignment, Node, NodeStatus, RebalanceMove};

use crate::constraints::{self, Rules};
use crate::members::Members;
use crate::state::{Author, MoveKind, State};

/// Sources looked at per move, fullest first: bounds a round's work when most
/// agents cannot move (pins, labels) on a large cluster.
const MAX_SOURCES: usize = 64;
/// Agents of one source looked at per move.
const MAX_AGENTS_PER_SOURCE: usize = 256;

/// How even the nodes that take agents are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    pub nodes: usize,
    pub max: u32,
    pub min: u32,
    /// Which nodes these are (the same set gives the same value), so a caller can
    /// tell when nodes joined or left.
    pub fingerprint: u64,
}

impl Spread {
    pub fn width(&self) -> u32 {
        self.max - self.min
    }
}

/// Whether `node` counts towards evenness: it can take agents now.
fn counts(node: &Node) -> bool {
    node.status == NodeStatus::Online && !node.draining && node.max_agents > 0
}

/// The spread of agent counts over the nodes that take agents.
pub fn spread(state: &State, members: &Members) -> Spread {
    let mut out = Spread {
        min: u32::MAX,
        ..Spread::default()
    };
    for node in members.nodes().filter(|n| counts(n)) {
        let n = state.count_on(&node.id) as u32;
        out.nodes += 1;
        out.fingerprint ^= fingerprint(&node.id);
        out.max = out.max.max(n);
        out.min = out.min.min(n);
    }
    if out.nodes == 0 {
        out.min = 0;
    }
    out
}

fn fingerprint(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The next move that narrows the spread, or none when it is at most `threshold`
/// or no agent may move to narrow it.
pub fn next_move(state: &State, members: &Members, threshold: u32) -> Option<RebalanceMove> {
    let mut nodes: Vec<(&Node, usize)> = members
        .nodes()
        .filter(|n| counts(n))
        .map(|n| (n, state.count_on(&n.id)))
        .collect();
    // Fullest first; ties by id, so a plan is the same on every replica.
    nodes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let (max, min) = (nodes.first()?.1, nodes.last()?.1);
    if max - min <= threshold as usize {
        return None;
    }
    for &(from, from_count) in nodes.iter().take(MAX_SOURCES) {
        if from_count < min + 2 {
            break;
        }
        let movable: Vec<&Assignment> = state
            .agents_on(&from.id)
            .into_iter()
            .filter(|a| !a.pinned && !a.status.is_waiting())
            .take(MAX_AGENTS_PER_SOURCE)
            .collect();
        if movable.is_empty() {
            continue;
        }
        // Emptiest first.
        let targets = nodes.iter().rev().take_while(|(_, n)| n + 2 <= from_count);
        for &(to, to_count) in targets {
            if to_count >= to.max_agents as usize {
                continue;
            }
            if let Some(agent) = movable.iter().find(|a| fits(state, members, a, from, to)) {
                return Some(RebalanceMove {
                    agent_name: agent.agent_name.clone(),
                    from: from.id.clone(),
                    to: to.id.clone(),
                });
            }
        }
    }
    None
}

/// Whether `agent` may run on `to` instead of `from`: the service, the labels and
/// its group rules allow it (spread over a label may not get worse).
fn fits(state: &State, members: &Members, agent: &Assignment, from: &Node, to: &Node) -> bool {
    if agent.service.as_deref().is_some_and(|s| !to.has_service(s))
        || !to.matches_labels(&agent.labels)
    {
        return false;
    }
    let Some(rules) = Rules::of_assignment(agent) else {
        return true;
    };
    if constraints::check_node(state, members, &rules, &agent.agent_name, &to.id).is_err() {
        return false;
    }
    match &rules.spread_by {
        Some(key) => spread_holds(state, members, &rules.group, key, agent, from, to),
        None => true,
    }
}

/// Whether moving `agent` from `from` to `to` leaves its group no less spread over
/// label `key`: the target's value holds no more of the group's other agents than
/// the source's.
fn spread_holds(
    state: &State,
    members: &Members,
    group: &str,
    key: &str,
    agent: &Assignment,
    from: &Node,
    to: &Node,
) -> bool {
    let (Some(source), Some(target)) = (from.labels.get(key), to.labels.get(key)) else {
        return false;
    };
    if source == target {
        return true;
    }
    let on = |value: &str| {
        state
            .group_members(group)
            .filter(|a| a.agent_name != agent.agent_name && !a.status.is_waiting())
            .filter(|a| {
                members
                    .get(&a.node_id)
                    .and_then(|n| n.labels.get(key))
                    .is_some_and(|v| v == value)
            })
            .count()
    };
    on(target) <= on(source)
}

/// The moves [`next_move`] would make, in order, and the spread they leave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub moves: Vec<RebalanceMove>,
    pub after: Spread,
}

/// Every move [`next_move`] would make, up to `limit`, worked out on a copy of the
/// state (a dry run; `at` dates the copy's changes).
pub fn plan(
    state: &State,
    members: &Members,
    threshold: u32,
    limit: usize,
    at: DateTime<Utc>,
) -> Plan {
    let mut state = state.clone();
    let author = Author {
        leader_id: String::new(),
        epoch: state.epoch(),
    };
    let mut moves = Vec::new();
    while moves.len() < limit {
        let Some(mv) = next_move(&state, members, threshold) else {
            break;
        };
        let Some(change) = state.move_change(
            &author,
            &mv.agent_name,
            Some(&mv.to),
            MoveKind::Rebalance,
            None,
            at,
        ) else {
            break;
        };
        state.apply_change(&change);
        moves.push(mv);
    }
    Plan {
        after: spread(&state, members),
        moves,
    }
}

#[cfg(test)]
#[path = "rebalance_plan_tests.rs"]
mod tests;
