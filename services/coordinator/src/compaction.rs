//! The leader keeps the assignment log short: when the log has grown past the last
//! snapshot by at least `--snapshot-min-records` records, and by at least as many
//! records as there are assignments, it writes a new snapshot of its replica's state
//! (which holds only acknowledged records) and purges the log below it. Snapshot work
//! per change is then bounded (one assignment written per record appended, at most),
//! and a replica that starts replays at most that many records after the snapshot.
//!
//! The purge never passes the history consumer's acknowledged floor, so no change
//! leaves the log before its row is in Postgres; fencing is untouched, as appends
//! expect the last sequence, which a purge does not move.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::ObjectStore;
use shoal_protocol::{HISTORY_CONSUMER, SNAPSHOT_OBJECT};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use shoal_runtime::{JetStreamContext, JetStreamError};

use crate::context::Ctx;
use crate::snapshot::{self, SnapshotError};
use crate::state::State;

/// Why the log was not compacted this time.
#[derive(Debug, thiserror::Error)]
enum CompactError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Purge(#[from] JetStreamError),
}

/// The object's metadata key holding the sequence a snapshot covers.
const LOG_SEQ_KEY: &str = "log_seq";

/// Runs for the length of a term (until `stop`).
pub async fn run(ctx: Arc<Ctx>, store: ObjectStore, stop: CancellationToken) {
    let mut covered = match store.info(SNAPSHOT_OBJECT).await {
        Ok(info) => info
            .metadata
            .get(LOG_SEQ_KEY)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    };
    info!(
        covered,
        interval = ?ctx.cfg.snapshot_interval,
        min_records = ctx.cfg.snapshot_min_records,
        "compacting the log below snapshots"
    );
    let mut tick = tokio::time::interval(ctx.cfg.snapshot_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (seq, live) = ctx.replica.read(|s| (s.last_seq(), s.len()));
        let due = ctx.cfg.snapshot_min_records.max(live as u64);
        if seq.saturating_sub(covered) < due {
            continue;
        }
        // A term that ends mid-snapshot leaves the previous snapshot in place.
        let compacted = tokio::select! {
            _ = stop.cancelled() => return,
            r = compact(&ctx, &store) => r,
        };
        match compacted {
            Ok(at) => covered = at,
            Err(e) => warn!(error = %e, "log not compacted; trying again later"),
        }
    }
}

/// Writes a snapshot of the replica's state and purges the log below it; returns the
/// sequence the snapshot covers.
async fn compact(ctx: &Ctx, store: &ObjectStore) -> Result<u64, CompactError> {
    let started = Instant::now();
    let snapshot = ctx.replica.read(State::to_snapshot);
    let seq = snapshot.log_seq;
    let assignments = snapshot.assignments.len();
    let mut meta_seq = std::collections::HashMap::new();
    meta_seq.insert(LOG_SEQ_KEY.to_string(), seq.to_string());
    let bytes = snapshot::save(store, &snapshot, meta_seq).await?;
    // Not past what the history consumer has written to Postgres.
    let floor = match ctx.stream.consumer_info(HISTORY_CONSUMER).await {
        Ok(info) => Some(info.ack_floor.stream_sequence),
        Err(e) => {
            debug!(error = %e, "no history consumer: purging up to the snapshot");
            None
        }
    };
    let upto = floor.map_or(seq, |f| f.min(seq));
    let purged = if upto > 0 {
        ctx.stream
            .purge()
            .sequence(upto + 1)
            .await
            .jetstream("purging the assignment log")?
            .purged
    } else {
        0
    };
    info!(
        log_seq = seq,
        assignments,
        snapshot_bytes = bytes,
        purged_below = upto + 1,
        purged,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log compacted"
    );
    Ok(seq)
}

/// A pause between checks no shorter than this.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
