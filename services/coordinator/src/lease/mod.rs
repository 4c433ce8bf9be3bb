//! The leader lease: key `coordinator` in KV `shoal_leader`, a bucket whose max_age is
//! the lease TTL and history 1, so each renewal is a fresh message that ages out on
//! its own. The holder renews by compare-and-set on the revision every TTL/3;
//! leadership is decided only by CAS results, never by a read. The revision at
//! acquisition fences the holder; the term (1, 2, 3…, counted in the log) is what
//! users see as the epoch.
//!
//! A follower takes the lease when the key is released or ages out (a limit marker),
//! and earlier when [`crate::liveness`] finds the holder gone: it deposes it by CAS
//! on the revision it last saw, so a holder that renewed meanwhile keeps the lease.

mod task;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_protocol::{LEADER_BUCKET, LeaderInfo, ShoalError, Subjects};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use shoal_runtime::JetStreamError;
use shoal_runtime::jetstream::open_or_create;

/// The lease's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub coordinator_id: String,
    /// Absent in the record that acquired the lease: its own revision fences the
    /// holder from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The term the holder leads, once it has started it (from the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    pub since: DateTime<Utc>,
    /// Set by a leader handing leadership to the named replica (`leader.promote`);
    /// only that replica may take it over (by CAS on this revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_to: Option<String>,
}

/// This replica's hold on the lease.
#[derive(Clone, Debug)]
pub struct Held {
    /// The lease's revision when this replica acquired it.
    pub revision: u64,
    pub since: DateTime<Utc>,
    /// The lease is certainly ours until then: TTL after the last renewal that
    /// succeeded was sent.
    pub valid_until: Instant,
    /// Cancelled the moment the lease is lost or given up.
    pub token: CancellationToken,
}

/// What a replica knows about the lease.
#[derive(Clone, Debug, Default)]
pub struct LeaseView {
    /// The holder, as last seen on the key.
    pub leader: Option<LeaderInfo>,
    pub held: Option<Held>,
    /// A leader is handing over to another replica (`leader.promote`).
    pub handing_over: bool,
    /// The holder has started its term and serves writes (its term is in the lease).
    pub serving: bool,
}

impl LeaseView {
    /// Another replica leads and serves writes.
    pub fn succeeded_by_other(&self, me: &str) -> bool {
        self.serving && self.leader.as_ref().is_some_and(|l| l.coordinator_id != me)
    }
}

impl LeaseView {
    pub fn is_leader(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| !h.token.is_cancelled() && Instant::now() < h.valid_until)
    }
}

enum LeaseCommand {
    /// Give up the lease (a fenced append) and delete the key; stay a candidate.
    Resign(&'static str, oneshot::Sender<()>),
    Handoff(String, oneshot::Sender<Result<(), ShoalError>>),
    /// The term this replica leads has started: record it in the lease.
    Term(u64),
    /// Take the lease from the named holder, found gone, if the key still holds
    /// what this replica last saw.
    Depose(String, &'static str),
    /// Give up the lease and stop competing (still watching who leads): the
    /// coordinator is shutting down.
    Stop(oneshot::Sender<()>),
    /// Renew now and say whether this replica still holds the lease.
    Confirm(oneshot::Sender<bool>),
}

/// Talks to the lease task.
#[derive(Clone)]
pub struct LeaseHandle {
    view: watch::Receiver<LeaseView>,
    commands: mpsc::Sender<LeaseCommand>,
}

impl LeaseHandle {
    pub fn view(&self) -> LeaseView {
        self.view.borrow().clone()
    }
    pub fn subscribe(&self) -> watch::Receiver<LeaseView> {
        self.view.clone()
    }
    pub fn is_leader(&self) -> bool {
        self.view.borrow().is_leader()
    }

    /// Gives the lease up (if held) and deletes the key so a follower takes over at once.
    pub async fn resign(&self, reason: &'static str) {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(LeaseCommand::Resign(reason, tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Releases the lease and stops competing, so this replica does not win the key
    /// back while it shuts down; the task keeps watching who leads until every
    /// handle is dropped.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(LeaseCommand::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Marks the lease as handed to `target`; this replica stops being leader.
    pub async fn handoff(&self, target: &str) -> Result<(), ShoalError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(LeaseCommand::Handoff(target.to_string(), tx))
            .await
            .map_err(|_| ShoalError::unavailable("the lease task has stopped"))?;
        rx.await
            .map_err(|_| ShoalError::unavailable("the lease task has stopped"))?
    }

    /// Records the term this replica has started, and announces it.
    pub async fn started_term(&self, term: u64) {
        let _ = self.commands.send(LeaseCommand::Term(term)).await;
    }

    /// Whether this replica still holds the lease, proven by renewing it now (a
    /// compare-and-set on the key, so a successor's takeover makes it fail). A
    /// leader that was frozen may not know yet that it was deposed, while its
    /// state misses its successor's changes: an answer read from that state alone
    /// (an agent "not found") is only given once this says true.
    pub async fn confirm(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(LeaseCommand::Confirm(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Asks the lease task to depose `holder`, found gone for `reason`.
    pub async fn depose(&self, holder: &str, reason: &'static str) {
        let _ = self
            .commands
            .send(LeaseCommand::Depose(holder.to_string(), reason))
            .await;
    }
}

/// Opens (creating if needed) the lease bucket.
pub async fn open_bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, JetStreamError> {
    let config = kv::Config {
        bucket: LEADER_BUCKET.to_string(),
        description: "shoal coordinator leader lease".to_string(),
        history: 1,
        max_age: ttl,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        // A marker when the key ages out, so followers take over at once.
        limit_markers: Some(ttl.max(Duration::from_secs(1))),
        ..Default::default()
    };
    open_or_create(
        "the lease bucket",
        || js.get_key_value(LEADER_BUCKET),
        js.create_key_value(config),
    )
    .await
}

/// Starts the lease task for replica `me`.
pub fn spawn(
    kv: kv::Store,
    client: async_nats::Client,
    subjects: Subjects,
    me: String,
    ttl: Duration,
) -> (LeaseHandle, tokio::task::JoinHandle<()>) {
    let (view_tx, view_rx) = watch::channel(LeaseView::default());
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let join = tokio::spawn(task::run(kv, client, subjects, me, ttl, view_tx, cmd_rx));
    (
        LeaseHandle {
            view: view_rx,
            commands: cmd_tx,
        },
        join,
    )
}
