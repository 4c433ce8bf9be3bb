//! What a leader publishes once a record is in the log: each change's assignment
//! event, the record's events together on the placements feed (the balancer counts
//! agents from it: one delivery per record), start/stop notices to the nodes, and
//! the `sync` notices that tell a node every agent it runs, split to fit the
//! server's max payload.

use bytes::Bytes;
use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use shoal_protocol::{AgentChange, AgentNotice, AgentSync, Subjects};
use tracing::{debug, warn};

use crate::pipeline::NodeSync;
use crate::record::Change;
/// Publishes what follows a written change: the assignment event (the balancer
/// counts agents from these) and start/stop notices to the nodes.
#[derive(Clone)]
pub struct Notifier {
    pub client: async_nats::Client,
    pub subjects: Subjects,
    /// Counts what could not be published.
    pub nats_errors: Counter,
}

impl Notifier {
    async fn publish<T: serde::Serialize>(&self, subject: String, message: &T) {
        match serde_json::to_vec(message) {
            Ok(body) => self.publish_bytes(subject, body.into()).await,
            Err(e) => warn!(subject, error = %e, "notice not encoded"),
        }
    }

    /// Bytes one message may carry, less `overhead`.
    fn payload_budget(&self, overhead: usize) -> usize {
        self.client
            .server_info()
            .max_payload
            .saturating_sub(overhead)
    }

    /// Sends `sync`, split into parts that each fit the server's max payload.
    pub async fn sync(&self, sync: &NodeSync) {
        let subject = self.subjects.node_agents(&sync.node_id);
        let budget = self.payload_budget(SYNC_OVERHEAD);
        let parts = split_by_size(&sync.agents, budget);
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        let at = Utc::now();
        for (i, agents) in parts.into_iter().enumerate() {
            let notice = AgentNotice::Sync(AgentSync {
                node_id: sync.node_id.clone(),
                agents: agents.to_vec(),
                epoch: sync.epoch,
                at,
                part: u32::try_from(i + 1).unwrap_or(u32::MAX),
                parts: count,
                digest: sync.digest.clone(),
            });
            self.publish(subject.clone(), &notice).await;
        }
        debug!(node_id = %sync.node_id, agents = sync.agents.len(), parts = count, "sync sent");
    }

    async fn publish_bytes(&self, subject: String, body: Bytes) {
        if let Err(e) = self.client.publish(subject, body).await {
            self.nats_errors.inc();
            debug!(error = %e, "event not published");
        }
    }

    /// Publishes what follows the changes of one written record, in order: their
    /// events on the placements feed, then each change's own event and notices.
    /// Each event is encoded once for both.
    pub async fn written(&self, changes: &[Change]) {
        let events: Vec<Option<Bytes>> = changes
            .iter()
            .map(|c| match serde_json::to_vec(&c.event()) {
                Ok(body) => Some(Bytes::from(body)),
                Err(e) => {
                    warn!(agent_name = %c.agent_name, error = %e, "event not encoded");
                    None
                }
            })
            .collect();
        let budget = self.payload_budget(FEED_OVERHEAD);
        for part in feed_parts(events.iter().flatten(), budget) {
            self.publish_bytes(self.subjects.coordinator_placements(), part)
                .await;
        }
        for (change, event) in changes.iter().zip(events) {
            if let Some(event) = event {
                self.publish_bytes(self.subjects.coordinator_event(&change.agent_name), event)
                    .await;
            }
            self.notify_nodes(change).await;
        }
    }

    /// The start and stop notices of one change.
    async fn notify_nodes(&self, c: &Change) {
        let notice = |node_id: &str| AgentChange {
            agent_name: c.agent_name.clone(),
            node_id: node_id.to_string(),
            epoch: c.epoch,
            at: Utc::now(),
        };
        if let Some(previous) = &c.previous_node_id {
            // An orphan still waiting for a node has not left its old one yet.
            if (c.node_id.is_some() || c.action == shoal_protocol::AssignmentAction::Unassigned)
                && c.node_id.as_ref() != Some(previous)
            {
                self.publish(
                    self.subjects.node_agents(previous),
                    &AgentNotice::Stop(notice(previous)),
                )
                .await;
            }
        }
        if let Some(node) = &c.node_id {
            self.publish(
                self.subjects.node_agents(node),
                &AgentNotice::Start(notice(node)),
            )
            .await;
        }
    }
}

