//! What nodes publish (announce, heartbeat, leave), what they are told (agents), and
//! the node record the registry keeps and serves.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ShoalError;
use crate::digest::AgentsDigest;
use crate::validate::{self, Validate};

/// A node's role, as in the Go wrapper's node model.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Leader,
    #[default]
    Worker,
    Replica,
    Standby,
}

impl NodeRole {
    pub const ALL: [NodeRole; 4] = [
        NodeRole::Leader,
        NodeRole::Worker,
        NodeRole::Replica,
        NodeRole::Standby,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Leader => "leader",
            NodeRole::Worker => "worker",
            NodeRole::Replica => "replica",
            NodeRole::Standby => "standby",
        }
    }
}

/// Where a node is in the registry's status machine:
/// online → suspect (2 missed heartbeats) → offline (3) → pruned; draining by request;
/// left after a graceful goodbye.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Online,
    Suspect,
    Offline,
    Draining,
    Left,
    Unknown,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 6] = [
        NodeStatus::Online,
        NodeStatus::Suspect,
        NodeStatus::Offline,
        NodeStatus::Draining,
        NodeStatus::Left,
        NodeStatus::Unknown,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Suspect => "suspect",
            NodeStatus::Offline => "offline",
            NodeStatus::Draining => "draining",
            NodeStatus::Left => "left",
            NodeStatus::Unknown => "unknown",
        }
    }
}

/// `<prefix>.node.<id>.announce`: a node's identity, sent at start, when metadata
/// changes, and when a registry asks (`<prefix>.registry.sync`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Announce {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub id: String,
    #[schemars(length(min = 1, max = crate::validate::MAX_TEXT_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub hostname: String,
    #[schemars(length(max = crate::validate::MAX_TEXT_LEN))]
    pub ip_address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub role: NodeRole,
    #[serde(default)]
    #[schemars(length(max = crate::validate::MAX_NAMES), inner(length(min = 1, max = crate::validate::MAX_NAME_LEN), pattern(crate::validate::NOT_BLANK_PATTERN)))]
    pub services: Vec<String>,
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::labels_schema")]
    pub labels: BTreeMap<String, String>,
    pub max_agents: u32,
    #[serde(default)]
    #[schemars(length(max = crate::validate::MAX_TEXT_LEN))]
    pub version: String,
    #[serde(default)]
    #[schemars(length(max = crate::validate::MAX_NAMES), inner(length(min = 1, max = crate::validate::MAX_NAME_LEN), pattern(crate::validate::NOT_BLANK_PATTERN)))]
    pub features: Vec<String>,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub started_at: DateTime<Utc>,
    /// Seconds between this node's heartbeats, 0.01 to 3600 (fractions allowed), for a
    /// node that keeps its own pace: the registry counts its missed heartbeats at this
    /// pace, never sooner than at the cluster's interval. Absent: the registry's
    /// `--heartbeat-interval` (the Shoal announcer leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = crate::validate::MIN_HEARTBEAT_INTERVAL_S, max = crate::validate::MAX_HEARTBEAT_INTERVAL_S))]
    pub heartbeat_interval: Option<f64>,
}

impl Validate for Announce {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("id", &self.id)?;
        validate::non_empty_text("hostname", &self.hostname)?;
        validate::text("ip_address", &self.ip_address)?;
        validate::names("services", &self.services)?;
        validate::labels("labels", &self.labels)?;
        validate::text("version", &self.version)?;
        validate::names("features", &self.features)?;
        validate::heartbeat_interval("heartbeat_interval", self.heartbeat_interval)
    }
}

/// `<prefix>.node.<id>.heartbeat`, every interval (default 1 s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Heartbeat {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub id: String,
    /// Increases by one per heartbeat from the same process; restarts at 1.
    pub seq: u64,
    /// Percent, 0 to 100.
    #[schemars(range(min = 0, max = 100))]
    pub cpu_usage: f64,
    /// Percent, 0 to 100.
    #[schemars(range(min = 0, max = 100))]
    pub memory_usage: f64,
    /// Percent, 0 to 100.
    #[schemars(range(min = 0, max = 100))]
    pub disk_usage: f64,
    /// One-minute load average.
    #[schemars(range(min = 0))]
    pub load_average: f64,
    pub active_agents: u32,
    /// Seconds since the node's announcer started (the node's uptime, not its
    /// host's).
    pub uptime_s: u64,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub sent_at: DateTime<Utc>,
    /// Count and order-independent hash of the agents the node runs (see
    /// `digest.rs`); the coordinator leader sends a `sync` when it disagrees. Nodes that
    /// leave it out are never checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_digest: Option<AgentsDigest>,
}

impl Validate for Heartbeat {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("id", &self.id)?;
        validate::percent("cpu_usage", self.cpu_usage)?;
        validate::percent("memory_usage", self.memory_usage)?;
        validate::percent("disk_usage", self.disk_usage)?;
        validate::non_negative("load_average", self.load_average)
    }
}

