//! The fenced assignment log: one JetStream stream. Every replica tails it into its
//! [`State`]; the leader appends to it through [`crate::append`]. While a replica
//! leads, it applies its own records as they are acknowledged ([`Feeding`]) and its
//! tail drops its consumer: the log then delivers each record to one tail fewer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use shoal_protocol::{LOG_STREAM, Subjects};
use shoal_runtime::retry::resume;
use shoal_runtime::{JetStreamContext, JetStreamError};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::record::LogRecord;
use crate::snapshot::SnapshotError;
use crate::state::State;

/// Why the tail could not follow the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the tail stalled at {applied} while the log ends at {last}")]
    Stalled { applied: u64, last: u64 },
    #[error("the log's consumer stopped delivering")]
    Ended,
}

/// How long the tail may be quiet before it checks that it is not stuck.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// How long the log remembers an append's name to drop a resent copy.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

/// Opens (creating if needed) the log stream.
pub async fn open_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> Result<stream::Stream, JetStreamError> {
    let config = stream::Config {
        name: LOG_STREAM.to_string(),
        description: Some("shoal coordinator assignment log (fenced appends)".to_string()),
        subjects: vec![subjects.coordinator_log()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        retention: stream::RetentionPolicy::Limits,
        deny_delete: true,
        // Purges are how the leader compacts the log below a snapshot.
        deny_purge: false,
        // Appends are resent within a term's handover; ids older than this are
        // not needed (and a resend still finds its record by reading it back).
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    shoal_runtime::jetstream::open_or_create(
        "the assignment log",
        || js.get_stream(LOG_STREAM),
        js.create_stream(config),
    )
    .await
}

/// A replica's copy of the current assignments, fed by the tail (or, while this
/// replica leads, by its own acknowledged appends).
#[derive(Clone)]
pub struct Replica {
    state: Arc<RwLock<State>>,
    /// The sequence of the last record applied (by the tail or the leader's feed).
    applied: Arc<watch::Sender<u64>>,
    /// True while the leader feeds this replica: the tail then holds no consumer.
    fed: Arc<watch::Sender<bool>>,
    /// Makes the tail drop its consumer and follow the log again from where it is.
    restart: Arc<Notify>,
}

/// A leader's hold on its own replica: the records it hands over are applied in
/// log order by a task of their own (the leader's replies never wait on a reader
/// of the state), and the tail follows the log again once this is dropped (or once
/// a record arrives out of order, e.g. after another writer's).
pub struct Feeding {
    replica: Replica,
    records: mpsc::UnboundedSender<(u64, LogRecord)>,
}

impl Feeding {
    /// Hands over `record`, acknowledged at `seq`.
    pub fn feed(&self, seq: u64, record: LogRecord) {
        let _ = self.records.send((seq, record));
    }
}

impl Replica {
    /// Applies the leader's records in the order handed over: one already applied is
    /// ignored, and one past the next hands the replica back to the tail.
    async fn apply_own(self, mut records: mpsc::UnboundedReceiver<(u64, LogRecord)>) {
        while let Some((seq, record)) = records.recv().await {
            if let Err(Gap { expected }) =
                apply_next(&self.state, &self.applied, seq, Some(&record))
            {
                debug!(
                    expected,
                    got = seq,
                    "a record is missing before the leader's own: following the log"
                );
                self.fed.send_replace(false);
            }
        }
    }
}

impl Drop for Feeding {
    fn drop(&mut self) {
        self.replica.fed.send_replace(false);
    }
}

/// Records before the one offered are missing: `expected` comes next.
struct Gap {
    expected: u64,
}

/// Applies `record` at `seq` if it follows the last applied (an unreadable record,
/// `None`, is passed over; one already applied is ignored); the check and the apply
/// hold the state's lock, so the tail and the leader's feed never apply a record
/// twice or out of order.
fn apply_next(
    state: &RwLock<State>,
    applied: &watch::Sender<u64>,
    seq: u64,
    record: Option<&LogRecord>,
) -> Result<(), Gap> {
    let mut state = state.write().unwrap_or_else(|p| p.into_inner());
    let expected = *applied.borrow() + 1;
    if seq > expected {
        return Err(Gap { expected });
    }
    if seq == expected {
        if let Some(record) = record {
            state.apply(seq, record);
        }
        applied.send_replace(seq);
    }
    Ok(())
}

impl Replica {
    /// Reads the state (never across an await).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts feeding this replica from the leader's acknowledged appends: the tail
    /// drops its consumer until the returned hold is dropped.
    pub fn lead(&self) -> Feeding {
        self.fed.send_replace(true);
        let (records, handed) = mpsc::unbounded_channel();
        // Ends once the hold is dropped and what it handed over is applied.
        tokio::spawn(self.clone().apply_own(handed));
        Feeding {
            replica: self.clone(),
            records,
        }
    }

    /// Restarts the tail's consumer: after a lost NATS server the old one may be
    /// gone without a word, and a new leader cannot wait for the stall check.
    pub fn restart_tail(&self) {
        self.restart.notify_one();
    }

    /// Waits (at most `deadline`) until the tail has applied every record the log
    /// held when this was called, so a read after an acknowledged write sees it;
    /// false if it could not tell or did not catch up in time (the read then
    /// answers from what the replica has).
    pub async fn caught_up(&self, stream: &stream::Stream, deadline: Duration) -> bool {
        let end = tokio::time::timeout(deadline, log_end(stream)).await;
        let Ok(Ok(last)) = end else {
            return false;
        };
        let mut applied = self.applied.subscribe();
        matches!(
            tokio::time::timeout(deadline, applied.wait_for(|a| *a >= last)).await,
            Ok(Ok(_))
        )
    }

    /// Waits until the tail has applied `seq`, then returns a copy of the state.
    pub async fn snapshot_at(&self, seq: u64, deadline: Duration) -> Option<State> {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(deadline, applied.wait_for(|a| *a >= seq))
            .await
            .ok()?
            .ok()?;
        Some(self.read(State::clone))
    }
}

/// Starts tailing the log into a state loaded from the newest snapshot (if
/// `snapshots` has one), from the record after it; runs until `shutdown`. When the
/// log has been purged past where the tail stands, the snapshot is loaded again.
pub fn spawn_tail(
    stream: stream::Stream,
    subjects: Subjects,
    snapshots: Option<ObjectStore>,
    shutdown: CancellationToken,
) -> Replica {
    let state = Arc::new(RwLock::new(State::default()));
    let restart = Arc::new(Notify::new());
    let replica = Replica {
        state: state.clone(),
        applied: Arc::new(watch::Sender::new(0)),
        fed: Arc::new(watch::Sender::new(false)),
        restart: restart.clone(),
    };
    let (applied, fed) = (replica.applied.clone(), replica.fed.subscribe());
    tokio::spawn(async move {
        let tail = Tail {
            load_snapshot: AtomicBool::new(snapshots.is_some()),
            stream,
            subjects,
            snapshots,
            state,
            applied,
            fed,
            restart,
        };
        resume(&shutdown, "following the assignment log", || tail.session()).await;
    });
    replica
}

/// What a replica's tail works with.
struct Tail {
    stream: stream::Stream,
    subjects: Subjects,
    snapshots: Option<ObjectStore>,
    state: Arc<RwLock<State>>,
    applied: Arc<watch::Sender<u64>>,
    /// True while the leader feeds the state.
    fed: watch::Receiver<bool>,
    restart: Arc<Notify>,
    /// The snapshot is (re)loaded before tailing: at start, and after the log was
    /// compacted past the tail.
    load_snapshot: AtomicBool,
}

impl Tail {
    /// Follows the log from the record after the last applied until the tail fails,
    /// is asked to restart, or finds the log compacted past it (both end the session
    /// for a new one to start at once).
    async fn session(&self) -> Result<(), LogError> {
        let mut fed = self.fed.clone();
        if *fed.borrow_and_update() {
            // The leader applies its own records: no consumer until it stops.
            tokio::select! {
                _ = fed.wait_for(|fed| !*fed) => {}
                _ = self.restart.notified() => {}
            }
            return Ok(());
        }
        if self.load_snapshot.load(Ordering::Relaxed)
            && let Some(store) = &self.snapshots
        {
            match restore(store, &self.stream, &self.state, &self.applied).await {
                Ok(()) => self.load_snapshot.store(false, Ordering::Relaxed),
                Err(e) => warn!(error = %e, "cannot load the snapshot, retrying"),
            }
        }
        let from = *self.applied.borrow() + 1;
        tokio::select! {
            _ = self.restart.notified() => {
                debug!(from, "log tail restarted on request");
                Ok(())
            }
            _ = fed.wait_for(|fed| *fed) => {
                debug!(from, "this replica leads: it applies its own records");
                Ok(())
            }
            r = tail_from(&self.stream, &self.subjects, from, &self.state, &self.applied) => match r {
                Err(TailError::Gap { expected, got }) => {
                    info!(
                        expected,
                        got, "the log was compacted past this replica: loading the snapshot"
                    );
                    self.load_snapshot.store(true, Ordering::Relaxed);
                    Ok(())
                }
                Err(TailError::Failed(e)) => Err(e),
                Ok(()) => Err(LogError::Ended),
            },
        }
    }
}

/// Replaces the state with the newest snapshot, if it is ahead of the tail and
/// belongs to this log.
async fn restore(
    store: &ObjectStore,
    stream: &stream::Stream,
    state: &RwLock<State>,
    applied: &watch::Sender<u64>,
) -> Result<(), LogError> {
    let started = std::time::Instant::now();
    let Some(snapshot) = crate::snapshot::load(store, SNAPSHOT_PATIENCE).await? else {
        return Ok(());
    };
    let last = log_end(stream).await?;
    if snapshot.log_seq > last {
        warn!(
            snapshot_seq = snapshot.log_seq,
            log_last = last,
            "ignoring a snapshot beyond the log's end (another log's)"
        );
        return Ok(());
    }
    if snapshot.log_seq <= *applied.borrow() {
        return Ok(());
    }
    let (seq, assignments) = (snapshot.log_seq, snapshot.assignments.len());
    let restored = State::from_snapshot(snapshot);
    *state.write().unwrap_or_else(|p| p.into_inner()) = restored;
    applied.send_replace(seq);
    info!(
        log_seq = seq,
        assignments,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state loaded from the snapshot"
    );
    Ok(())
}

/// The sequence of the log's last record.
pub async fn log_end(stream: &stream::Stream) -> Result<u64, JetStreamError> {
    Ok(stream
        .get_info()
        .await
        .jetstream("reading where the assignment log ends")?
        .state
        .last_sequence)
}

/// How long loading a snapshot may take before it is tried again.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(30);

/// Why a tail stopped.
enum TailError {
    /// The log no longer holds the record the tail needs next (purged below a
    /// snapshot).
    Gap {
        expected: u64,
        got: u64,
    },
    Failed(LogError),
}

impl<E: Into<LogError>> From<E> for TailError {
    fn from(e: E) -> TailError {
        TailError::Failed(e.into())
    }
}

async fn tail_from(
    stream: &stream::Stream,
    subjects: &Subjects,
    from: u64,
    state: &RwLock<State>,
    applied: &watch::Sender<u64>,
) -> Result<(), TailError> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects.coordinator_log(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .jetstream("following the assignment log")?;
    let mut messages = consumer
        .messages()
        .await
        .jetstream("following the assignment log")?;
    loop {
        let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
            Ok(Some(message)) => message.jetstream("reading the assignment log")?,
            Ok(None) => return Ok(()),
            Err(_) => {
                // Quiet: fine if there is nothing new. A consumer lost with a
                // restarted server would otherwise go unnoticed for 15-30 s.
                let last = log_end(stream).await?;
                let applied = *applied.borrow();
                if last > applied {
                    return Err(LogError::Stalled { applied, last }.into());
                }
                continue;
            }
        };
        let seq = message
            .info()
            .jetstream("reading a log record's metadata")?
            .stream_sequence;
        let record = LogRecord::decode(&message.payload)
            .inspect_err(|e| warn!(seq, error = %e, "unreadable log record skipped"))
            .ok();
        if let Err(Gap { expected }) = apply_next(state, applied, seq, record.as_ref()) {
            return Err(TailError::Gap { expected, got: seq });
        }
    }
}
