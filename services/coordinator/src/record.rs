//! What the fenced assignment log holds: one record per message. Only coordinators
//! write and read it; history rows and events are derived from it. Records are
//! written in a compact binary form (MessagePack, fields by name, behind a two-byte
//! header); records written as JSON by earlier versions are still read.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_protocol::{
    AssignmentAction, AssignmentEvent, AssignmentStatus, Candidate, Resources, Strategy,
};

// Records live only between decoding and applying; boxing the big variant would
// buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogRecord {
    /// Written first by every new leader: any later append by an older leader, which
    /// still expects the sequence before this record, is refused by the stream.
    EpochStart(EpochStart),
    Change(Change),
    /// Changes decided while the previous append was in flight, written as one
    /// message: one append, one delivery per tail, in the order decided.
    Changes(Changes),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    pub changes: Vec<Change>,
}

/// Why the balancer chose the node: its strategy and the candidates it scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub strategy: Strategy,
    pub chosen: String,
    #[serde(default)]
    pub candidates: Vec<Candidate>,
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
    pub candidates: Option<Explanation>,
    /// The agent's resource request, kept so that a move places it with the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The agent's group and placement rules, kept so that a move follows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anti_affinity: bool,
    /// The node was named by the request (a pin): a rebalance leaves the agent there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
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
            resources: self.resources,
        }
    }
}

impl Change {
    /// The change's encoding, as it goes into a record (see [`LogRecord::of_encoded`]).
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        Ok(Bytes::from(rmp_serde::to_vec_named(self)?))
    }
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("encoding a log record: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding a log record: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("decoding a JSON log record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a log record of unknown kind {0} (written by a newer version?)")]
    Kind(u8),
    #[error("a log record in binary format version {0} (written by a newer version?)")]
    Version(u8),
    #[error("a log record of {0} bytes, too short for its header")]
    Short(usize),
}

/// The first byte of a binary record (a JSON record starts with `{`), then the
/// format's version.
const BINARY: [u8; 2] = [0, 1];

/// The byte after [`BINARY`]: what the record is.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Kind {
    EpochStart = 0,
    Change = 1,
    /// A MessagePack array of changes.
    Changes = 2,
}

impl Kind {
    fn header(self, capacity: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(capacity + 3);
        out.extend_from_slice(&BINARY);
        out.push(self as u8);
        out
    }
}

impl LogRecord {
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        let out = match self {
            LogRecord::EpochStart(e) => {
                let mut out = Kind::EpochStart.header(64);
                rmp_serde::encode::write_named(&mut out, e)?;
                out
            }
            LogRecord::Change(c) => {
                let mut out = Kind::Change.header(256);
                rmp_serde::encode::write_named(&mut out, c)?;
                out
            }
            LogRecord::Changes(c) => {
                let encoded = c
                    .changes
                    .iter()
                    .map(Change::encode)
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(LogRecord::of_encoded(&encoded));
            }
        };
        Ok(Bytes::from(out))
    }

    /// The bytes of the record [`LogRecord::of_changes`] makes, from changes already
    /// encoded with [`Change::encode`]: each change is encoded once, when the leader
    /// decides it (and measured then), not again per record.
    pub fn of_encoded(changes: &[Bytes]) -> Bytes {
        let size = changes.iter().map(Bytes::len).sum::<usize>() + 5;
        let out = match changes {
            [one] => {
                let mut out = Kind::Change.header(size);
                out.extend_from_slice(one);
                out
            }
            _ => {
                let mut out = Kind::Changes.header(size);
                let count = u32::try_from(changes.len()).unwrap_or(u32::MAX);
                rmp::encode::write_array_len(&mut out, count)
                    .expect("writing to a Vec does not fail");
                for c in changes {
                    out.extend_from_slice(c);
                }
                out
            }
        };
        Bytes::from(out)
    }

    /// Decodes a binary record, or a JSON one written by an earlier version.
    pub fn decode(payload: &[u8]) -> Result<LogRecord, RecordError> {
        match payload {
            [0, 1, kind, body @ ..] => match *kind {
                k if k == Kind::EpochStart as u8 => {
                    Ok(LogRecord::EpochStart(rmp_serde::from_slice(body)?))
                }
                k if k == Kind::Change as u8 => Ok(LogRecord::Change(rmp_serde::from_slice(body)?)),
                k if k == Kind::Changes as u8 => Ok(LogRecord::Changes(Changes {
                    changes: rmp_serde::from_slice(body)?,
                })),
                other => Err(RecordError::Kind(other)),
            },
            [0] | [0, 1] => Err(RecordError::Short(payload.len())),
            [0, version, ..] => Err(RecordError::Version(*version)),
            _ => Ok(LogRecord::decode_json(payload)?),
        }
    }

    /// Reads the `type` tag first, then the record as its own struct: serde's
    /// internally tagged enums buffer the whole record before decoding it, which
    /// showed up in profiles of the tail.
    fn decode_json(payload: &[u8]) -> Result<LogRecord, serde_json::Error> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
        }
        let tag: Tag<'_> = serde_json::from_slice(payload)?;
        match tag.kind.as_ref() {
            "epoch_start" => serde_json::from_slice(payload).map(LogRecord::EpochStart),
            "change" => serde_json::from_slice(payload).map(LogRecord::Change),
            "changes" => serde_json::from_slice(payload).map(LogRecord::Changes),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["epoch_start", "change", "changes"],
            )),
        }
    }

    /// The changes this record holds, in order (none for an epoch start).
    pub fn changes(&self) -> &[Change] {
        match self {
            LogRecord::EpochStart(_) => &[],
            LogRecord::Change(c) => std::slice::from_ref(c),
            LogRecord::Changes(c) => &c.changes,
        }
    }

    /// One record for `changes`: a single change stays a `change` record.
    pub fn of_changes(mut changes: Vec<Change>) -> LogRecord {
        match changes.len() {
            1 => LogRecord::Change(changes.remove(0)),
            _ => LogRecord::Changes(Changes { changes }),
        }
    }

    /// Takes the changes back out of a record made by [`LogRecord::of_changes`].
    pub fn into_changes(self) -> Vec<Change> {
        match self {
            LogRecord::EpochStart(_) => Vec::new(),
            LogRecord::Change(c) => vec![c],
            LogRecord::Changes(c) => c.changes,
        }
    }
}

pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn records_round_trip_and_json_records_of_earlier_versions_still_read() {
        let record = LogRecord::EpochStart(EpochStart {
            event_id: "e1".into(),
            leader_id: "c1".into(),
            epoch: 7,
            at: Utc::now(),
        });
        let bytes = record.encode().unwrap();
        assert_eq!(bytes[..2], BINARY);
        assert_eq!(LogRecord::decode(&bytes).unwrap(), record);
        let json = serde_json::to_vec(&record).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["type"], "epoch_start");
        assert_eq!(LogRecord::decode(&json).unwrap(), record);
    }

    fn change(agent: &str) -> Change {
        Change {
            event_id: new_event_id(),
            action: AssignmentAction::Assigned,
            agent_name: agent.into(),
            node_id: Some("n1".into()),
            previous_node_id: None,
            status: AssignmentStatus::Running,
            reason: "balanced".into(),
            leader_id: "c1".into(),
            epoch: 3,
            at: Utc::now(),
            service: None,
            labels: BTreeMap::new(),
            request_id: Some("r1".into()),
            candidates: Some(Explanation {
                strategy: Strategy::LeastAgents,
                chosen: "n1".into(),
                candidates: vec![Candidate {
                    node_id: "n1".into(),
                    score: 0.0,
                }],
            }),
            resources: None,
            group: None,
            spread_by: None,
            anti_affinity: false,
            pinned: false,
        }
    }

    #[test]
    fn a_batch_round_trips_in_order_and_a_single_change_is_a_change_record() {
        let batch = LogRecord::of_changes(vec![change("a"), change("b"), change("c")]);
        let decoded = LogRecord::decode(&batch.encode().unwrap()).unwrap();
        assert_eq!(decoded, batch);
        let names: Vec<&str> = decoded
            .changes()
            .iter()
            .map(|c| c.agent_name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let json = serde_json::to_vec(&batch).unwrap();
        assert_eq!(LogRecord::decode(&json).unwrap(), batch);

        let single = LogRecord::of_changes(vec![change("a")]);
        let decoded = LogRecord::decode(&single.encode().unwrap()).unwrap();
        assert!(
            matches!(&decoded, LogRecord::Change(c) if c.candidates.as_ref().unwrap().chosen == "n1")
        );
        assert_eq!(decoded, single);
        let json = serde_json::to_vec(&single).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["type"], "change");
        assert_eq!(LogRecord::decode(&json).unwrap(), single);
    }

    #[test]
    fn records_of_encoded_changes_are_the_records_of_the_changes() {
        let changes = vec![change("a"), change("b"), change("c")];
        let encoded: Vec<Bytes> = changes.iter().map(|c| c.encode().unwrap()).collect();
        let batch = LogRecord::of_encoded(&encoded);
        assert_eq!(
            LogRecord::decode(&batch).unwrap(),
            LogRecord::of_changes(changes.clone())
        );
        assert_eq!(
            batch,
            LogRecord::of_changes(changes.clone()).encode().unwrap()
        );
        let single = LogRecord::of_encoded(&encoded[..1]);
        assert_eq!(
            LogRecord::decode(&single).unwrap(),
            LogRecord::of_changes(vec![changes[0].clone()])
        );
    }

    #[test]
    fn an_unknown_or_missing_type_is_an_error() {
        assert!(LogRecord::decode(br#"{"type":"compaction"}"#).is_err());
        assert!(LogRecord::decode(br#"{"event_id":"e"}"#).is_err());
        assert!(LogRecord::decode(b"not json").is_err());
        assert!(matches!(
            LogRecord::decode(&[0, 1, 9, 0x90]),
            Err(RecordError::Kind(9))
        ));
        assert!(matches!(
            LogRecord::decode(&[0]),
            Err(RecordError::Short(1))
        ));
        assert!(matches!(
            LogRecord::decode(&[0, 7, 1]),
            Err(RecordError::Version(7))
        ));
        assert!(LogRecord::decode(&[0, 1, 1, 0xc1]).is_err());
    }
}