/// `<prefix>.node.<id>.leave`: a graceful goodbye.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Leave {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::validate::MAX_TEXT_LEN))]
    pub reason: Option<String>,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub sent_at: DateTime<Utc>,
}

impl Validate for Leave {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("id", &self.id)?;
        self.reason
            .as_deref()
            .map_or(Ok(()), |r| validate::text("reason", r))
    }
}

/// `<prefix>.node.<id>.agents`: what the coordinator tells a node. `start` and `stop`
/// name one agent; `sync` lists every agent assigned to the node, and the node makes
/// its own set equal to it. The leader sends a sync whenever the node announces and
/// whenever the node's heartbeat digest disagrees with its own for two heartbeats.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AgentNotice {
    Start(AgentChange),
    Stop(AgentChange),
    Sync(AgentSync),
}

/// Reads `action` first, then the rest as that action's message, so an error names
/// the field it is about (serde's internally tagged enums lose the path).
impl<'de> Deserialize<'de> for AgentNotice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        fn as_<T: serde::de::DeserializeOwned, E: Error>(value: serde_json::Value) -> Result<T, E> {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." {
                    E::custom(inner)
                } else {
                    E::custom(format!("field `{path}`: {inner}"))
                }
            })
        }
        match value.get("action").and_then(serde_json::Value::as_str) {
            Some("start") => as_(value).map(AgentNotice::Start),
            Some("stop") => as_(value).map(AgentNotice::Stop),
            Some("sync") => as_(value).map(AgentNotice::Sync),
            Some(other) => Err(D::Error::custom(format!(
                "field `action`: unknown action {other:?}, expected start, stop or sync"
            ))),
            None => Err(D::Error::custom(
                "field `action` is missing or not a string: expected start, stop or sync",
            )),
        }
    }
}

/// A `start` or `stop` notice: one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentChange {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub agent_name: String,
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub node_id: String,
    /// The coordinator epoch that made the decision; a node may ignore notices from an
    /// epoch older than one it has already seen.
    pub epoch: u64,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
}

/// A `sync` notice: every agent assigned to the node. A list too long for one NATS
/// message comes in `parts` messages, sent back to back; the node replaces its set once
/// it holds parts 1 to `parts` of the same sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentSync {
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub node_id: String,
    /// This part's share of the node's agents (all of them when `parts` is 1).
    #[schemars(inner(pattern(crate::validate::ID_PATTERN)))]
    pub agents: Vec<String>,
    pub epoch: u64,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
    /// 1-based number of this part.
    #[serde(default = "one")]
    pub part: u32,
    /// How many parts the list was split into.
    #[serde(default = "one")]
    pub parts: u32,
    /// The whole list's digest, as the node's heartbeats report it.
    pub digest: AgentsDigest,
}

fn one() -> u32 {
    1
}

impl AgentNotice {
    pub fn node_id(&self) -> &str {
        match self {
            AgentNotice::Start(c) | AgentNotice::Stop(c) => &c.node_id,
            AgentNotice::Sync(s) => &s.node_id,
        }
    }

    pub fn epoch(&self) -> u64 {
        match self {
            AgentNotice::Start(c) | AgentNotice::Stop(c) => c.epoch,
            AgentNotice::Sync(s) => s.epoch,
        }
    }

    /// The `action` field's value.
    pub fn action(&self) -> &'static str {
        match self {
            AgentNotice::Start(_) => "start",
            AgentNotice::Stop(_) => "stop",
            AgentNotice::Sync(_) => "sync",
        }
    }
}

impl Validate for AgentNotice {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::id("node_id", self.node_id())?;
        match self {
            AgentNotice::Start(c) | AgentNotice::Stop(c) => {
                validate::id("agent_name", &c.agent_name)
            }
            AgentNotice::Sync(s) => {
                if s.parts == 0 || s.part == 0 || s.part > s.parts {
                    return Err(validate::field_error(
                        "part",
                        format!(
                            "part must be from 1 to parts, got {} of {}",
                            s.part, s.parts
                        ),
                    ));
                }
                s.agents.iter().try_for_each(|a| validate::id("agents", a))
            }
        }
    }
}

/// `<prefix>.registry.sync`: a registry asks nodes to announce again. With `ids`, only
/// those nodes answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::validate::MAX_IDS), inner(pattern(crate::validate::ID_PATTERN)))]
    pub ids: Vec<String>,
}

impl Validate for SyncRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::ids("ids", &self.ids)
    }
}

