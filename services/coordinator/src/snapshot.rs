//! Snapshots of the assignment state, so the log below them can be purged: one object
//! ([`SNAPSHOT_OBJECT`]) in the JetStream object store [`SNAPSHOT_BUCKET`], stamped
//! with the sequence of the last log record it covers. A starting replica loads it and
//! tails the log from the record after; the leader replaces it as the log grows
//! (see [`crate::compaction`]).
//!
//! The object is JSON: `{"version":1,"log_seq":…,"epoch":…,"leader_id":…,
//! "reassignments":…,"assignments":[…],"requests":[[request_id, assignment], …],
//! "unassigns":[[request_id, unassign reply], …]}`,
//! everything a replica needs to answer and a leader needs to keep retries idempotent.

use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use serde::{Deserialize, Serialize};
use shoal_protocol::{Assignment, SNAPSHOT_BUCKET, SNAPSHOT_OBJECT, UnassignReply};
use shoal_runtime::JetStreamError;
use tokio::io::AsyncReadExt;

/// The snapshot format this build writes and reads.
pub const VERSION: u32 = 1;

/// Object chunk size: well under the default 1 MiB max payload, few messages.
const CHUNK_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// The sequence of the last log record the snapshot includes.
    pub log_seq: u64,
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<String>,
    pub reassignments: u64,
    /// Rebalance moves (absent from snapshots written before rebalancing existed).
    #[serde(default)]
    pub rebalanced: u64,
    pub assignments: Vec<Assignment>,
    /// Remembered request ids of assigns and moves and what they produced, oldest
    /// first.
    pub requests: Vec<(String, Assignment)>,
    /// Remembered request ids of unassigns and their answers, oldest first (absent
    /// from snapshots written before unassigns carried one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unassigns: Vec<(String, UnassignReply)>,
}

/// Why a snapshot could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("writing the snapshot: {0}")]
    Put(#[source] object_store::PutError),
    #[error("reading the snapshot: {0}")]
    Get(#[source] object_store::GetError),
    #[error("reading the snapshot's bytes: {0}")]
    Read(#[source] std::io::Error),
    #[error("encoding or decoding the snapshot: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the snapshot has version {0}; this coordinator reads version {VERSION}")]
    Version(u32),
}

/// Opens (creating if needed) the snapshot bucket.
pub async fn open_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<object_store::ObjectStore, JetStreamError> {
    let create = js.create_object_store(object_store::Config {
        bucket: SNAPSHOT_BUCKET.to_string(),
        description: Some("shoal coordinator: snapshot of the assignment log".to_string()),
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    });
    shoal_runtime::jetstream::open_or_create(
        "the snapshot bucket",
        || js.get_object_store(SNAPSHOT_BUCKET),
        create,
    )
    .await
}

/// Replaces the snapshot with `snapshot` (with `metadata` on the object); returns its
/// size in bytes.
pub async fn save(
    store: &object_store::ObjectStore,
    snapshot: &Snapshot,
    metadata: std::collections::HashMap<String, String>,
) -> Result<usize, SnapshotError> {
    // Encoding a large state takes a while: off the async workers.
    let owned = snapshot.clone();
    let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec(&owned))
        .await
        .map_err(|e| SnapshotError::Read(std::io::Error::other(e)))?
        .map_err(SnapshotError::Json)?;
    let size = bytes.len();
    let meta = object_store::ObjectMetadata {
        name: SNAPSHOT_OBJECT.to_string(),
        description: Some(format!("assignments up to log record {}", snapshot.log_seq)),
        chunk_size: Some(CHUNK_BYTES),
        metadata,
        ..Default::default()
    };
    store
        .put(meta, &mut bytes.as_slice())
        .await
        .map_err(SnapshotError::Put)?;
    Ok(size)
}

/// The newest snapshot, if there is one.
pub async fn load(
    store: &object_store::ObjectStore,
    patience: Duration,
) -> Result<Option<Snapshot>, SnapshotError> {
    let read = async {
        let mut object = match store.get(SNAPSHOT_OBJECT).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SnapshotError::Get(e)),
        };
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(SnapshotError::Read)?;
        let snapshot: Snapshot =
            tokio::task::spawn_blocking(move || serde_json::from_slice(&bytes))
                .await
                .map_err(|e| SnapshotError::Read(std::io::Error::other(e)))?
                .map_err(SnapshotError::Json)?;
        if snapshot.version != VERSION {
            return Err(SnapshotError::Version(snapshot.version));
        }
        Ok(Some(snapshot))
    };
    match tokio::time::timeout(patience, read).await {
        Ok(result) => result,
        Err(_) => Err(SnapshotError::Read(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no snapshot within {patience:?}"),
        ))),
    }
}
