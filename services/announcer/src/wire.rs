//! What a node sends and how it reads what it is sent: shared by the real announcer
//! and the simulated nodes, so both behave the same on the wire.

use async_nats::Client;
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use shoal_protocol::{Announce, Heartbeat, Leave, Subjects, SyncRequest};
use shoal_runtime::NatsError;

use crate::Error;

/// Encodes a message; an error (never expected of these plain structs) is reported,
/// never sent as an empty payload.
fn encode<T: Serialize>(what: &'static str, message: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(message)
        .map(Bytes::from)
        .map_err(|source| Error::Encode { what, source })
}

async fn publish(client: &Client, subject: String, payload: Bytes) -> Result<(), Error> {
    client
        .publish(subject.clone(), payload)
        .await
        .map_err(|source| NatsError::publish(subject, source).into())
}

pub async fn announce(client: &Client, subjects: &Subjects, a: &Announce) -> Result<(), Error> {
    publish(
        client,
        subjects.node_announce(&a.id),
        encode("an announce", a)?,
    )
    .await
}

pub async fn heartbeat(client: &Client, subjects: &Subjects, hb: &Heartbeat) -> Result<(), Error> {
    publish(
        client,
        subjects.node_heartbeat(&hb.id),
        encode_heartbeat(hb)?,
    )
    .await
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
    publish(
        client,
        subjects.node_leave(id),
        encode("a goodbye", &leave)?,
    )
    .await
}

/// Whether a registry's sync request asks node `id` to announce again.
pub fn sync_wants(request: &SyncRequest, id: &str) -> bool {
    request.ids.is_empty() || request.ids.iter().any(|i| i == id)
}

/// Encodes an announce (the simulated cluster builds many per tick, then publishes).
pub fn encode_announce(a: &Announce) -> Result<Bytes, Error> {
    encode("an announce", a)
}

/// Encodes a heartbeat (the simulated cluster builds many per tick, then publishes).
pub fn encode_heartbeat(hb: &Heartbeat) -> Result<Bytes, Error> {
    encode("a heartbeat", hb)
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