/// A node as the registry serves it (the `/api/cluster/nodes` JSON and more).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub ip_address: String,
    pub port: u16,
    /// `ip_address:port`.
    pub address: String,
    pub role: NodeRole,
    pub status: NodeStatus,
    /// Online (or draining) and heartbeating on time.
    pub healthy: bool,
    pub active_agents: u32,
    pub max_agents: u32,
    /// Free share of agent slots, 0.0 (full) to 1.0 (empty).
    pub capacity: f64,
    /// Load score, 0.0 (idle) to 1.0 (saturated), lower is better: 40 % CPU, 30 %
    /// memory, 30 % agent slots in use. The registry computes it from the last
    /// heartbeat; in a balancer's reply it is the estimated load `least_loaded` ranks
    /// by, which adds placements not measured yet and may pass 1.0.
    pub load: f64,
    pub cpu_usage: f64,
    pub memory_usage: f64,
    pub disk_usage: f64,
    pub load_average: f64,
    /// Human form, e.g. `2h15m30s`.
    pub uptime: String,
    /// Seconds since the node's announcer started, as of its last heartbeat.
    pub uptime_s: u64,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub last_seen: DateTime<Utc>,
    pub services: Vec<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub started_at: DateTime<Utc>,
    /// Set by `nodes.drain`; a draining node takes no new agents.
    #[serde(default)]
    pub draining: bool,
    /// Registered by `nodes.register` rather than by an announcer.
    #[serde(default)]
    pub manual: bool,
    /// Seconds between the node's heartbeats, as its registration or announce declared
    /// it; the registry judges its silence at this pace. Absent: the registry's
    /// `--heartbeat-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<f64>,
}

impl Node {
    /// A record of `id` with nothing known yet, as of `now`: an online worker with no
    /// address, metrics, agent slots, services or labels.
    pub fn blank(id: &str, now: DateTime<Utc>) -> Node {
        Node {
            id: id.to_string(),
            hostname: String::new(),
            ip_address: String::new(),
            port: 0,
            address: String::new(),
            role: NodeRole::Worker,
            status: NodeStatus::Online,
            healthy: true,
            active_agents: 0,
            max_agents: 0,
            capacity: 1.0,
            load: 0.0,
            cpu_usage: 0.0,
            memory_usage: 0.0,
            disk_usage: 0.0,
            load_average: 0.0,
            uptime: format_uptime(0),
            uptime_s: 0,
            last_seen: now,
            services: Vec::new(),
            labels: BTreeMap::new(),
            version: String::new(),
            features: Vec::new(),
            started_at: now,
            draining: false,
            manual: false,
            heartbeat_interval: None,
        }
    }

    pub fn has_service(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == service)
    }

    /// Every `key=value` in `wanted` is among the node's labels.
    pub fn matches_labels(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Puts a heartbeat's metrics on the record (the registry and the balancer
    /// both keep them).
    pub fn set_metrics(&mut self, m: &NodeMetrics) {
        self.cpu_usage = m.cpu_usage;
        self.memory_usage = m.memory_usage;
        self.disk_usage = m.disk_usage;
        self.load_average = m.load_average;
        self.active_agents = m.active_agents;
        self.uptime_s = m.uptime_s;
        self.uptime = format_uptime(m.uptime_s);
    }
}

/// The metrics of a heartbeat, as kept on a node record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeMetrics {
    pub cpu_usage: f64,
    pub memory_usage: f64,
    pub disk_usage: f64,
    pub load_average: f64,
    pub active_agents: u32,
    pub uptime_s: u64,
}

impl From<&Heartbeat> for NodeMetrics {
    fn from(hb: &Heartbeat) -> NodeMetrics {
        NodeMetrics {
            cpu_usage: hb.cpu_usage,
            memory_usage: hb.memory_usage,
            disk_usage: hb.disk_usage,
            load_average: hb.load_average,
            active_agents: hb.active_agents,
            uptime_s: hb.uptime_s,
        }
    }
}

pub const CPU_WEIGHT: f64 = 0.4;
pub const MEMORY_WEIGHT: f64 = 0.3;
pub const AGENTS_WEIGHT: f64 = 0.3;

/// The load score, 0 (idle) to 1 (saturated), as the Go wrapper's GetLoad: CPU and
/// memory pressure plus the share of agent slots in use. Inputs out of range are
/// clamped so a bad report cannot make a node look better than idle. It is a node's
/// `load` in the registry; the balancer's `least_loaded` ranks by it.
pub fn load_score(cpu_usage: f64, memory_usage: f64, agents: u32, max_agents: u32) -> f64 {
    let pct = |v: f64| {
        if v.is_finite() {
            v.clamp(0.0, 100.0) / 100.0
        } else {
            1.0
        }
    };
    CPU_WEIGHT * pct(cpu_usage)
        + MEMORY_WEIGHT * pct(memory_usage)
        + AGENTS_WEIGHT * slot_share(agents, max_agents)
}

/// The share of agent slots in use, 0 to 1 (1 for a node with no slots).
pub fn slot_share(agents: u32, max_agents: u32) -> f64 {
    if max_agents == 0 {
        1.0
    } else {
        (f64::from(agents) / f64::from(max_agents)).min(1.0)
    }
}

/// Formats seconds the way the REST API shows uptime: `2h15m30s`, `45s`.
pub fn format_uptime(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds / 60) % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_the_rest_api() {
        assert_eq!(format_uptime(8130), "2h15m30s");
        assert_eq!(format_uptime(45), "45s");
        assert_eq!(format_uptime(61), "1m1s");
    }
}
