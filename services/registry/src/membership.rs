//! Every node a replica knows, keyed by id: what comes in (heartbeats, announces,
//! goodbyes, advisories, bucket entries) and what goes out (plans, views). Pure.
//!
//! Members are kept by heartbeat partition ([`shoal_protocol::partition`]). A replica
//! follows every member in the bucket, but judges (plans writes for, asks to
//! announce) only the members of the partitions it owns; with one partition it owns
//! everything.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shoal_protocol::partition::partition_of;
use shoal_protocol::{
    Announce, Heartbeat, Leave, ListNodesRequest, Node, NodeStatus, RegistryStats,
};

use crate::member::{Member, Outcome, Plan, Stored, Thresholds};
use crate::model::{self, Metrics};

/// What a heartbeat asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Nothing beyond the in-memory update (the common case).
    Nothing,
    /// A write may be due (status or capacity changed): plan this member now.
    Kick,
    /// The node is not (or no longer) a member: it should announce itself.
    Unknown,
}

/// Metrics snapshots written per second at most, across the membership: a large
/// cluster's snapshot period stretches (10 s up to 10,000 nodes, 50 s at 50,000)
/// rather than its snapshots loading the bucket. Capacity and status changes are
/// written at once whatever the size; live metrics are always served from memory.
const SNAPSHOT_WRITES_PER_SEC: f64 = 1_000.0;

/// How often one node is asked to announce itself again.
const SYNC_EVERY: Duration = Duration::from_secs(2);

pub struct Membership {
    /// Members by partition, then by id.
    parts: Vec<HashMap<String, Member>>,
    /// Which partitions this replica judges.
    owned: Vec<bool>,
    th: Thresholds,
}

impl Membership {
    /// One partition, owned: this replica judges every member.
    pub fn new(th: Thresholds) -> Membership {
        let mut m = Membership::partitioned(th, 1);
        m.owned = vec![true];
        m
    }

    /// `partitions` partitions, none owned until [`Self::set_owned`].
    pub fn partitioned(th: Thresholds, partitions: u32) -> Membership {
        let n = partitions.max(1) as usize;
        Membership {
            parts: (0..n).map(|_| HashMap::new()).collect(),
            owned: vec![false; n],
            th,
        }
    }

    fn partition(&self, id: &str) -> usize {
        partition_of(id, self.parts.len() as u32) as usize
    }

    /// Whether this replica judges `id`.
    pub fn owns(&self, id: &str) -> bool {
        self.owned[self.partition(id)]
    }

    /// The partitions this replica judges from now on. Members of a partition it
    /// gains count their silence from `now`: their heartbeats went to another replica
    /// until now.
    pub fn set_owned(&mut self, owned: &[bool], now: Instant) {
        for (p, (&was, &is)) in self.owned.iter().zip(owned).enumerate() {
            if is && !was {
                for m in self.parts[p].values_mut() {
                    m.grace_from = m.grace_from.max(now);
                }
            }
        }
        self.owned = owned.to_vec();
    }

