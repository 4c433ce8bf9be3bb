//! Requests, replies and events of the registry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node::{Node, NodeRole, NodeStatus};
use crate::ShoalError;
use crate::validate::{self, Validate};

/// `nodes.list` filters; all optional, all must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListNodesRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<NodeRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_NAME_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
    /// `key=value` (or just `key`, matching any value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_TEXT_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub label: Option<String>,
    /// Only nodes whose id sorts after this one: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub after: Option<String>,
    /// At most this many nodes (1 to 10,000). A page also ends where the reply would
    /// outgrow the server's max payload; `next` then says where to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub limit: Option<u32>,
}

/// Largest `limit` of a `nodes.list` page.
pub const MAX_NODES_PAGE: u32 = 10_000;

impl Validate for ListNodesRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        if let Some(s) = &self.service {
            validate::name("service", s)?;
        }
        if let Some(l) = &self.label {
            validate::non_empty_text("label", l)?;
        }
        validate::optional_id("after", self.after.as_deref())?;
        validate::page_limit("limit", self.limit, MAX_NODES_PAGE)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeList {
    pub nodes: Vec<Node>,
    /// Nodes in this reply.
    pub count: usize,
    /// Set when more match: pass it as `after` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `nodes.get`, `nodes.unregister`, `nodes.drain`, `nodes.undrain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeIdRequest {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub id: String,
}

impl Validate for NodeIdRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("id", &self.id)
    }
}

/// `nodes.register`: manual registration, as `POST /api/cluster/nodes` of the Go
/// wrapper's REST API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegisterNodeRequest {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub id: String,
    #[schemars(length(min = 1, max = crate::validate::MAX_TEXT_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub hostname: String,
    #[serde(default)]
    #[schemars(length(max = crate::validate::MAX_TEXT_LEN))]
    pub ip_address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub role: NodeRole,
    pub max_agents: u32,
    #[serde(default)]
    #[schemars(length(max = crate::validate::MAX_NAMES), inner(length(min = 1, max = crate::validate::MAX_NAME_LEN), pattern(crate::validate::NOT_BLANK_PATTERN)))]
    pub services: Vec<String>,
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::labels_schema")]
    pub labels: BTreeMap<String, String>,
    /// Seconds between the node's heartbeats on `<prefix>.node.<id>.heartbeat`, 0.01 to
    /// 3600 (fractions allowed; `30` for a node reporting every 30 s). The registry
    /// then judges the node by the same number of missed heartbeats as any other
    /// (suspect after `--suspect-after`, offline after `--offline-after`), counted at
    /// this pace, and never sooner than at the cluster's own interval. Absent: the
    /// registry's `--heartbeat-interval`. A registration that leaves it out resets a
    /// node registered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = crate::validate::MIN_HEARTBEAT_INTERVAL_S, max = crate::validate::MAX_HEARTBEAT_INTERVAL_S))]
    pub heartbeat_interval: Option<f64>,
}

impl Validate for RegisterNodeRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("id", &self.id)?;
        validate::non_empty_text("hostname", &self.hostname)?;
        validate::text("ip_address", &self.ip_address)?;
        validate::names("services", &self.services)?;
        validate::labels("labels", &self.labels)?;
        validate::heartbeat_interval("heartbeat_interval", self.heartbeat_interval)
    }
}

/// Reply of `nodes.register`, `nodes.unregister`: `{success, node}`, as the REST API
/// answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeChangeReply {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
}

/// `stats`: the registry's statistics, field for field as the REST API's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryStats {
    pub total_nodes: usize,
    pub healthy_nodes: usize,
    pub online_nodes: usize,
    pub total_agents: u64,
    pub max_agents: u64,
    pub utilization_pct: f64,
    pub nodes_by_role: BTreeMap<String, usize>,
    pub nodes_by_status: BTreeMap<String, usize>,
    /// Node messages (announce, heartbeat, leave) this replica refused as malformed,
    /// out of range or inconsistent with their subject since it started.
    #[serde(default)]
    pub rejected_messages: u64,
}

/// What happened to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeEventKind {
    Joined,
    Updated,
    Suspect,
    Offline,
    Recovered,
    Draining,
    Undrained,
    Left,
    Pruned,
}

/// `<prefix>.registry.events.<node_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeEvent {
    pub event: NodeEventKind,
    pub node_id: String,
    pub status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<NodeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The node as it is after the event (absent once pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
}

impl Validate for NodeEvent {}
