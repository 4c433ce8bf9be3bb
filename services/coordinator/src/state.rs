//! The assignment state machine: current assignments rebuilt from the log, and the
//! changes a leader may append. Plain data and pure methods, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use shoal_protocol::{
    AssignRequest, Assignment, AssignmentAction, AssignmentStatus, DigestSum,
    ListAssignmentsRequest, UnassignReply,
};

pub use crate::move_kind::MoveKind;
use crate::record::{Change, LogRecord};
use crate::snapshot::Snapshot;

/// How many `request_id`s are remembered for idempotent retries.
const REMEMBERED_REQUESTS: usize = 100_000;

/// Who is writing, for the records a leader makes.
#[derive(Clone, Debug)]
pub struct Author {
    pub leader_id: String,
    pub epoch: u64,
}

/// The agents assigned to one node, and their digest (what the node's heartbeats
/// should report).
#[derive(Clone, Debug, Default)]
struct NodeAgents {
    names: BTreeSet<String>,
    digest: DigestSum,
}

/// What a remembered `request_id` produced.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    /// An assign or a move: the agent's placement.
    Placed(Assignment),
    /// An unassign.
    Unassigned(UnassignReply),
}

#[derive(Clone, Debug, Default)]
pub struct State {
    assignments: BTreeMap<String, Assignment>,
    by_node: HashMap<String, NodeAgents>,
    /// Agents waiting for a node (orphaned or migrating), by name.
    waiting: BTreeSet<String>,
    /// Agents of each group, by name.
    by_group: HashMap<String, BTreeSet<String>>,
    /// request_id → what that request produced.
    requests: HashMap<String, Answer>,
    request_order: VecDeque<String>,
    /// Sequence of the last log record applied.
    last_seq: u64,
    /// Epoch and leader of the last epoch-start record.
    epoch: u64,
    leader_id: Option<String>,
    /// Changes that moved an agent off a failed or draining node.
    reassignments: u64,
    /// Changes that moved an agent to even the cluster.
    rebalanced: u64,
}

impl State {
    /// Applies the log record with sequence `seq`.
    pub fn apply(&mut self, seq: u64, record: &LogRecord) {
        match record {
            LogRecord::EpochStart(e) => {
                self.epoch = self.epoch.max(e.epoch);
                self.leader_id = Some(e.leader_id.clone());
            }
            LogRecord::Change(_) | LogRecord::Changes(_) => {
                record.changes().iter().for_each(|c| self.apply_change(c))
            }
        }
        self.last_seq = self.last_seq.max(seq);
    }

    /// Applies a change (the leader applies its own changes as it decides them).
    pub fn apply_change(&mut self, c: &Change) {
        if matches!(
            c.action,
            AssignmentAction::Orphaned | AssignmentAction::Reassigned | AssignmentAction::Migrated
        ) && c.node_id.is_some()
        {
            self.reassignments += 1;
        }
        if c.action == AssignmentAction::Rebalanced {
            self.rebalanced += 1;
        }
        match (&c.action, &c.node_id) {
            (AssignmentAction::Unassigned, _) => {
                self.remove(&c.agent_name);
                if let Some(request_id) = &c.request_id {
                    self.remember(request_id, Answer::Unassigned(State::unassigned(c)));
                }
            }
            (_, Some(_)) => {
                let assignment = State::placed(c);
                self.remove(&c.agent_name);
                // A request id answers with the agent's latest placement.
                if let Some(request_id) = &c.request_id {
                    self.remember(request_id, Answer::Placed(assignment.clone()));
                }
                self.insert(assignment);
            }
            // Still where it was, but waiting for a new node.
            (_, None) => {
                if let Some(a) = self.assignments.get_mut(&c.agent_name) {
                    a.status = c.status;
                    a.epoch = c.epoch;
                    self.set_waiting(&c.agent_name, c.status);
                }
            }
        }
    }

    /// The assignment a change placing an agent (`node_id` set) results in.
    pub fn placed(c: &Change) -> Assignment {
        Assignment {
            agent_name: c.agent_name.clone(),
            node_id: c.node_id.clone().unwrap_or_default(),
            assigned_at: c.at,
            status: c.status,
            epoch: c.epoch,
            service: c.service.clone(),
            labels: c.labels.clone(),
            request_id: c.request_id.clone(),
            resources: c.resources,
            group: c.group.clone(),
            spread_by: c.spread_by.clone(),
            anti_affinity: c.anti_affinity,
            pinned: c.pinned,
        }
    }

