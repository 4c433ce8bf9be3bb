//! Heartbeat partitions shared among registry replicas ([`shoal_protocol::partition`]).
//!
//! Each replica keeps a key, its instance id, in
//! [`shoal_protocol::REGISTRY_REPLICAS_BUCKET`], refreshed every [`REFRESH`] and aging
//! out after [`PRESENCE_TTL`]. From the live keys every replica derives the same
//! owners ([`owned`]): with the ids sorted, partition `p` belongs to the
//! `p mod n`-th. A replica subscribes to the heartbeats of the partitions it owns and
//! judges their members. One that gains a partition counts its members' silence
//! afresh from then, so a handover raises no false suspect; two replicas that both
//! believe they own a partition for a moment write with compare-and-set, so one
//! verdict wins. A replica stopping deletes its key and the others take over within
//! [`REFRESH`]; one that dies is dropped when its key ages out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use shoal_protocol::REGISTRY_REPLICAS_BUCKET;
use shoal_runtime::{JetStreamContext, JetStreamError, RateLog};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::ingest;

/// How often a replica refreshes its key and recomputes the owners.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long a replica's key outlives its last refresh.
pub const PRESENCE_TTL: Duration = Duration::from_secs(5);

/// Which of `partitions` the replica `me` owns when `live` (any order, `me` counted
/// whether listed or not) are the replicas alive.
pub fn owned(live: &[String], me: &str, partitions: u32) -> Vec<bool> {
    let mut ids: Vec<&str> = live.iter().map(String::as_str).chain([me]).collect();
    ids.sort_unstable();
    ids.dedup();
    let mine = ids.iter().position(|r| *r == me).unwrap_or(0);
    (0..partitions as usize)
        .map(|p| p % ids.len() == mine)
        .collect()
}

/// Opens the replicas bucket, creating it if missing.
pub async fn open_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, JetStreamError> {
    let config = kv::Config {
        bucket: REGISTRY_REPLICAS_BUCKET.to_string(),
        description: "shoal registry replicas: key = instance id, value = its partition count"
            .to_string(),
        history: 1,
        max_age: PRESENCE_TTL,
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    shoal_runtime::jetstream::open_or_create(
        "the registry replicas bucket",
        || js.get_key_value(REGISTRY_REPLICAS_BUCKET),
        js.create_key_value(config),
    )
    .await
}

async fn live_replicas(store: &kv::Store) -> Result<Vec<String>, JetStreamError> {
    let keys = store
        .keys()
        .await
        .jetstream("listing the registry replicas")?;
    keys.try_collect()
        .await
        .jetstream("listing the registry replicas")
}

/// Which partitions the subscriptions cover, as [`owned`] says which are wanted.
fn held(subscribed: &BTreeMap<u32, CancellationToken>, partitions: u32) -> Vec<bool> {
    (0..partitions)
        .map(|p| subscribed.contains_key(&p))
        .collect()
}

/// Keeps this replica's share of the partitions until `shutdown`: its key fresh, its
/// ownership and its heartbeat subscriptions in step with the live replicas.
pub async fn share(
    engine: Arc<Engine>,
    store: kv::Store,
    me: String,
    partitions: u32,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(REFRESH);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut subscribed: BTreeMap<u32, CancellationToken> = BTreeMap::new();
    let log = RateLog::new(Duration::from_secs(5));
    let value = bytes::Bytes::from(partitions.to_string());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Err(e) = store.put(&me, value.clone()).await {
            engine.metrics.nats_errors.inc();
            if let Some(suppressed) = log.admit() {
                warn!(error = %e, suppressed, "registry presence not refreshed");
            }
        }
        let live = match live_replicas(&store).await {
            Ok(live) => live,
            Err(e) => {
                // Ownership stays as it is until the replicas can be listed again.
                engine.metrics.nats_errors.inc();
                if let Some(suppressed) = log.admit() {
                    warn!(error = %e, suppressed, "registry replicas not listed");
                }
                continue;
            }
        };
        let wanted = owned(&live, &me, partitions);
        if wanted == held(&subscribed, partitions) {
            continue;
        }
        for (p, &want) in (0..partitions).zip(&wanted) {
            if !want {
                if let Some(token) = subscribed.remove(&p) {
                    token.cancel();
                }
                continue;
            }
            if subscribed.contains_key(&p) {
                continue;
            }
            // Subscribed before owning, so the heartbeats flow when judging starts.
            let subject = engine.subjects.node_heartbeat_partition(p);
            match engine.client.subscribe(subject.clone()).await {
                Ok(sub) => {
                    let token = shutdown.child_token();
                    tasks.spawn(ingest::heartbeats(
                        engine.clone(),
                        sub,
                        partitions,
                        token.clone(),
                    ));
                    subscribed.insert(p, token);
                }
                Err(e) => {
                    engine.metrics.nats_errors.inc();
                    warn!(subject, error = %e, "partition not subscribed, retrying");
                }
            }
        }
        // Owned: the partitions whose heartbeats this replica now hears.
        engine
            .lock()
            .set_owned(&held(&subscribed, partitions), Instant::now());
        let mine: Vec<u32> = subscribed.keys().copied().collect();
        engine.metrics.partitions_owned.set(mine.len() as i64);
        info!(owned = ?mine, replicas = live.len().max(1), partitions, "heartbeat partitions changed hands");
    }
    for token in subscribed.values() {
        token.cancel();
    }
    // The others take over at their next refresh, not after the key ages out.
    if let Err(e) = store.delete(&me).await {
        warn!(error = %e, "registry presence not removed: the others take over when it ages out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("registry-{i}")).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_shares_are_even() {
        for n in 1..=4 {
            let live = ids(n);
            let shares: Vec<Vec<bool>> = live.iter().map(|me| owned(&live, me, 12)).collect();
            for p in 0..12 {
                assert_eq!(
                    shares.iter().filter(|s| s[p]).count(),
                    1,
                    "partition {p} with {n}"
                );
            }
            for s in &shares {
                assert_eq!(s.iter().filter(|o| **o).count(), 12 / n);
            }
        }
    }

    #[test]
    fn a_replica_not_yet_listed_counts_itself() {
        assert_eq!(owned(&[], "solo", 3), vec![true, true, true]);
        let live = ids(1);
        let new = owned(&live, "registry-9", 4);
        let old = owned(&live, "registry-0", 4);
        assert_eq!(
            new,
            vec![false, true, false, true],
            "counted before its key is listed"
        );
        assert!(old.iter().all(|o| *o), "the old one does not see it yet");
        let both = vec!["registry-0".to_string(), "registry-9".to_string()];
        let (a, b) = (owned(&both, "registry-0", 4), owned(&both, "registry-9", 4));
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    }
}
