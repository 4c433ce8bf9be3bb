//! One node as a registry replica sees it — what the membership bucket holds plus
//! what this replica observed (heartbeats, announces, goodbyes, dropped connections) —
//! and the status machine deciding what, if anything, to write next. Pure: time is
//! passed in, writes are returned as [`Plan`]s for the caller to carry out.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shoal_protocol::{Announce, Leave, Node, NodeEventKind, NodeStatus};

use crate::model::{self, Metrics};

/// Liveness timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub interval: Duration,
    pub suspect_after: Duration,
    pub offline_after: Duration,
    pub retention: Duration,
    pub metrics_snapshot: Duration,
}

impl Thresholds {
    /// Heartbeats arriving this soon after a connection-closed advisory may have been
    /// in flight before it (the advisory comes over another connection): they do not
    /// prove the node is back.
    pub fn quarantine(&self) -> Duration {
        self.interval / 2
    }

    /// How often time-driven transitions are checked.
    pub fn tick(&self) -> Duration {
        (self.interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(100))
    }

    /// The thresholds for a node that heartbeats every `seconds` (its declared
    /// `heartbeat_interval`): suspect and offline after the same number of missed
    /// heartbeats as any node, counted at its pace, and never sooner than at the
    /// cluster's interval. Quarantine, tick, retention and snapshots stay the
    /// cluster's. A value no request could carry (from a hand-edited record) is
    /// clamped to the protocol's bounds rather than trusted.
    pub fn at_pace(&self, seconds: Option<f64>) -> Thresholds {
        let own = seconds
            .map(|s| s.min(shoal_protocol::validate::MAX_HEARTBEAT_INTERVAL_S))
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        match own {
            Some(own) if own > self.interval => {
                let factor = own.as_secs_f64() / self.interval.as_secs_f64();
                Thresholds {
                    suspect_after: self.suspect_after.mul_f64(factor),
                    offline_after: self.offline_after.mul_f64(factor),
                    ..*self
                }
            }
            _ => *self,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            interval: Duration::from_secs(1),
            suspect_after: Duration::from_secs(2),
            offline_after: Duration::from_secs(3),
            retention: Duration::from_secs(600),
            metrics_snapshot: Duration::from_secs(10),
        }
    }
}

/// The bucket's value for a node and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub node: Node,
    pub revision: u64,
}

/// A KV operation, compare-and-set on the revision this replica last saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update(u64),
    Delete(u64),
}

/// The event a write stands for, published only if the write wins.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: NodeEventKind,
    pub previous: Option<NodeStatus>,
    pub reason: Option<String>,
}

/// A write to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: String,
    pub op: Op,
    /// The value to write (for a delete: the node as it was).
    pub node: Node,
    pub change: Option<Change>,
    /// The announce this write consumes.
    pub announce: Option<Announce>,
    /// Whether this write consumes a pending goodbye.
    pub leave: bool,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Written(u64),
    Deleted,
    /// Another writer got there first; the fresh entry (revision, value) if read.
    Conflict(Option<(u64, Option<Box<Node>>)>),
    Failed,
}

/// Delay before retrying a write that failed for a reason other than a conflict.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Member {
    pub stored: Option<Stored>,
    /// Highest bucket revision seen for this key, puts and deletes alike.
    pub seen_revision: u64,
    /// When this replica learned the stored value's revision.
    pub stored_at: Instant,
    /// Metrics of the last heartbeat.
    pub live: Option<Metrics>,
    /// Last heartbeat or announce.
    pub heard_at: Option<Instant>,
    pub heard_utc: Option<DateTime<Utc>>,
    /// Silence is counted from here at the earliest: this replica's start, or the end
    /// of its own outage, so it never condemns a node for what it could not hear.
    pub grace_from: Instant,
    pub disconnected_at: Option<Instant>,
    pub announce: Option<Announce>,
    pub leave: Option<Leave>,
    /// Spreads metrics snapshots of many nodes over time: a snapshot is due after
    /// `(1 + phase / 2)` snapshot periods, with `phase` in `0..1` from the id.
    pub snapshot_phase: f64,
    pub writing: bool,
    pub dirty: bool,
    pub retry_at: Option<Instant>,
    pub sync_asked_at: Option<Instant>,
}