/// Room a placements message needs besides its events (`{"events":[` and `]}`).
const FEED_OVERHEAD: usize = 16;

/// `{"events":[...]}` messages holding `events` in order, each within `budget` bytes
/// (an event bigger than that alone still goes, by itself).
fn feed_parts<'a>(events: impl Iterator<Item = &'a Bytes>, budget: usize) -> Vec<Bytes> {
    let mut parts = Vec::new();
    let mut part: Vec<u8> = Vec::new();
    for event in events {
        if !part.is_empty() && part.len() + 1 + event.len() > budget {
            part.extend_from_slice(b"]}");
            parts.push(Bytes::from(std::mem::take(&mut part)));
        }
        if part.is_empty() {
            part.extend_from_slice(br#"{"events":["#);
        } else {
            part.push(b',');
        }
        part.extend_from_slice(event);
    }
    if !part.is_empty() {
        part.extend_from_slice(b"]}");
        parts.push(Bytes::from(part));
    }
    parts
}

/// Room a sync notice needs besides its agent names (field names, ids, the digest,
/// timestamps), with a wide margin.
const SYNC_OVERHEAD: usize = 1024;

/// Splits `names` into runs whose JSON (quoted, comma-separated) fits `budget` bytes;
/// always at least one run, so an empty list is still sent.
fn split_by_size(names: &[String], budget: usize) -> Vec<&[String]> {
    let mut parts = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, name) in names.iter().enumerate() {
        // Quotes and a comma; escapes could double a name, so count it twice.
        let cost = 2 * name.len() + 3;
        if i > start && size + cost > budget {
            parts.push(&names[start..i]);
            (start, size) = (i, 0);
        }
        size += cost;
    }
    parts.push(&names[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_splits_by_encoded_size_and_never_into_nothing() {
        let names: Vec<String> = (0..1000).map(|i| format!("agent-{i:04}")).collect();
        let parts = split_by_size(&names, 1000);
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), names);
        for part in &parts {
            let json = serde_json::to_vec(part).unwrap();
            assert!(json.len() <= 1000, "{}", json.len());
        }
        assert_eq!(split_by_size(&[], 1000), vec![&[] as &[String]]);
        // One name over the budget still goes, alone.
        let long = vec!["x".repeat(600), "y".into()];
        assert_eq!(split_by_size(&long, 1000).len(), 2);
    }

    #[test]
    fn the_placements_feed_keeps_every_event_in_order_within_the_budget() {
        use shoal_protocol::{AssignmentAction, AssignmentEvent, AssignmentEvents};
        let events: Vec<AssignmentEvent> = (0..50)
            .map(|i| AssignmentEvent {
                event: AssignmentAction::Assigned,
                agent_name: format!("agent-{i:03}"),
                node_id: Some("n1".into()),
                previous_node_id: None,
                reason: "balanced".into(),
                epoch: 1,
                at: Utc::now(),
                resources: None,
            })
            .collect();
        let encoded: Vec<Bytes> = events
            .iter()
            .map(|e| Bytes::from(serde_json::to_vec(e).unwrap()))
            .collect();
        let parts = feed_parts(encoded.iter(), 1000);
        assert!(parts.len() > 1);
        let mut decoded = Vec::new();
        for part in &parts {
            assert!(part.len() <= 1000 + 2, "{}", part.len());
            let feed: AssignmentEvents = serde_json::from_slice(part).unwrap();
            decoded.extend(feed.events);
        }
        assert_eq!(decoded, events);
        assert!(feed_parts(std::iter::empty(), 1000).is_empty());
    }
}
