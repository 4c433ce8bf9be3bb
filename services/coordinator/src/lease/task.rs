//! The lease task: acquires, renews, watches, hands over and gives up the lease
//! key, and publishes what it knows as a [`LeaseView`]. See the module above.

use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use shoal_protocol::{LEADER_KEY, LeaderChanged, LeaderInfo, ShoalError, Subjects};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Held, LeaseCommand, LeaseValue, LeaseView};

/// How often the task looks at its NATS connection: a leader whose connection
/// dropped stops leading at once.
const HEALTH_CHECK: Duration = Duration::from_millis(50);

/// The last lease record seen on the key.
struct Seen {
    revision: u64,
    value: LeaseValue,
}

struct LeaseTask {
    kv: kv::Store,
    client: async_nats::Client,
    subjects: Subjects,
    me: String,
    ttl: Duration,
    view: watch::Sender<LeaseView>,
    /// The revision of our latest lease record (kept after losing it, to win it
    /// back if nobody wrote since).
    revision: u64,
    seen: Option<Seen>,
    /// The term this replica leads, once started.
    term: Option<u64>,
    /// The highest term seen on the key.
    last_term: u64,
    /// The holder when this replica won the lease, for the announcement.
    previous: Option<String>,
    connected: bool,
    /// Shutting down: never take the lease again.
    stopping: bool,
}

pub(super) async fn run(
    kv: kv::Store,
    client: async_nats::Client,
    subjects: Subjects,
    me: String,
    ttl: Duration,
    view: watch::Sender<LeaseView>,
    commands: mpsc::Receiver<LeaseCommand>,
) {
    let connected = client.connection_state() == State::Connected;
    let task = LeaseTask {
        kv,
        client,
        subjects,
        me,
        ttl,
        view,
        revision: 0,
        seen: None,
        term: None,
        last_term: 0,
        previous: None,
        connected,
        stopping: false,
    };
    task.run(commands).await
}

