//! Requests, replies and events of the coordinator.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::balancer::BalancerStats;
use super::registry::RegistryStats;
use crate::ShoalError;
use crate::validate::{self, Validate};

/// `assign`: place an agent on a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
// "spread_by and anti_affinity need a group" (and spread_by leaves room for its label
// among `labels`), spelled without `if` or `not`: either the rule is off, or `group`
// is a string.
#[schemars(extend("allOf" = [
    { "anyOf": [
        { "properties": { "spread_by": { "type": "null" } } },
        {
            "properties": { "group": { "type": "string" }, "labels": { "maxProperties": 63 } },
            "required": ["group"]
        }
    ] },
    { "anyOf": [
        { "properties": { "anti_affinity": { "const": false } } },
        { "properties": { "group": { "type": "string" } }, "required": ["group"] }
    ] }
]))]
pub struct AssignRequest {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_NAME_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::labels_schema")]
    pub labels: BTreeMap<String, String>,
    /// Pin to this node instead of asking the balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub node_id: Option<String>,
    /// Makes retries safe: a repeated request_id returns the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_TEXT_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub request_id: Option<String>,
    /// What the agent is expected to use on its node. Without it the balancer counts
    /// the node's observed per-agent average, or its configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The agent's group: agents of one group are placed by its `spread_by` and
    /// `anti_affinity`, now and whenever they are moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub group: Option<String>,
    /// A node label key (such as `zone`): the group's agents are spread evenly over
    /// the values of this label, the least-filled value first; nodes without the
    /// label are not eligible. Requires `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_LABEL_KEY_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub spread_by: Option<String>,
    /// No two agents of the group on one node. Requires `group`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anti_affinity: bool,
}

/// What one agent is expected to use, in the units nodes report in heartbeats:
/// percent of the node's CPU and of its memory (as Kubernetes requests and Nomad
/// resources are for their schedulers). A placement adds it to the node's estimated
/// load at once, so a burst spreads instead of piling onto the node that looked idle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    /// Percent of the node's CPU, 0 to 100.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub cpu: f64,
    /// Percent of the node's memory, 0 to 100.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub memory: f64,
}

impl Validate for Resources {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::percent("resources.cpu", self.cpu)?;
        validate::percent("resources.memory", self.memory)
    }
}

impl Validate for AssignRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("agent_name", &self.agent_name)?;
        if let Some(s) = &self.service {
            validate::name("service", s)?;
        }
        validate::labels("labels", &self.labels)?;
        validate::optional_id("node_id", self.node_id.as_deref())?;
        if let Some(r) = &self.request_id {
            validate::non_empty_text("request_id", r)?;
        }
        self.resources.as_ref().map_or(Ok(()), Validate::validate)?;
        validate_placement_rules(
            &self.labels,
            self.group.as_deref(),
            self.spread_by.as_deref(),
            self.anti_affinity,
        )
    }
}

/// `group` is an id, `spread_by` a label key (leaving room for its label among
/// `labels`); both `spread_by` and `anti_affinity` need a `group` to act on.
fn validate_placement_rules(
    labels: &BTreeMap<String, String>,
    group: Option<&str>,
    spread_by: Option<&str>,
    anti_affinity: bool,
) -> Result<(), ShoalError> {
    validate::optional_id("group", group)?;
    if let Some(key) = spread_by {
        validate::label_key("spread_by", key)?;
        if labels.len() >= validate::MAX_LABELS {
            return Err(ShoalError::bad_request(format!(
                "labels has {} entries: with spread_by, which adds its label to every selection, at most {}",
                labels.len(),
                validate::MAX_LABELS - 1
            ))
            .with_details(serde_json::json!({ "field": "labels" })));
        }
    }
    let rule = match (spread_by, anti_affinity) {
        (Some(_), _) => "spread_by",
        (None, true) => "anti_affinity",
        (None, false) => return Ok(()),
    };
    if group.is_none() {
        return Err(ShoalError::bad_request(format!(
            "{rule} needs a group: it places the agent relative to the other agents of its group (add group)"
        ))
        .with_details(serde_json::json!({ "field": rule })));
    }
    Ok(())
}

/// `move`: move a placed agent to the named node, or to the balancer's pick among the
/// other nodes. Recorded as `migrated` with reason `operator`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MoveRequest {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub node_id: Option<String>,
    /// Makes retries safe: a repeated request_id returns the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_TEXT_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub request_id: Option<String>,
}

impl Validate for MoveRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("agent_name", &self.agent_name)?;
        validate::optional_id("node_id", self.node_id.as_deref())?;
        if let Some(r) = &self.request_id {
            validate::non_empty_text("request_id", r)?;
        }
        Ok(())
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentStatus {
    /// Placed on a healthy node.
    Running,
    /// Its node went offline and it awaits a new one.
    Orphaned,
    /// Being moved off a draining node.
    Migrating,
}

impl AssignmentStatus {
    pub const ALL: [AssignmentStatus; 3] = [
        AssignmentStatus::Running,
        AssignmentStatus::Orphaned,
        AssignmentStatus::Migrating,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentStatus::Running => "running",
            AssignmentStatus::Orphaned => "orphaned",
            AssignmentStatus::Migrating => "migrating",
        }
    }
    /// Orphaned or migrating: the agent waits for a node that can take it.
    pub fn is_waiting(self) -> bool {
        self != AssignmentStatus::Running
    }
}