impl Member {
    pub fn new(id: &str, now: Instant) -> Member {
        Member {
            stored: None,
            seen_revision: 0,
            stored_at: now,
            live: None,
            heard_at: None,
            heard_utc: None,
            grace_from: now,
            disconnected_at: None,
            announce: None,
            leave: None,
            snapshot_phase: phase(id),
            writing: false,
            dirty: false,
            retry_at: None,
            sync_asked_at: None,
        }
    }

    /// The node as served: the stored record with the latest heartbeat's metrics.
    pub fn served(&self) -> Option<Node> {
        let mut node = self.stored.as_ref()?.node.clone();
        self.overlay(&mut node);
        Some(node)
    }

    /// The stored record and the agent count it is served with, for counting
    /// without a copy.
    pub fn counted(&self) -> Option<(&Node, u32)> {
        let node = &self.stored.as_ref()?.node;
        let agents = match (&self.live, self.heard_utc) {
            _ if model::runs_nothing(node.status) => 0,
            (Some(m), Some(_)) => m.active_agents,
            _ => node.active_agents,
        };
        Some((node, agents))
    }

    fn overlay(&self, node: &mut Node) {
        if let (Some(m), Some(seen)) = (&self.live, self.heard_utc) {
            model::apply_metrics(node, m, seen);
        } else if let Some(seen) = self.heard_utc
            && seen > node.last_seen
        {
            node.last_seen = seen;
        }
    }

    /// A bucket value (or deletion) at `revision`, from the watch or a re-read.
    pub fn apply_entry(&mut self, revision: u64, node: Option<Node>, now: Instant) {
        if revision <= self.seen_revision {
            return;
        }
        self.seen_revision = revision;
        self.stored = node.map(|node| Stored { node, revision });
        self.stored_at = now;
    }

