//! The `history` endpoint: the assignment history rows Postgres keeps, and how
//! they are filtered and paged.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::coordinator::AssignmentAction;
use crate::ShoalError;
use crate::validate::{self, Validate};

/// `history` filters (rows come from Postgres).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::ID_PATTERN))]
    pub node_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::time::optional_rfc3339"
    )]
    pub since: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::time::optional_rfc3339"
    )]
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows, newest first (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub limit: Option<u32>,
    /// Only rows older than this position: the `next` of the previous page, to page
    /// through a history longer than one reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<HistoryCursor>,
}

/// A position in the history, `(log_seq, log_index)`: the order of its rows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct HistoryCursor {
    /// A log sequence; the log's first record is 1.
    #[schemars(range(min = 1))]
    pub log_seq: u64,
    /// A position within that log record.
    #[serde(default)]
    pub log_index: u32,
}

impl HistoryCursor {
    /// The position of `entry`.
    pub fn of(entry: &HistoryEntry) -> HistoryCursor {
        HistoryCursor {
            log_seq: entry.log_seq,
            log_index: entry.log_index,
        }
    }
}

pub const MAX_HISTORY_LIMIT: u32 = 10_000;

impl Validate for HistoryRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        validate::optional_id("agent_name", self.agent_name.as_deref())?;
        validate::optional_id("node_id", self.node_id.as_deref())?;
        if self.before.is_some_and(|c| c.log_seq == 0) {
            return Err(ShoalError::bad_request(
                "before.log_seq must be at least 1: the log's first record is 1",
            )
            .with_details(serde_json::json!({ "field": "before.log_seq" })));
        }
        validate::page_limit("limit", self.limit, MAX_HISTORY_LIMIT)
    }
}

/// One row of `assignment_history`: a permanent "why this node" ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    pub event_id: String,
    /// Sequence of the log record holding the change in the coordinator's
    /// assignment log.
    pub log_seq: u64,
    /// Position of the change within that record (the leader writes concurrent
    /// changes as one record); `(log_seq, log_index)` orders the history.
    #[serde(default)]
    pub log_index: u32,
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_node_id: Option<String>,
    pub action: AssignmentAction,
    pub reason: String,
    pub leader_id: String,
    pub epoch: u64,
    #[serde(deserialize_with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
    /// The balancer's candidates and scores for this decision, when it chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Value>,
}

/// The `reason` of a history row that moves an agent off its node.
pub mod move_reason {
    /// Its node went offline or is gone.
    pub const ORPHANED: &str = "orphaned";
    /// Its node is draining.
    pub const DRAINED: &str = "drained";
    /// An operator asked (`move`).
    pub const OPERATOR: &str = "operator";
    /// A rebalance evened the cluster.
    pub const REBALANCED: &str = "rebalanced";
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryReply {
    pub history: Vec<HistoryEntry>,
    pub count: usize,
    /// Set when the page is full: pass it as `before` for the older rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<HistoryCursor>,
}
