//! What a node sends and how it reads what it is sent: shared by the real announcer
//! and the simulated nodes, so both behave the same on the wire.

use async_nats::Client;
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use shoal_protocol::{Announce, Heartbeat, Leave, Subjects, SyncRequest};

use crate::Error;

fn encode<T: Serialize>(message: &T) -> Bytes {
    // These types are plain structs of strings and numbers: encoding cannot fail.
    Bytes::from(serde_json::to_vec(message).unwrap_or_default())
}

pub async fn announce(client: &Client, subjects: &Subjects, a: &Announce) -> Result<(), Error> {
    client
        .publish(subjects.node_announce(&a.id), encode(a))
        .await
        .map_err(|e| Error::Nats(e.to_string()))
}

pub async fn heartbeat(client: &Client, subjects: &Subjects, hb: &Heartbeat) -> Result<(), Error> {
    client
        .publish(subjects.node_heartbeat(&hb.id), encode(hb))
        .await
        .map_err(|e| Error::Nats(e.to_string()))
}

pub async fn leave(
    client: &Client,
    subjects: &Subjects,
    id: &str,
    reason: &str,
) -> Result<(), Error> {
    let leave = Leave {
        id: id.to_string(),
        reason: Some(reason.to_string()),
        sent_at: Utc::now(),
    };
    client
        .publish(subjects.node_leave(id), encode(&leave))
        .await
        .map_err(|e| Error::Nats(e.to_string()))
}

/// Whether a registry's sync request asks node `id` to announce again.
pub fn sync_wants(request: &SyncRequest, id: &str) -> bool {
    request.ids.is_empty() || request.ids.iter().any(|i| i == id)
}

/// Encodes a heartbeat (the simulated cluster builds many per tick, then publishes).
pub fn encode_heartbeat(hb: &Heartbeat) -> Bytes {
    encode(hb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_with_no_ids_asks_everyone() {
        assert!(sync_wants(&SyncRequest::default(), "n1"));
        let only = SyncRequest {
            ids: vec!["n2".into()],
        };
        assert!(!sync_wants(&only, "n1"));
        assert!(sync_wants(&only, "n2"));
    }
}
