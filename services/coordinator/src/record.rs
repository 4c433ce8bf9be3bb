//! What the fenced assignment log holds: one JSON record per message. Only
//! coordinators write and read it; history rows and events are derived from it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_protocol::{AssignmentAction, AssignmentEvent, AssignmentStatus};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogRecord {
    /// Written first by every new leader: any later append by an older leader, which
    /// still expects the sequence before this record, is refused by the stream.
    EpochStart(EpochStart),
    Change(Change),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStart {
    pub event_id: String,
    pub leader_id: String,
    pub epoch: u64,
    pub at: DateTime<Utc>,
}

/// One assignment change and why it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub event_id: String,
    pub action: AssignmentAction,
    pub agent_name: String,
    /// Where the agent is after the change; `None` when unassigned or still awaiting
    /// a node (an orphan with no capacity anywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_node_id: Option<String>,
    pub status: AssignmentStatus,
    pub reason: String,
    pub leader_id: String,
    pub epoch: u64,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The balancer's strategy and scored candidates, when it chose the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Value>,
}

impl Change {
    pub fn event(&self) -> AssignmentEvent {
        AssignmentEvent {
            event: self.action,
            agent_name: self.agent_name.clone(),
            node_id: self.node_id.clone(),
            previous_node_id: self.previous_node_id.clone(),
            reason: self.reason.clone(),
            epoch: self.epoch,
            at: self.at,
        }
    }
}

impl LogRecord {
    pub fn encode(&self) -> bytes::Bytes {
        // A record is plain data: serialising it cannot fail.
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(payload: &[u8]) -> Result<LogRecord, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_a_type_tag() {
        let record = LogRecord::EpochStart(EpochStart {
            event_id: "e1".into(),
            leader_id: "c1".into(),
            epoch: 7,
            at: Utc::now(),
        });
        let bytes = record.encode();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "epoch_start");
        assert_eq!(LogRecord::decode(&bytes).unwrap(), record);
    }
}
