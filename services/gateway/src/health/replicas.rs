//! Which replicas of each service are live: `$SRV.PING.<service>` answered by every
//! replica (NATS micro services answer pings without a queue group), gathered for
//! a moment, and a memory of the replicas seen before, so one that stops answering
//! shows as down rather than vanishing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::Client;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use shoal_protocol::ServiceKind;
use tracing::debug;

use super::report::{Replica, ReplicaStatus};

/// A micro service's answer to `$SRV.PING`.
#[derive(Debug, Deserialize)]
struct Pong {
    #[serde(default)]
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl Pong {
    /// The replica's instance id (from the metadata every Shoal service sets), or
    /// its micro service id for other tooling.
    fn instance(self) -> (String, String) {
        let id = self.metadata.get("instance_id").cloned().unwrap_or(self.id);
        (id, self.version)
    }
}

/// Pings every replica of `service` and gathers the answers for up to `window`,
/// or until every replica in `expected` has answered. Returns instance id →
/// version. A failure to ask is logged and reads as no answers.
pub async fn ping(
    nats: &Client,
    service: ServiceKind,
    expected: &BTreeSet<String>,
    window: Duration,
) -> BTreeMap<String, String> {
    let mut answered = BTreeMap::new();
    let inbox = nats.new_inbox();
    let mut replies = match nats.subscribe(inbox.clone()).await {
        Ok(sub) => sub,
        Err(e) => {
            debug!(error = %e, "cannot subscribe for ping replies");
            return answered;
        }
    };
    let subject = format!("$SRV.PING.{}", service.service_name());
    if let Err(e) = nats
        .publish_with_reply(subject, inbox, bytes::Bytes::new())
        .await
    {
        debug!(error = %e, service = %service, "cannot send ping");
        return answered;
    }
    let until = tokio::time::Instant::now() + window;
    while let Ok(Some(message)) = tokio::time::timeout_at(until, replies.next()).await {
        match serde_json::from_slice::<Pong>(&message.payload) {
            Ok(pong) => {
                let (id, version) = pong.instance();
                answered.insert(id, version);
            }
            Err(e) => debug!(error = %e, service = %service, "unreadable ping reply"),
        }
        if !expected.is_empty() && expected.iter().all(|id| answered.contains_key(id)) {
            break;
        }
    }
    answered
}

#[derive(Clone, Debug)]
struct Seen {
    version: String,
    last_seen: DateTime<Utc>,
    up: bool,
}

/// The replicas of each service seen so far.
#[derive(Debug, Default)]
pub struct Memory {
    services: BTreeMap<&'static str, BTreeMap<String, Seen>>,
}

impl Memory {
    /// The replicas of `service` last seen up (those a ping waits for).
    pub fn expected(&self, service: ServiceKind) -> BTreeSet<String> {
        self.services
            .get(service.token())
            .map(|seen| {
                seen.iter()
                    .filter(|(_, s)| s.up)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a complete ping round of `service`: those answering are up, those
    /// remembered and silent are down, and those down for longer than
    /// `forget_after` are forgotten. Returns the replicas as they now stand.
    pub fn record(
        &mut self,
        service: ServiceKind,
        answered: &BTreeMap<String, String>,
        now: DateTime<Utc>,
        forget_after: Duration,
    ) -> Vec<Replica> {
        let seen = self.services.entry(service.token()).or_default();
        for s in seen.values_mut() {
            s.up = false;
        }
        for (id, version) in answered {
            seen.insert(
                id.clone(),
                Seen {
                    version: version.clone(),
                    last_seen: now,
                    up: true,
                },
            );
        }
        seen.retain(|_, s| {
            s.up || (now - s.last_seen)
                .to_std()
                .is_ok_and(|down| down <= forget_after)
        });
        seen.iter()
            .map(|(id, s)| Replica {
                instance_id: id.clone(),
                status: if s.up {
                    ReplicaStatus::Up
                } else {
                    ReplicaStatus::Down
                },
                version: s.version.clone(),
                last_seen: s.last_seen,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(ids: &[&str]) -> BTreeMap<String, String> {
        ids.iter()
            .map(|id| (id.to_string(), "0.1.0".into()))
            .collect()
    }

    #[test]
    fn a_replica_that_stops_answering_is_down_then_forgotten() {
        let mut memory = Memory::default();
        let t0 = Utc::now();
        let forget = Duration::from_secs(60);
        let r = memory.record(ServiceKind::Balancer, &answers(&["b1", "b2"]), t0, forget);
        assert!(r.iter().all(|r| r.status == ReplicaStatus::Up), "{r:?}");
        let t1 = t0 + chrono::Duration::seconds(1);
        let r = memory.record(ServiceKind::Balancer, &answers(&["b1"]), t1, forget);
        let b2 = r.iter().find(|r| r.instance_id == "b2").unwrap();
        assert_eq!((b2.status, b2.last_seen), (ReplicaStatus::Down, t0));
        assert_eq!(
            memory.expected(ServiceKind::Balancer),
            BTreeSet::from(["b1".to_string()])
        );
        let t2 = t0 + chrono::Duration::seconds(61);
        let r = memory.record(ServiceKind::Balancer, &answers(&["b1"]), t2, forget);
        assert_eq!(r.len(), 1, "{r:?}");
        // Back up after a restart under the same id.
        let r = memory.record(ServiceKind::Balancer, &answers(&["b1", "b2"]), t2, forget);
        assert!(r.iter().all(|r| r.status == ReplicaStatus::Up), "{r:?}");
    }
}
