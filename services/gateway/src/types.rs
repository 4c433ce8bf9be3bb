//! The HTTP API's own bodies and replies, where its JSON differs from the NATS
//! messages (the REST API Shoal replaces answered `{"success": true}` and took a
//! heartbeat as a POST). Everything else is a `shoal_protocol` type as it is.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_protocol::validate::{self, Validate};
use shoal_protocol::{Assignment, HistoryCursor, HistoryRequest, LeaderInfo, ShoalError, Strategy};

/// `{"success": true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Success {
    pub success: bool,
}

/// `POST /api/cluster/nodes/{id}`: a heartbeat sent over HTTP, as a node's cron job
/// sends it. The gateway publishes it on the node's heartbeat subject as the node's
/// announcer would.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatBody {
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
    /// Agents the node runs; left out, the count the registry has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_agents: Option<u32>,
    /// Seconds the node has been up; left out, the time since it registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
}

impl Validate for HeartbeatBody {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::percent("cpu_usage", self.cpu_usage)?;
        validate::percent("memory_usage", self.memory_usage)?;
        validate::percent("disk_usage", self.disk_usage)?;
        validate::non_negative("load_average", self.load_average)
    }
}

/// `POST /api/cluster/balance?strategy=S`: `{"success": true, "strategy": "S"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StrategyChanged {
    pub success: bool,
    pub strategy: Strategy,
}

/// The coordinator holding the leader lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Leader {
    /// The leader's id (the coordinator's instance id), as the REST API named it.
    pub id: String,
    pub coordinator_id: String,
    /// The lease revision at acquisition (the leader's term); strictly increases
    /// across leaders.
    pub epoch: u64,
    /// When it took the lease.
    pub since: DateTime<Utc>,
}

impl From<LeaderInfo> for Leader {
    fn from(l: LeaderInfo) -> Leader {
        Leader {
            id: l.coordinator_id.clone(),
            coordinator_id: l.coordinator_id,
            epoch: l.epoch,
            since: l.since,
        }
    }
}

/// `GET /api/cluster/leader`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaderState {
    pub leader: Leader,
}

/// `POST /api/cluster/leader`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Promoted {
    pub success: bool,
    /// The coordinator asked for (or, asked for none, the current one) leads.
    pub is_leader: bool,
    pub leader: Leader,
}

/// `POST /api/cluster/assignments/{agent}/move`: where to (left out: the balancer
/// picks among the other nodes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MoveBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(shoal_protocol::validate::ID_PATTERN))]
    pub node_id: Option<String>,
    /// Makes retries safe: a repeated request_id returns the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = shoal_protocol::validate::MAX_TEXT_LEN),
        pattern(shoal_protocol::validate::NOT_BLANK_PATTERN)
    )]
    pub request_id: Option<String>,
}

impl Validate for MoveBody {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::optional_id("node_id", self.node_id.as_deref())?;
        if let Some(r) = &self.request_id {
            validate::non_empty_text("request_id", r)?;
        }
        Ok(())
    }
}

/// `POST /api/cluster/assignments`: the placement, and why that node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Placement {
    #[serde(flatten)]
    pub assignment: Assignment,
    /// The balancer's strategy, the node it chose and the candidates it scored
    /// (`{"strategy", "chosen", "candidates": [{"node_id", "score"}]}`), as the
    /// history records them; absent for a pinned agent, or when the history has
    /// not recorded the placement within moments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Value>,
}

/// `GET /api/cluster/history` filters: `agent`, `node`, `since`, `until`, `limit`,
/// and the page cursor `before`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryQuery {
    /// Only this agent's rows.
    #[serde(default, alias = "agent_name", skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(shoal_protocol::validate::ID_PATTERN))]
    pub agent: Option<String>,
    /// Only rows placing an agent on, or moving one off, this node.
    #[serde(default, alias = "node_id", skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(shoal_protocol::validate::ID_PATTERN))]
    pub node: Option<String>,
    /// Rows at or after this time (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shoal_protocol::time::optional_rfc3339"
    )]
    pub since: Option<DateTime<Utc>>,
    /// Rows before this time (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shoal_protocol::time::optional_rfc3339"
    )]
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows, newest first (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = shoal_protocol::MAX_HISTORY_LIMIT))]
    pub limit: Option<u32>,
    /// Only rows older than this position, the previous page's `next` written as
    /// `<log_seq>.<log_index>` (a bare `<log_seq>` means index 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[1-9][0-9]{0,17}(\.[0-9]{1,9})?$"))]
    pub before: Option<String>,
}

impl HistoryQuery {
    /// The page cursor in `before`, or `None` when it is absent or not
    /// `<log_seq>[.<log_index>]` with `log_seq` at least 1.
    fn cursor(&self) -> Option<HistoryCursor> {
        let before = self.before.as_deref()?;
        let (seq, index) = match before.split_once('.') {
            Some((seq, index)) => (seq, index.parse().ok()?),
            None => (before, 0),
        };
        let log_seq: u64 = seq.parse().ok()?;
        (log_seq >= 1).then_some(HistoryCursor {
            log_seq,
            log_index: index,
        })
    }
}

impl From<HistoryQuery> for HistoryRequest {
    fn from(q: HistoryQuery) -> HistoryRequest {
        HistoryRequest {
            before: q.cursor(),
            agent_name: q.agent,
            node_id: q.node,
            since: q.since,
            until: q.until,
            limit: q.limit,
        }
    }
}

impl Validate for HistoryQuery {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::optional_id("agent", self.agent.as_deref())?;
        validate::optional_id("node", self.node.as_deref())?;
        if self.before.is_some() && self.cursor().is_none() {
            return Err(ShoalError::bad_request(
                "before must be <log_seq>.<log_index> from the previous page's next \
                 (log_seq at least 1), e.g. before=42.0",
            )
            .with_details(serde_json::json!({ "field": "before" })));
        }
        validate::page_limit("limit", self.limit, shoal_protocol::MAX_HISTORY_LIMIT)
    }
}