impl LeaseTask {
    async fn run(mut self, mut commands: mpsc::Receiver<LeaseCommand>) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = tokio::time::interval(HEALTH_CHECK);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    Some(LeaseCommand::Term(term)) => self.started(term).await,
                    Some(LeaseCommand::Depose(holder, reason)) => self.depose(&holder, reason).await,
                    Some(LeaseCommand::Confirm(reply)) => {
                        let held = self.held().is_some() && self.renew().await;
                        let _ = reply.send(held);
                    }
                    Some(LeaseCommand::Stop(done)) => {
                        self.stopping = true;
                        self.release("coordinator stopping").await;
                        let _ = done.send(());
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
                _ = health.tick() => self.check_connection().await,
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
            term: epoch.and(self.term),
            since,
            handoff_to: handoff_to.map(str::to_string),
        };
        serde_json::to_vec(&value).map(bytes::Bytes::from)
    }

    /// A leader whose connection dropped cannot know whether it still leads: it
    /// stops at once. Back on a connection, it takes the lease again if nobody
    /// wrote it since.
    async fn check_connection(&mut self) {
        let connected = self.client.connection_state() == State::Connected;
        if connected == self.connected {
            return;
        }
        self.connected = connected;
        if !connected {
            self.lose("the connection to nats dropped").await;
            return;
        }
        let ours = self.seen.as_ref().is_some_and(|s| {
            s.revision == self.revision
                && s.value.coordinator_id == self.me
                && s.value.handoff_to.is_none()
        });
        if ours && self.held().is_none() {
            self.take(
                self.revision,
                "won the leader lease back after reconnecting",
            )
            .await;
        }
    }

    async fn acquire(&mut self) {
        if !self.connected || self.stopping {
            return;
        }
        let since = Utc::now();
        let sent = Instant::now();
        let value = match self.value(None, since, None) {
            Ok(value) => value,
            Err(e) => return warn!(error = %e, "lease record not encoded"),
        };
        match self.kv.create(LEADER_KEY, value).await {
            Ok(revision) => self.win(revision, since, sent, "won the leader lease"),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => debug!(error = %e, "lease not acquired"),
        }
    }

    /// Takes the lease by CAS on `revision`: a handed-over lease, a deposed
    /// holder's, or our own after a reconnect.
    async fn take(&mut self, revision: u64, how: &'static str) -> bool {
        if self.stopping {
            return false;
        }
        let since = Utc::now();
        let sent = Instant::now();
        let value = match self.value(None, since, None) {
            Ok(value) => value,
            Err(e) => {
                warn!(error = %e, "lease record not encoded");
                return false;
            }
        };
        match self.kv.update(LEADER_KEY, value, revision).await {
            Ok(new_revision) => {
                self.win(new_revision, since, sent, how);
                true
            }
            Err(e) => {
                debug!(error = %e, how, "lease not taken");
                false
            }
        }
    }

    /// Takes the lease from `holder`, found gone, if the key is as last seen.
    async fn depose(&mut self, holder: &str, reason: &'static str) {
        if self.held().is_some() || !self.connected {
            return;
        }
        let Some(seen) = &self.seen else { return };
        if seen.value.coordinator_id != holder || seen.value.handoff_to.is_some() {
            return;
        }
        let revision = seen.revision;
        if self.take(revision, "deposed the leader").await {
            info!(holder, reason, "took over from a leader found gone");
        }
    }

    fn win(&mut self, revision: u64, since: DateTime<Utc>, sent: Instant, how: &'static str) {
        self.revision = revision;
        self.term = None;
        self.previous = self
            .view
            .borrow()
            .leader
            .as_ref()
            .map(|l| l.coordinator_id.clone());
        let info = LeaderInfo {
            coordinator_id: self.me.clone(),
            epoch: self.last_term + 1,
            since,
        };
        self.view.send_modify(|v| {
            v.leader = Some(info);
            v.handing_over = false;
            v.serving = false;
            v.held = Some(Held {
                revision,
                since,
                valid_until: sent + self.ttl,
                token: CancellationToken::new(),
            });
        });
        info!(revision, "{how}");
    }

    /// The term has started: write it into the lease at once and announce it.
    async fn started(&mut self, term: u64) {
        let Some(held) = self.held() else { return };
        self.term = Some(term);
        self.last_term = self.last_term.max(term);
        let info = LeaderInfo {
            coordinator_id: self.me.clone(),
            epoch: term,
            since: held.since,
        };
        self.view.send_modify(|v| {
            v.leader = Some(info.clone());
            v.serving = true;
        });
        self.renew().await;
        let previous = self.previous.take();
        self.announce(Some(info), previous).await;
    }

    /// Renews the lease; whether the renewal was stored.
    async fn renew(&mut self) -> bool {
        let Some(held) = self.held() else {
            return false;
        };
        let sent = Instant::now();
        let result = match self.value(Some(held.revision), held.since, None) {
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
                true
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.lose("the lease was taken over").await;
                false
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
                false
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
                if let Some(term) = value.term {
                    self.last_term = self.last_term.max(term);
                }
                let info = LeaderInfo {
                    coordinator_id: value.coordinator_id.clone(),
                    epoch: value.term.unwrap_or(self.last_term + 1),
                    since: value.since,
                };
                let held = self.held();
                let handing_over = value.handoff_to.is_some();
                let serving = value.term.is_some() && !handing_over;
                self.view.send_modify(|v| {
                    v.leader = Some(info.clone());
                    v.handing_over = handing_over;
                    v.serving = serving;
                });
                self.seen = Some(Seen {
                    revision: entry.revision,
                    value: value.clone(),
                });
                match held {
                    Some(h) if entry.revision > self.revision => {
                        if value.coordinator_id == self.me
                            && value.epoch == Some(h.revision)
                            && value.handoff_to.is_none()
                        {
                            // Our renewal landed although its reply was lost.
                            self.revision = entry.revision;
                        } else {
                            self.lose("another coordinator holds the lease").await;
                        }
                    }
                    Some(_) => {}
                    None if value.handoff_to.as_deref() == Some(self.me.as_str())
                        && !self
                            .take(entry.revision, "took over the handed-off lease")
                            .await =>
                    {
                        warn!("could not take over the handed-off lease");
                    }
                    None => {}
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.seen = None;
                self.view.send_modify(|v| {
                    v.leader = None;
                    v.handing_over = false;
                    v.serving = false;
                });
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
                v.serving = false;
            }
        });
        warn!(revision = held.revision, reason, "lost the leader lease");
    }

    async fn release(&mut self, reason: &'static str) {
        let Some(held) = self.held() else { return };
        held.token.cancel();
        self.view.send_modify(|v| {
            v.held = None;
            v.leader = None;
            v.serving = false;
        });
        if let Err(e) = self
            .kv
            .delete_expect_revision(LEADER_KEY, Some(self.revision))
            .await
        {
            debug!(error = %e, "lease not deleted (already someone else's)");
        }
        info!(
            revision = held.revision,
            reason, "released the leader lease"
        );
        self.announce(None, Some(self.me.clone())).await;
    }

    async fn handoff(&mut self, target: &str) -> Result<(), ShoalError> {
        let Some(held) = self.held() else {
            return Err(ShoalError::not_leader(
                "this coordinator is no longer the leader",
            ));
        };
        let value = self
            .value(Some(held.revision), held.since, Some(target))
            .map_err(|e| ShoalError::internal(format!("lease record not encoded: {e}")))?;
        match self.kv.update(LEADER_KEY, value, self.revision).await {
            Ok(_) => {
                held.token.cancel();
                self.view.send_modify(|v| {
                    v.held = None;
                    v.handing_over = true;
                    v.serving = false;
                });
                info!(
                    revision = held.revision,
                    target, "handed the leader lease over"
                );
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
