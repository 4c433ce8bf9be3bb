//! The leader lease: key `coordinator` in KV `shoal_leader`, a bucket whose max_age is
//! the lease TTL and history 1, so each renewal is a fresh message that ages out on
//! its own. The holder renews by compare-and-set on the revision every TTL/3;
//! leadership is decided only by CAS results, never by a read. The epoch is the
//! revision at acquisition. Followers watch the key and try to take it as soon as
//! it is released or ages out (a limit marker), and on a timer as a backstop.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_protocol::{LEADER_BUCKET, LEADER_KEY, LeaderChanged, LeaderInfo, ShoalError, Subjects};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use shoal_runtime::JetStreamError;
use shoal_runtime::jetstream::open_or_create;

/// The lease's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub coordinator_id: String,
    /// Absent in the record that acquired the lease: its own revision is the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    pub since: DateTime<Utc>,
    /// Set by a leader handing leadership to the named replica (`leader.promote`);
    /// only that replica may take it over (by CAS on this revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_to: Option<String>,
}

/// This replica's hold on the lease.
#[derive(Clone, Debug)]
pub struct Held {
    pub epoch: u64,
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
    /// Give up the lease and stop competing: the coordinator is shutting down.
    Stop(oneshot::Sender<()>),
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

    /// Releases the lease and ends the lease task, so this replica does not win the
    /// key back while it shuts down.
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

struct LeaseTask {
    kv: kv::Store,
    client: async_nats::Client,
    subjects: Subjects,
    me: String,
    ttl: Duration,
    view: watch::Sender<LeaseView>,
    /// The revision of our latest lease record, while we hold it.
    revision: u64,
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
    let task = LeaseTask {
        kv,
        client,
        subjects,
        me,
        ttl,
        view: view_tx,
        revision: 0,
    };
    let join = tokio::spawn(task.run(cmd_rx));
    (
        LeaseHandle {
            view: view_rx,
            commands: cmd_tx,
        },
        join,
    )
}

impl LeaseTask {
    async fn run(mut self, mut commands: mpsc::Receiver<LeaseCommand>) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch: Option<kv::Watch> = None;
        loop {
            if watch.is_none() {
                match self.kv.watch_with_history(LEADER_KEY).await {
                    Ok(w) => watch = Some(w),
                    Err(e) => debug!(error = %e, "cannot watch the lease key yet"),
                }
            }
            let next_entry = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(LeaseCommand::Resign(reason, done)) => {
                        self.release(reason).await;
                        let _ = done.send(());
                    }
                    Some(LeaseCommand::Handoff(target, reply)) => {
                        let _ = reply.send(self.handoff(&target).await);
                    }
                    Some(LeaseCommand::Stop(done)) => {
                        self.release("coordinator stopping").await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.release("coordinator stopping").await;
                        return;
                    }
                },
                entry = next_entry => match entry {
                    Some(Ok(entry)) => self.observe(entry).await,
                    Some(Err(e)) => {
                        warn!(error = %e, "lease watch failed, watching again");
                        watch = None;
                    }
                    None => watch = None,
                },
                _ = tick.tick() => {
                    if self.held().is_some() {
                        self.renew().await;
                    } else {
                        self.acquire().await;
                    }
                }
            }
        }
    }

    fn held(&self) -> Option<Held> {
        self.view.borrow().held.clone()
    }

    /// The lease record to write; an encoding failure (never expected of this plain
    /// struct) writes nothing, rather than an empty record.
    fn value(
        &self,
        epoch: Option<u64>,
        since: DateTime<Utc>,
        handoff_to: Option<&str>,
    ) -> Result<bytes::Bytes, serde_json::Error> {
        let value = LeaseValue {
            coordinator_id: self.me.clone(),
            epoch,
            since,
            handoff_to: handoff_to.map(str::to_string),
        };
        serde_json::to_vec(&value).map(bytes::Bytes::from)
    }

    async fn acquire(&mut self) {
        let since = Utc::now();
        let sent = Instant::now();
        let value = match self.value(None, since, None) {
            Ok(value) => value,
            Err(e) => return warn!(error = %e, "lease record not encoded"),
        };
        match self.kv.create(LEADER_KEY, value).await {
            Ok(revision) => self.win(revision, since, sent).await,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => debug!(error = %e, "lease not acquired"),
        }
    }

    /// Takes over a lease handed to us, by CAS on the handoff record's revision.
    async fn claim(&mut self, revision: u64) {
        let since = Utc::now();
        let sent = Instant::now();
        let value = match self.value(None, since, None) {
            Ok(value) => value,
            Err(e) => return warn!(error = %e, "lease record not encoded"),
        };
        match self.kv.update(LEADER_KEY, value, revision).await {
            Ok(new_revision) => self.win(new_revision, since, sent).await,
            Err(e) => warn!(error = %e, "could not take over the handed-off lease"),
        }
    }

    async fn win(&mut self, revision: u64, since: DateTime<Utc>, sent: Instant) {
        self.revision = revision;
        let info = LeaderInfo {
            coordinator_id: self.me.clone(),
            epoch: revision,
            since,
        };
        let previous = self
            .view
            .borrow()
            .leader
            .as_ref()
            .map(|l| l.coordinator_id.clone());
        self.view.send_modify(|v| {
            v.leader = Some(info.clone());
            v.held = Some(Held {
                epoch: revision,
                since,
                valid_until: sent + self.ttl,
                token: CancellationToken::new(),
            });
        });
        info!(epoch = revision, "won the leader lease");
        self.announce(Some(info), previous).await;
    }

    async fn renew(&mut self) {
        let Some(held) = self.held() else { return };
        let sent = Instant::now();
        let result = match self.value(Some(held.epoch), held.since, None) {
            Ok(value) => {
                let update = self.kv.update(LEADER_KEY, value, self.revision);
                tokio::time::timeout(self.ttl / 3, update).await
            }
            Err(e) => {
                warn!(error = %e, "lease record not encoded");
                Ok(Err(kv::UpdateError::with_source(
                    kv::UpdateErrorKind::Other,
                    e,
                )))
            }
        };
        match result {
            Ok(Ok(revision)) => {
                self.revision = revision;
                self.view.send_modify(|v| {
                    if let Some(h) = v.held.as_mut() {
                        h.valid_until = sent + self.ttl;
                    }
                });
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.lose("the lease was taken over").await;
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                if Instant::now() >= held.valid_until {
                    warn!(error, "lease renewal failed past its ttl");
                    self.lose("the lease could not be renewed in time").await;
                } else {
                    warn!(error, "lease renewal failed, retrying");
                }
            }
        }
    }

    async fn observe(&mut self, entry: kv::Entry) {
        match entry.operation {
            kv::Operation::Put => {
                let Ok(value) = serde_json::from_slice::<LeaseValue>(&entry.value) else {
                    warn!(revision = entry.revision, "unreadable lease record");
                    return;
                };
                let info = LeaderInfo {
                    coordinator_id: value.coordinator_id.clone(),
                    epoch: value.epoch.unwrap_or(entry.revision),
                    since: value.since,
                };
                let held = self.held();
                self.view.send_modify(|v| v.leader = Some(info.clone()));
                match held {
                    Some(h) if entry.revision > self.revision => {
                        if value.coordinator_id == self.me
                            && value.epoch == Some(h.epoch)
                            && value.handoff_to.is_none()
                        {
                            // Our renewal landed although its reply was lost.
                            self.revision = entry.revision;
                        } else {
                            self.lose("another coordinator holds the lease").await;
                        }
                    }
                    Some(_) => {}
                    None if value.handoff_to.as_deref() == Some(self.me.as_str()) => {
                        self.claim(entry.revision).await;
                    }
                    None => {}
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.view.send_modify(|v| v.leader = None);
                if self.held().is_none() {
                    self.acquire().await;
                }
            }
        }
    }

    /// Stops leading without touching the key (it is someone else's, or gone).
    async fn lose(&mut self, reason: &'static str) {
        let Some(held) = self.held() else { return };
        held.token.cancel();
        self.view.send_modify(|v| {
            v.held = None;
            if v.leader
                .as_ref()
                .is_some_and(|l| l.coordinator_id == self.me)
            {
                v.leader = None;
            }
        });
        warn!(epoch = held.epoch, reason, "lost the leader lease");
    }

    async fn release(&mut self, reason: &'static str) {
        let Some(held) = self.held() else { return };
        held.token.cancel();
        self.view.send_modify(|v| {
            v.held = None;
            v.leader = None;
        });
        if let Err(e) = self
            .kv
            .delete_expect_revision(LEADER_KEY, Some(self.revision))
            .await
        {
            debug!(error = %e, "lease not deleted (already someone else's)");
        }
        info!(epoch = held.epoch, reason, "released the leader lease");
        self.announce(None, Some(self.me.clone())).await;
    }

    async fn handoff(&mut self, target: &str) -> Result<(), ShoalError> {
        let Some(held) = self.held() else {
            return Err(ShoalError::not_leader(
                "this coordinator is no longer the leader",
            ));
        };
        let value = self
            .value(Some(held.epoch), held.since, Some(target))
            .map_err(|e| ShoalError::internal(format!("lease record not encoded: {e}")))?;
        match self.kv.update(LEADER_KEY, value, self.revision).await {
            Ok(_) => {
                held.token.cancel();
                self.view.send_modify(|v| v.held = None);
                info!(epoch = held.epoch, target, "handed the leader lease over");
                Ok(())
            }
            Err(e) => {
                self.lose("the lease was lost during a handoff").await;
                Err(ShoalError::not_leader(format!("handoff failed: {e}")))
            }
        }
    }

    async fn announce(&self, leader: Option<LeaderInfo>, previous: Option<String>) {
        let message = LeaderChanged {
            leader,
            previous,
            at: Utc::now(),
        };
        if let Ok(body) = serde_json::to_vec(&message)
            && let Err(e) = self
                .client
                .publish(self.subjects.coordinator_leader_changed(), body.into())
                .await
        {
            debug!(error = %e, "leader change not published");
        }
    }
}