    /// The next write, if one is due. `None` while a write is in flight (the member is
    /// then marked dirty and planned again when it ends) or backing off after a failure.
    pub fn plan(
        &mut self,
        id: &str,
        now: Instant,
        now_utc: DateTime<Utc>,
        th: &Thresholds,
    ) -> Option<Plan> {
        if self.writing {
            self.dirty = true;
            return None;
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let plan = self.next_write(id, now, now_utc, th)?;
        self.writing = true;
        Some(plan)
    }

    fn next_write(
        &mut self,
        id: &str,
        now: Instant,
        now_utc: DateTime<Utc>,
        th: &Thresholds,
    ) -> Option<Plan> {
        if let Some(plan) = self.plan_leave(id) {
            return Some(plan);
        }
        if let Some(plan) = self.plan_announce(id, now_utc) {
            return Some(plan);
        }
        let stored = self.stored.as_ref()?;
        let status = stored.node.status;
        if matches!(status, NodeStatus::Offline | NodeStatus::Left)
            && (now_utc - stored.node.last_seen)
                .to_std()
                .unwrap_or_default()
                > th.retention
        {
            return Some(Plan {
                id: id.to_string(),
                op: Op::Delete(stored.revision),
                node: stored.node.clone(),
                change: Some(change(NodeEventKind::Pruned, status, "retention elapsed")),
                announce: None,
                leave: false,
            });
        }
        if status == NodeStatus::Left || (stored.node.manual && self.heard_at.is_none()) {
            // Gone for good, or registered by hand and never heartbeating: no liveness.
            return None;
        }
        if let Some(plan) = self.plan_liveness(id, now, &self.paced(th)) {
            return Some(plan);
        }
        self.plan_metrics(id, now, th)
    }

    fn plan_leave(&mut self, id: &str) -> Option<Plan> {
        let leave = self.leave.as_ref()?;
        let Some(stored) = self
            .stored
            .as_ref()
            .filter(|s| s.node.status != NodeStatus::Left)
        else {
            self.leave = None;
            return None;
        };
        let reason = leave.reason.clone().unwrap_or_else(|| "left".into());
        let previous = stored.node.status;
        let revision = stored.revision;
        let mut node = stored.node.clone();
        self.overlay(&mut node);
        model::set_status(&mut node, NodeStatus::Left);
        Some(Plan {
            id: id.to_string(),
            op: Op::Update(revision),
            node,
            change: Some(change(NodeEventKind::Left, previous, &reason)),
            announce: None,
            leave: true,
        })
    }

    fn plan_announce(&mut self, id: &str, now_utc: DateTime<Utc>) -> Option<Plan> {
        let announce = self.announce.clone()?;
        let Some(stored) = &self.stored else {
            let mut node = model::from_announce(&announce, now_utc);
            self.overlay(&mut node);
            return Some(Plan {
                id: id.to_string(),
                op: Op::Create,
                node,
                change: Some(Change {
                    kind: NodeEventKind::Joined,
                    previous: None,
                    reason: None,
                }),
                announce: Some(announce),
                leave: false,
            });
        };
        let mut node = stored.node.clone();
        let changed = model::apply_identity(&mut node, &announce);
        let previous = node.status;
        let change = if !model::is_alive(previous) {
            let alive = model::alive_status(&node);
            model::set_status(&mut node, alive);
            let kind = if previous == NodeStatus::Left {
                NodeEventKind::Joined
            } else {
                NodeEventKind::Recovered
            };
            Some(change(kind, previous, "announced"))
        } else if changed {
            Some(change(NodeEventKind::Updated, previous, "metadata changed"))
        } else {
            None
        };
        let Some(change) = change else {
            self.announce = None;
            return None;
        };
        let revision = stored.revision;
        self.overlay(&mut node);
        Some(Plan {
            id: id.to_string(),
            op: Op::Update(revision),
            node,
            change: Some(change),
            announce: Some(announce),
            leave: false,
        })
    }

    /// Whether silence alone makes this member suspect (alive now) or offline
    /// (suspect now) at `now`: what a replica that may itself be cut off checks
    /// before it condemns anyone.
    pub fn falls_silent(&self, now: Instant, th: &Thresholds) -> bool {
        let Some(stored) = &self.stored else {
            return false;
        };
        let th = self.paced(th);
        let silent = now.saturating_duration_since(self.silence_from());
        match stored.node.status {
            s if model::is_alive(s) => silent > th.suspect_after,
            NodeStatus::Suspect => silent > th.offline_after,
            _ => false,
        }
    }

    /// The thresholds this node is judged by: the cluster's, at the node's own pace
    /// when its record declares one ([`Thresholds::at_pace`]). Read from the record,
    /// so every replica, and one started later, judges the node alike.
    fn paced(&self, th: &Thresholds) -> Thresholds {
        th.at_pace(self.stored.as_ref().and_then(|s| s.node.heartbeat_interval))
    }

    /// Where silence is counted from: the last heartbeat, or the grace given.
    fn silence_from(&self) -> Instant {
        self.heard_at
            .map_or(self.grace_from, |h| h.max(self.grace_from))
    }

    fn plan_liveness(&self, id: &str, now: Instant, th: &Thresholds) -> Option<Plan> {
        let stored = self.stored.as_ref()?;
        let status = stored.node.status;
        let silent = now.saturating_duration_since(self.silence_from());
        let heard_since_disconnect = self
            .disconnected_at
            .is_none_or(|d| self.heard_at.is_some_and(|h| h > d + th.quarantine()));
        let (target, reason) = if silent > th.offline_after {
            (
                NodeStatus::Offline,
                format!("no heartbeat for {silent:.1?}"),
            )
        } else if !heard_since_disconnect {
            (NodeStatus::Suspect, "connection closed".to_string())
        } else if silent > th.suspect_after {
            (
                NodeStatus::Suspect,
                format!("no heartbeat for {silent:.1?}"),
            )
        } else {
            (model::alive_status(&stored.node), String::new())
        };
        let kind = match (model::is_alive(status), target) {
            (_, NodeStatus::Offline) if status != NodeStatus::Offline => NodeEventKind::Offline,
            (true, NodeStatus::Suspect) => NodeEventKind::Suspect,
            // Back only on a heartbeat heard after this replica learned the node was
            // not alive: a heartbeat in flight when it died proves nothing.
            (false, t)
                if model::is_alive(t) && self.heard_at.is_some_and(|h| h > self.stored_at) =>
            {
                NodeEventKind::Recovered
            }
            _ => return None,
        };
        let reason = if kind == NodeEventKind::Recovered {
            "heartbeats resumed".to_string()
        } else {
            reason
        };
        let mut node = stored.node.clone();
        // Status first: the metrics overlay shows agents only on a live node.
        model::set_status(&mut node, target);
        self.overlay(&mut node);
        Some(Plan {
            id: id.to_string(),
            op: Op::Update(stored.revision),
            node,
            change: Some(change(kind, status, &reason)),
            announce: None,
            leave: false,
        })
    }

    /// Capacity changes go out at once (placement depends on them); other metrics at
    /// most once per snapshot period, counted from the last write by any replica.
    fn plan_metrics(&self, id: &str, now: Instant, th: &Thresholds) -> Option<Plan> {
        let stored = self.stored.as_ref()?;
        let live = self.live.as_ref()?;
        if !model::is_alive(stored.node.status) {
            return None;
        }
        let capacity_changed = live.active_agents != stored.node.active_agents;
        let snapshot_due = now.saturating_duration_since(self.stored_at)
            >= th.metrics_snapshot.mul_f64(1.0 + self.snapshot_phase / 2.0)
            && model::metrics_differ(&stored.node, live);
        if !capacity_changed && !snapshot_due {
            return None;
        }
        let mut node = stored.node.clone();
        self.overlay(&mut node);
        Some(Plan {
            id: id.to_string(),
            op: Op::Update(stored.revision),
            node,
            change: None,
            announce: None,
            leave: false,
        })
    }

    /// Records how `plan`'s write ended; true if the member should be planned again
    /// at once (something changed while the write was in flight, or it lost a race).
    pub fn finish(&mut self, plan: &Plan, outcome: Outcome, now: Instant) -> bool {
        self.writing = false;
        let again = std::mem::take(&mut self.dirty);
        match outcome {
            Outcome::Written(revision) => {
                self.retry_at = None;
                if revision > self.seen_revision {
                    self.seen_revision = revision;
                    self.stored = Some(Stored {
                        node: plan.node.clone(),
                        revision,
                    });
                    self.stored_at = now;
                }
                self.consume(plan);
                again
            }
            Outcome::Deleted => {
                self.retry_at = None;
                self.stored = None;
                self.stored_at = now;
                self.consume(plan);
                again
            }
            Outcome::Conflict(fresh) => {
                if let Some((revision, node)) = fresh {
                    self.apply_entry(revision, node.map(|n| *n), now);
                }
                true
            }
            Outcome::Failed => {
                self.retry_at = Some(now + RETRY_AFTER);
                false
            }
        }
    }

    fn consume(&mut self, plan: &Plan) {
        if plan.leave {
            self.leave = None;
        }
        if plan.announce.is_some() && self.announce == plan.announce {
            self.announce = None;
        }
    }
}

fn change(kind: NodeEventKind, previous: NodeStatus, reason: &str) -> Change {
    Change {
        kind,
        previous: Some(previous),
        reason: Some(reason.to_string()),
    }
}

/// A stable fraction in `0..1` derived from `id`.
fn phase(id: &str) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % 1_000_000) as f64 / 1_000_000.0
}