    /// The answer to the unassign a change removing an agent records.
    pub fn unassigned(c: &Change) -> UnassignReply {
        UnassignReply {
            success: true,
            agent_name: c.agent_name.clone(),
            node_id: c.previous_node_id.clone().unwrap_or_default(),
            epoch: c.epoch,
        }
    }

    /// Adds `assignment` (its agent not assigned yet) and its indexes.
    fn insert(&mut self, assignment: Assignment) {
        let node = self.by_node.entry(assignment.node_id.clone()).or_default();
        node.names.insert(assignment.agent_name.clone());
        node.digest.add(&assignment.agent_name);
        self.set_waiting(&assignment.agent_name, assignment.status);
        if let Some(group) = &assignment.group {
            self.by_group
                .entry(group.clone())
                .or_default()
                .insert(assignment.agent_name.clone());
        }
        self.assignments
            .insert(assignment.agent_name.clone(), assignment);
    }

    /// What a snapshot of this state holds (see [`crate::snapshot`]).
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            version: crate::snapshot::VERSION,
            log_seq: self.last_seq,
            epoch: self.epoch,
            leader_id: self.leader_id.clone(),
            reassignments: self.reassignments,
            rebalanced: self.rebalanced,
            assignments: self.assignments.values().cloned().collect(),
            requests: self.remembered(|a| match a {
                Answer::Placed(p) => Some(p),
                Answer::Unassigned(_) => None,
            }),
            unassigns: self.remembered(|a| match a {
                Answer::Unassigned(u) => Some(u),
                Answer::Placed(_) => None,
            }),
        }
    }

    /// The state a snapshot describes, as if its log had been applied.
    pub fn from_snapshot(snapshot: Snapshot) -> State {
        let mut state = State {
            last_seq: snapshot.log_seq,
            epoch: snapshot.epoch,
            leader_id: snapshot.leader_id,
            reassignments: snapshot.reassignments,
            rebalanced: snapshot.rebalanced,
            ..State::default()
        };
        for assignment in snapshot.assignments {
            state.insert(assignment);
        }
        for (request_id, assignment) in snapshot.requests {
            state.remember(&request_id, Answer::Placed(assignment));
        }
        for (request_id, reply) in snapshot.unassigns {
            state.remember(&request_id, Answer::Unassigned(reply));
        }
        state
    }

    fn set_waiting(&mut self, agent_name: &str, status: AssignmentStatus) {
        if status.is_waiting() {
            self.waiting.insert(agent_name.to_string());
        } else {
            self.waiting.remove(agent_name);
        }
    }

    fn remove(&mut self, agent_name: &str) {
        self.waiting.remove(agent_name);
        let Some(old) = self.assignments.remove(agent_name) else {
            return;
        };
        if let Some(node) = self.by_node.get_mut(&old.node_id) {
            node.names.remove(agent_name);
            node.digest.remove(agent_name);
            if node.names.is_empty() {
                self.by_node.remove(&old.node_id);
            }
        }
        if let Some(group) = &old.group
            && let Some(names) = self.by_group.get_mut(group)
        {
            names.remove(agent_name);
            if names.is_empty() {
                self.by_group.remove(group);
            }
        }
    }

    /// The remembered requests `pick` keeps, oldest first, for a snapshot.
    fn remembered<T: Clone>(&self, pick: impl Fn(&Answer) -> Option<&T>) -> Vec<(String, T)> {
        self.request_order
            .iter()
            .filter_map(|r| Some((r.clone(), pick(self.requests.get(r)?)?.clone())))
            .collect()
    }

    fn remember(&mut self, request_id: &str, answer: Answer) {
        if self
            .requests
            .insert(request_id.to_string(), answer)
            .is_none()
        {
            self.request_order.push_back(request_id.to_string());
        }
        while self.request_order.len() > REMEMBERED_REQUESTS {
            if let Some(old) = self.request_order.pop_front() {
                self.requests.remove(&old);
            }
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn len(&self) -> usize {
        self.assignments.len()
    }
    pub fn is_empty(&self) -> bool {
        self.assignments.is_empty()
    }
    pub fn reassignments(&self) -> u64 {
        self.reassignments
    }
    pub fn rebalanced(&self) -> u64 {
        self.rebalanced
    }

    pub fn get(&self, agent_name: &str) -> Option<&Assignment> {
        self.assignments.get(agent_name)
    }

    /// The assignments matching `filter`, by agent name, from after `filter.after`,
    /// at most `filter.limit`; and the name to continue after when more match.
    pub fn page(&self, filter: &ListAssignmentsRequest) -> (Vec<Assignment>, Option<String>) {
        use std::ops::Bound;
        let from = match &filter.after {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Unbounded,
        };
        let limit = filter.limit.map_or(usize::MAX, |l| l as usize);
        let mut matching = self
            .assignments
            .range((from, Bound::Unbounded))
            .map(|(_, a)| a)
            .filter(|a| filter.node_id.as_ref().is_none_or(|n| &a.node_id == n))
            .filter(|a| filter.status.is_none_or(|s| a.status == s))
            .filter(|a| filter.group.is_none() || a.group == filter.group);
        let page: Vec<Assignment> = matching.by_ref().take(limit).cloned().collect();
        let next = match (matching.next(), page.last()) {
            (Some(_), Some(last)) => Some(last.agent_name.clone()),
            _ => None,
        };
        (page, next)
    }

    pub fn count_on(&self, node_id: &str) -> usize {
        self.by_node.get(node_id).map_or(0, |n| n.names.len())
    }

    /// Agents on `node_id`, by name.
    pub fn agents_on(&self, node_id: &str) -> Vec<&Assignment> {
        self.names_on(node_id)
            .filter_map(|a| self.assignments.get(a))
            .collect()
    }

    /// Names of the agents on `node_id` (waiting ones included: their node has not
    /// been told to stop them), in order.
    pub fn names_on(&self, node_id: &str) -> impl Iterator<Item = &str> {
        self.by_node
            .get(node_id)
            .into_iter()
            .flat_map(|n| n.names.iter().map(String::as_str))
    }

    /// The digest of the agents on `node_id`, as its heartbeats should report it.
    pub fn digest_of(&self, node_id: &str) -> DigestSum {
        self.by_node
            .get(node_id)
            .map_or_else(DigestSum::default, |n| n.digest)
    }

    /// The agents of `group`, by name (waiting ones included).
    pub fn group_members(&self, group: &str) -> impl Iterator<Item = &Assignment> {
        self.by_group
            .get(group)
            .into_iter()
            .flat_map(|names| names.iter().filter_map(|a| self.assignments.get(a)))
    }

    /// Agents waiting for a node, by name.
    pub fn waiting(&self) -> impl Iterator<Item = &Assignment> {
        self.waiting.iter().filter_map(|a| self.assignments.get(a))
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// How many assignments have each status (every status present, zeros included).
    pub fn count_by_status(&self) -> BTreeMap<AssignmentStatus, usize> {
        let mut counts: BTreeMap<AssignmentStatus, usize> =
            AssignmentStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for a in self.waiting() {
            *counts.entry(a.status).or_default() += 1;
        }
        counts.insert(
            AssignmentStatus::Running,
            self.assignments.len() - self.waiting.len(),
        );
        counts
    }

    /// Nodes holding at least one agent.
    pub fn nodes(&self) -> impl Iterator<Item = &String> {
        self.by_node.keys()
    }

    /// The answer an assign request already has: the result of the same
    /// `request_id`, or the agent's current assignment.
    pub fn existing(&self, req: &AssignRequest) -> Option<Assignment> {
        self.answered(req.request_id.as_deref())
            .or_else(|| self.assignments.get(&req.agent_name))
            .cloned()
    }

    /// The assignment an assign or move with this `request_id` produced, if one did.
    pub fn answered(&self, request_id: Option<&str>) -> Option<&Assignment> {
        match self.requests.get(request_id?)? {
            Answer::Placed(a) => Some(a),
            Answer::Unassigned(_) => None,
        }
    }

    /// The answer an unassign with this `request_id` had, if one was made.
    pub fn answered_unassign(&self, request_id: Option<&str>) -> Option<&UnassignReply> {
        match self.requests.get(request_id?)? {
            Answer::Unassigned(u) => Some(u),
            Answer::Placed(_) => None,
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
