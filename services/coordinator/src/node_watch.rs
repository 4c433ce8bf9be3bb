//! What the leader hears from nodes during its term: announces (each answered with a
//! `sync` listing the node's agents) and heartbeats (their agent digests, checked
//! against the leader's). Read from plain subscriptions and handed to the term's
//! decision loop; under overload messages are dropped rather than queued without
//! bound, as the digest check repairs a missed sync a few heartbeats later.

use futures::StreamExt;
use serde::Deserialize;
use shoal_protocol::{AgentsDigest, NodeSubjectKind, Subjects};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A node message for the decision loop.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeMessage {
    /// The node announced itself (start, reconnect, a registry's sync request).
    Announced(String),
    /// A heartbeat and the digest it reports, if it reports one.
    Heartbeat(String, Option<AgentsDigest>),
}

/// Messages waiting for the decision loop at most.
pub const QUEUE: usize = 16 * 1024;

/// The part of a heartbeat the leader reads.
#[derive(Deserialize)]
struct DigestOnly {
    id: String,
    #[serde(default)]
    agents_digest: Option<AgentsDigest>,
}

/// Subscribes to every node's announces and heartbeats, followed on `tasks` until
/// `stop`.
pub async fn spawn(
    client: async_nats::Client,
    subjects: Subjects,
    to_leader: mpsc::Sender<NodeMessage>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), async_nats::SubscribeError> {
    let announces = client.subscribe(subjects.node_announce_all()).await?;
    let heartbeats = client.subscribe(subjects.node_heartbeat_all()).await?;
    // Where the server maps heartbeats into partitions (shoal_protocol::partition).
    let partitioned = client
        .subscribe(subjects.node_heartbeat_partitioned_all())
        .await?;
    tasks.spawn(async move {
        let mut both =
            futures::stream::select(announces, futures::stream::select(heartbeats, partitioned));
        let mut dropped = 0u64;
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => break,
                m = both.next() => match m { Some(m) => m, None => break },
            };
            let Some(parsed) = parse(&subjects, &message) else {
                continue;
            };
            if to_leader.try_send(parsed).is_err() {
                dropped += 1;
                if dropped.is_power_of_two() {
                    warn!(
                        dropped,
                        "node messages dropped: the decision loop is behind"
                    );
                }
            }
        }
    });
    Ok(())
}

fn parse(subjects: &Subjects, message: &async_nats::Message) -> Option<NodeMessage> {
    let (id, kind) = subjects.parse_node_subject(&message.subject)?;
    match kind {
        NodeSubjectKind::Announce => Some(NodeMessage::Announced(id.to_string())),
        NodeSubjectKind::Heartbeat => {
            match serde_json::from_slice::<DigestOnly>(&message.payload) {
                Ok(hb) if hb.id == id => Some(NodeMessage::Heartbeat(hb.id, hb.agents_digest)),
                Ok(_) => None,
                Err(e) => {
                    debug!(node_id = %id, error = %e, "unreadable heartbeat ignored");
                    None
                }
            }
        }
        NodeSubjectKind::Leave | NodeSubjectKind::Agents => None,
    }
}
