//! The shared KV buckets: opening them (whichever service starts first creates a
//! bucket, the others open it, and every creator uses the same settings), following
//! one, and reading a membership record.

use std::sync::{Mutex, PoisonError};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use shoal_protocol::Node;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::{JetStreamContext, JetStreamError};

/// What a bucket holds, for `nats kv ls` and the server's stream info.
pub fn description(bucket: &str) -> &'static str {
    match bucket {
        shoal_protocol::MEMBERS_BUCKET => "shoal membership: key = node id, value = node record",
        shoal_protocol::CONFIG_BUCKET => "shoal cluster settings, e.g. the balancing strategy",
        _ => "shoal",
    }
}

/// Opens `bucket`, creating it (file storage, one value per key, `replicas`
/// copies) if it is missing.
pub async fn open_or_create(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, JetStreamError> {
    let create = js.create_key_value(kv::Config {
        bucket: bucket.to_string(),
        description: description(bucket).to_string(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    });
    crate::jetstream::open_or_create(
        &format!("bucket {bucket}"),
        || js.get_key_value(bucket),
        create,
    )
    .await
}

/// What [`follow_bucket`] hands its callback, in revision order.
#[derive(Debug)]
pub enum BucketEvent<'a> {
    /// A key was put, deleted or purged (see `entry.operation`).
    Entry(&'a kv::Entry),
    /// Every value the bucket held when following began has been handed over (at
    /// once for an empty bucket). Sent once.
    Loaded,
}

/// Follows every key of `store` until `shutdown`: the current value of each, then
/// every change, each handed to `on`, and [`BucketEvent::Loaded`] once the values
/// present at the start are in. An interrupted watch (a NATS restart, a lost
/// consumer) is resumed after the last revision handed over (see
/// [`crate::retry::resume`]), so nothing is handed over twice or skipped: a key
/// deleted meanwhile arrives as its delete marker.
pub async fn follow_bucket(
    store: &kv::Store,
    shutdown: &CancellationToken,
    on: impl FnMut(BucketEvent<'_>) + Send,
) {
    let what = format!("following the bucket {}", store.name);
    let follower = Mutex::new(Follower {
        on,
        last: 0,
        loaded: false,
    });
    crate::retry::resume(shutdown, &what, || watch_once(store, &follower)).await;
}

/// Where following a bucket stands, across interruptions.
struct Follower<F> {
    on: F,
    /// The revision handed over last; 0 before any.
    last: u64,
    loaded: bool,
}

impl<F: FnMut(BucketEvent<'_>)> Follower<F> {
    fn entry(&mut self, entry: &kv::Entry) {
        self.last = entry.revision;
        (self.on)(BucketEvent::Entry(entry));
        if entry.delta == 0 || entry.seen_current {
            self.loaded();
        }
    }

    fn loaded(&mut self) {
        if !self.loaded {
            self.loaded = true;
            (self.on)(BucketEvent::Loaded);
        }
    }
}

/// One watch, from the start or after the last revision handed over, until it fails.
async fn watch_once<F: FnMut(BucketEvent<'_>)>(
    store: &kv::Store,
    follower: &Mutex<Follower<F>>,
) -> Result<(), JetStreamError> {
    let lock = || follower.lock().unwrap_or_else(PoisonError::into_inner);
    let info = store
        .stream
        .get_info()
        .await
        .jetstream("reading the bucket's state")?;
    let last = lock().last;
    let mut watch = if last == 0 {
        // The last value of every key, then every change.
        store.watch_with_history(">").await
    } else {
        store.watch_all_from_revision(last + 1).await
    }
    .jetstream("watching the bucket")?;
    if info.state.messages == 0 || info.state.last_sequence <= last {
        lock().loaded();
    }
    loop {
        match watch.next().await {
            Some(Ok(entry)) => lock().entry(&entry),
            Some(Err(e)) => return Err(JetStreamError::new("reading the watch", e)),
            None => return Err(JetStreamError::new("reading the watch", "it ended")),
        }
    }
}

/// Reads a membership record (bucket `shoal_members`, key = node id): `None`, with a
/// warning, for a value that is not a node or names another node than its key.
pub fn decode_member(key: &str, value: &[u8]) -> Option<Node> {
    match serde_json::from_slice::<Node>(value) {
        Ok(node) if node.id == key => Some(node),
        Ok(node) => {
            warn!(key, node_id = %node.id, "membership record names another node; ignored");
            None
        }
        Err(e) => {
            warn!(key, error = %e, "membership record is not a node; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_record_must_name_the_node_of_its_key() {
        let node = serde_json::to_string(&Node::example("n1")).unwrap();
        assert_eq!(decode_member("n1", node.as_bytes()).unwrap().id, "n1");
        assert!(decode_member("n2", node.as_bytes()).is_none());
        assert!(decode_member("n1", b"{}").is_none());
    }
}