/// An agent's current placement; the reply of `assign` and `assignments.get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assignment {
    pub agent_name: String,
    pub node_id: String,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub assigned_at: DateTime<Utc>,
    pub status: AssignmentStatus,
    /// The coordinator epoch (lease revision) under which this placement was written.
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The agent's group and its placement rules, as assigned: every move of the
    /// agent follows them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anti_affinity: bool,
    /// Placed on a node the request named (`assign` with `node_id`, `move` with
    /// `node_id`): a rebalance leaves it there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

/// `assignments.get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentNameRequest {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub agent_name: String,
}

impl Validate for AgentNameRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("agent_name", &self.agent_name)
    }
}

/// `unassign`: remove an agent's assignment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnassignRequest {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub agent_name: String,
    /// Makes retries safe: a repeated request_id returns the first result, where
    /// without one a retry of an unassign that took answers `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_TEXT_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub request_id: Option<String>,
}

impl Validate for UnassignRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("agent_name", &self.agent_name)?;
        if let Some(r) = &self.request_id {
            validate::non_empty_text("request_id", r)?;
        }
        Ok(())
    }
}

/// Reply of `unassign`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnassignReply {
    pub success: bool,
    pub agent_name: String,
    /// The node the agent was removed from.
    pub node_id: String,
    pub epoch: u64,
}

/// `assignments.list` filters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListAssignmentsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AssignmentStatus>,
    /// Only agents of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub group: Option<String>,
    /// Only agents whose name sorts after this one: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub after: Option<String>,
    /// At most this many assignments (1 to 10,000). A page also ends where the reply
    /// would outgrow the server's max payload; `next` then says where to go on.
    #[schemars(range(min = 1, max = 10_000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Largest `limit` of an `assignments.list` page.
pub const MAX_ASSIGNMENTS_PAGE: u32 = 10_000;

impl Validate for ListAssignmentsRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::optional_id("node_id", self.node_id.as_deref())?;
        validate::optional_id("after", self.after.as_deref())?;
        validate::optional_id("group", self.group.as_deref())?;
        validate::page_limit("limit", self.limit, MAX_ASSIGNMENTS_PAGE)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssignmentList {
    pub assignments: Vec<Assignment>,
    /// Assignments in this reply.
    pub count: usize,
    /// Set when more match: pass it as `after` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The holder of the coordinator lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaderInfo {
    pub coordinator_id: String,
    /// The lease revision at acquisition; strictly increases across leaders.
    pub epoch: u64,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub since: DateTime<Utc>,
}

/// Reply of `leader.get` (answered by every coordinator replica).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaderReply {
    /// Absent while no coordinator holds the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderInfo>,
    /// The replica that answered.
    pub coordinator_id: String,
    pub is_leader: bool,
}

/// `leader.promote`: hand leadership to the named coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromoteRequest {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub coordinator_id: String,
}

impl Validate for PromoteRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("coordinator_id", &self.coordinator_id)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromoteReply {
    pub success: bool,
    pub leader: LeaderInfo,
}

/// Why an assignment changed; the `action` column of `assignment_history`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentAction {
    Assigned,
    Unassigned,
    Orphaned,
    Reassigned,
    Migrated,
    /// Moved by a rebalance to even the cluster (`previous_node_id` → `node_id`).
    Rebalanced,
}

impl AssignmentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentAction::Assigned => "assigned",
            AssignmentAction::Unassigned => "unassigned",
            AssignmentAction::Orphaned => "orphaned",
            AssignmentAction::Reassigned => "reassigned",
            AssignmentAction::Migrated => "migrated",
            AssignmentAction::Rebalanced => "rebalanced",
        }
    }
}

/// `<prefix>.coordinator.events.<agent_name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssignmentEvent {
    pub event: AssignmentAction,
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_node_id: Option<String>,
    pub reason: String,
    pub epoch: u64,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
    /// The agent's resource request, if it has one (the balancer counts it against
    /// the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl Validate for AssignmentEvent {}

/// `<prefix>.coordinator.placements`: the events of one log record, in log order (a
/// record whose events would not fit one message is sent as several, in order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssignmentEvents {
    pub events: Vec<AssignmentEvent>,
}

impl Validate for AssignmentEvents {}

/// `<prefix>.coordinator.leader.changed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaderChanged {
    /// The new leader, absent when the lease was released with no successor yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
}

impl Validate for LeaderChanged {}

/// `stats`: the `/api/cluster/stats` JSON of the Go wrapper's REST API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterStats {
    /// The coordinator that answered.
    pub local_node: String,
    pub is_leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderInfo>,
    pub total_assignments: usize,
    /// The registry's stats, absent when no registry answered in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryStats>,
    /// The balancer's stats, absent when no balancer answered in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerStats>,
    /// True while the mass-failure guard holds reassignments back.
    #[serde(default)]
    pub reassignments_paused: bool,
    #[serde(default)]
    pub reassignments: u64,
    /// Assignments by status (`running`, `orphaned`, `migrating`).
    #[serde(default)]
    pub agents_by_status: BTreeMap<AssignmentStatus, usize>,
    /// Agents waiting for a node (orphaned or migrating): placed as soon as a node can
    /// take them.
    #[serde(default)]
    pub waiting_agents: usize,
    /// The sequence of the last log record the answering replica has applied: it
    /// has caught up once this reaches the log's end.
    #[serde(default)]
    pub log_seq: u64,
}