    fn get(&self, id: &str) -> Option<&Member> {
        self.parts[self.partition(id)].get(id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Member> {
        let p = self.partition(id);
        self.parts[p].get_mut(id)
    }

    fn all(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.parts.iter().flatten()
    }

    /// The members of the partitions this replica owns.
    fn judged_mut(&mut self) -> impl Iterator<Item = (&String, &mut Member)> {
        self.parts
            .iter_mut()
            .zip(&self.owned)
            .filter(|(_, owned)| **owned)
            .flat_map(|(part, _)| part.iter_mut())
    }

    fn judged(&self) -> impl Iterator<Item = &Member> {
        self.parts
            .iter()
            .zip(&self.owned)
            .filter(|(_, owned)| **owned)
            .flat_map(|(part, _)| part.values())
    }

    fn len(&self) -> usize {
        self.parts.iter().map(HashMap::len).sum()
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.th
    }

    /// The thresholds writes are planned with: the snapshot period stretched to
    /// keep snapshot writes under [`SNAPSHOT_WRITES_PER_SEC`].
    fn planning_thresholds(&self) -> Thresholds {
        let floor = Duration::from_secs_f64(self.len() as f64 / SNAPSHOT_WRITES_PER_SEC);
        Thresholds {
            metrics_snapshot: self.th.metrics_snapshot.max(floor),
            ..self.th
        }
    }

    fn member(&mut self, id: &str, now: Instant) -> &mut Member {
        let p = self.partition(id);
        let part = &mut self.parts[p];
        if !part.contains_key(id) {
            part.insert(id.to_string(), Member::new(id, now));
        }
        part.get_mut(id).expect("inserted above")
    }

    /// The hot path: no allocation for a known node, no I/O.
    pub fn on_heartbeat(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        now_utc: DateTime<Utc>,
    ) -> HeartbeatOutcome {
        let m = self.member(&hb.id, now);
        m.live = Some(Metrics::from(hb));
        m.heard_at = Some(now);
        m.heard_utc = Some(now_utc);
        match &m.stored {
            None if m.announce.is_none() => HeartbeatOutcome::Unknown,
            None => HeartbeatOutcome::Nothing,
            Some(s) if s.node.status == shoal_protocol::NodeStatus::Left => {
                HeartbeatOutcome::Unknown
            }
            Some(s)
                if !model::is_alive(s.node.status) || s.node.active_agents != hb.active_agents =>
            {
                HeartbeatOutcome::Kick
            }
            Some(_) => HeartbeatOutcome::Nothing,
        }
    }

    pub fn on_announce(&mut self, a: Announce, now: Instant, now_utc: DateTime<Utc>) {
        let m = self.member(&a.id, now);
        m.heard_at = Some(now);
        m.heard_utc = Some(now_utc);
        // It speaks on a new connection, whatever happened to an old one.
        m.disconnected_at = None;
        m.announce = Some(a);
    }

    /// False for a node this replica does not know.
    pub fn on_leave(&mut self, leave: Leave) -> bool {
        match self.get_mut(&leave.id) {
            Some(m) if m.stored.is_some() => {
                m.announce = None;
                m.leave = Some(leave);
                true
            }
            _ => false,
        }
    }

    /// A node's NATS connection closed. False for a node this replica does not know.
    pub fn on_disconnect(&mut self, id: &str, now: Instant) -> bool {
        match self.get_mut(id) {
            Some(m) if m.stored.is_some() => {
                m.disconnected_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// A bucket entry (`None`: deleted) from the watch or a re-read.
    pub fn apply_entry(&mut self, id: &str, revision: u64, node: Option<Node>, now: Instant) {
        self.member(id, now).apply_entry(revision, node, now);
    }

    /// The next write for one node this replica judges, if any (see [`Member::plan`]).
    pub fn plan(&mut self, id: &str, now: Instant, now_utc: DateTime<Utc>) -> Option<Plan> {
        if !self.owns(id) {
            return None;
        }
        let th = self.planning_thresholds();
        self.get_mut(id)?.plan(id, now, now_utc, &th)
    }

    /// Every write due now among the members this replica judges (time-driven
    /// transitions, snapshots, retries).
    pub fn due(&mut self, now: Instant, now_utc: DateTime<Utc>) -> Vec<Plan> {
        let th = self.planning_thresholds();
        self.judged_mut()
            .filter_map(|(id, m)| m.plan(id, now, now_utc, &th))
            .collect()
    }

    /// See [`Member::finish`].
    pub fn finish(&mut self, plan: &Plan, outcome: Outcome, now: Instant) -> bool {
        match self.get_mut(&plan.id) {
            Some(m) => m.finish(plan, outcome, now),
            None => false,
        }
    }

    /// A write made outside the planner (a request) succeeded.
    pub fn written(&mut self, id: &str, node: Node, revision: u64, now: Instant) {
        self.member(id, now).apply_entry(revision, Some(node), now);
    }

    /// A delete made outside the planner succeeded.
    pub fn deleted(&mut self, id: &str, now: Instant) {
        if let Some(m) = self.get_mut(id) {
            m.stored = None;
            m.stored_at = now;
        }
    }

    /// How many judged members silence alone would condemn now
    /// ([`Member::falls_silent`]).
    pub fn falling_silent(&self, now: Instant) -> usize {
        self.judged()
            .filter(|m| m.falls_silent(now, &self.th))
            .count()
    }

    /// After this replica could not hear anything (its own NATS outage), silence is
    /// counted afresh.
    pub fn grace_all(&mut self, now: Instant) {
        for m in self.parts.iter_mut().flat_map(HashMap::values_mut) {
            m.grace_from = now;
        }
    }

    /// Judged nodes heartbeating without being members, to ask to announce (each at
    /// most every 2 s); forgets unknown nodes silent for longer than the offline
    /// threshold.
    pub fn wanted_announces(&mut self, now: Instant) -> Vec<String> {
        let offline_after = self.th.offline_after;
        for part in &mut self.parts {
            part.retain(|_, m| {
                m.stored.is_some()
                    || m.writing
                    || m.announce.is_some()
                    || m.heard_at
                        .is_some_and(|h| now.saturating_duration_since(h) <= offline_after)
                    || now.saturating_duration_since(m.stored_at) <= offline_after
            });
        }
        let suspect_after = self.th.suspect_after;
        let mut wanted = Vec::new();
        for (id, m) in self.judged_mut() {
            let unknown = match &m.stored {
                None => m.announce.is_none() && m.heard_at.is_some(),
                Some(s) => s.node.status == shoal_protocol::NodeStatus::Left,
            };
            let heard_recently = m
                .heard_at
                .is_some_and(|h| now.saturating_duration_since(h) <= suspect_after);
            let asked_recently = m
                .sync_asked_at
                .is_some_and(|at| now.saturating_duration_since(at) < SYNC_EVERY);
            if unknown && heard_recently && !asked_recently {
                m.sync_asked_at = Some(now);
                wanted.push(id.clone());
            }
        }
        wanted
    }

    pub fn stored(&self, id: &str) -> Option<Stored> {
        self.get(id)?.stored.clone()
    }

    pub fn served(&self, id: &str) -> Option<Node> {
        self.get(id)?.served()
    }

    /// The nodes matching `filter`, by id, from after `filter.after`, at most
    /// `filter.limit`; and the id to continue after when more match. Only the page is
    /// copied: the filters read the stored records, which the latest heartbeat's
    /// metrics do not change.
    pub fn list(&self, filter: &ListNodesRequest) -> (Vec<Node>, Option<String>) {
        let after = filter.after.as_deref();
        let mut matching: Vec<(&String, &Member)> = self
            .all()
            .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
            .filter(|(_, m)| {
                m.stored
                    .as_ref()
                    .is_some_and(|s| model::matches(&s.node, filter))
            })
            .collect();
        let limit = filter.limit.map_or(usize::MAX, |l| l as usize);
        let more = matching.len() > limit;
        if more {
            matching.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            matching.truncate(limit);
        }
        matching.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let next = more.then(|| matching[limit - 1].0.clone());
        let nodes = matching.iter().filter_map(|(_, m)| m.served()).collect();
        (nodes, next)
    }

    /// How many members have each status, in [`NodeStatus::ALL`]'s order.
    pub fn count_by_status(&self) -> [usize; NodeStatus::ALL.len()] {
        let mut counts = [0; NodeStatus::ALL.len()];
        for (_, m) in self.all() {
            if let Some(s) = &m.stored
                && let Some(i) = NodeStatus::ALL.iter().position(|&x| x == s.node.status)
            {
                counts[i] += 1;
            }
        }
        counts
    }

    /// When the member was last heard from (a heartbeat or an announce).
    pub fn heard_at(&self, id: &str) -> Option<Instant> {
        self.get(id)?.heard_at
    }

    pub fn count(&self) -> usize {
        self.all().filter(|(_, m)| m.stored.is_some()).count()
    }

    pub fn stats(&self, rejected_messages: u64) -> RegistryStats {
        model::stats(
            self.all().filter_map(|(_, m)| m.counted()),
            rejected_messages,
        )
    }
}
