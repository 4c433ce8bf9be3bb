//! The leader's rebalancing: once no agent waits and no node must be emptied, agents
//! are moved from the fullest nodes to the emptiest ([`crate::rebalance_plan`]) while
//! the agent-count spread is above the threshold, at most `max_moves_per_minute`.
//! Runs with every reconcile (a node joined, recovered or was undrained, a slot was
//! freed, the backstop sweep) and when the settings change; never during a
//! mass-failure pause or a new term's grace window. Each move goes straight from one
//! node to the other (recorded as `rebalanced`), so no agent is ever unplaced.

use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_protocol::{RebalanceReport, RebalanceSettings, RebalanceStatus, ShoalError};
use tracing::info;

use crate::leader::Leader;
use crate::members::Members;
use crate::pipeline::Reply;
use crate::rebalance_plan::{self, Spread};
use crate::state::{MoveKind, State};
use crate::token_bucket::TokenBucket;

/// The threshold `rebalance.now` evens to: as even as whole agents allow.
const EVEN: u32 = 1;
/// Nodes of a rollout join over a heartbeat interval or so: the leader waits until
/// the set of nodes taking agents has not changed for this long, so that agents
/// are spread over all of them at once rather than moved onto the first and then
/// on again.
const SETTLE: Duration = Duration::from_secs(1);
/// ...but a stream of joins holds rebalancing no longer than this.
const MAX_SETTLE: Duration = Duration::from_secs(10);

/// Whether the nodes taking agents have stopped changing. Pure: time is passed in.
#[derive(Debug, Default)]
pub(crate) struct Settle {
    seen: Option<u64>,
    changed_at: Option<Instant>,
    unsettled_since: Option<Instant>,
}

impl Settle {
    /// None once the set `fingerprint` names has held for [`SETTLE`] (or changes
    /// have gone on for [`MAX_SETTLE`]), else when to look again.
    pub(crate) fn wait(&mut self, fingerprint: u64, now: Instant) -> Option<Instant> {
        if self.seen != Some(fingerprint) {
            self.seen = Some(fingerprint);
            self.changed_at = Some(now);
            self.unsettled_since.get_or_insert(now);
        }
        let (changed, since) = (self.changed_at?, self.unsettled_since?);
        let ready = (changed + SETTLE).min(since + MAX_SETTLE);
        if now >= ready {
            self.changed_at = None;
            self.unsettled_since = None;
            None
        } else {
            Some(ready)
        }
    }
}

/// The leader's rebalance budget, rebuilt when the settings' rate changes.
pub(crate) struct Budget {
    per_minute: u32,
    bucket: TokenBucket,
}

impl Budget {
    /// One second's worth of moves at once (at least one), refilled evenly.
    pub(crate) fn new(per_minute: u32, now: Instant) -> Budget {
        let rate = f64::from(per_minute) / 60.0;
        Budget {
            per_minute,
            bucket: TokenBucket::new(rate, rate.max(1.0), now),
        }
    }

    fn follow(&mut self, per_minute: u32, now: Instant) {
        if per_minute != self.per_minute {
            *self = Budget::new(per_minute, now);
        }
    }
}

/// Why moves are held back now, if they are: the same reasons for the leader's
/// rounds and for the status any replica reports.
pub(crate) fn held(
    state: &State,
    members: &Members,
    paused: bool,
    in_grace: bool,
) -> Option<&'static str> {
    if !members.is_loaded() {
        Some("the membership is still being read")
    } else if paused {
        Some("mass failure: reassignments and rebalancing are paused")
    } else if in_grace {
        Some("new term: no agent is moved for one detection window")
    } else if state.waiting_count() > 0 {
        Some("waiting agents are placed first")
    } else {
        None
    }
}

/// The status `rebalance.get` and `rebalance.set` report, from a replica's state.
pub(crate) fn status(
    settings: RebalanceSettings,
    state: &State,
    members: &Members,
    paused: bool,
) -> RebalanceStatus {
    let spread = rebalance_plan::spread(state, members);
    let pending = if spread.width() > settings.threshold {
        // Bounded: a status is cheap however uneven the cluster.
        rebalance_plan::plan(state, members, settings.threshold, 10_000, Utc::now())
            .moves
            .len()
    } else {
        0
    };
    let held = if !settings.enabled {
        Some("rebalancing is off (shoal rebalance enable)")
    } else if pending > 0 {
        held(state, members, paused, false)
    } else {
        None
    };
    RebalanceStatus {
        settings,
        nodes: spread.nodes,
        spread: spread.width(),
        max_agents_per_node: spread.max,
        min_agents_per_node: spread.min,
        pending_moves: pending,
        moves_total: state.rebalanced(),
        held: held.map(str::to_string),
    }
}

impl Leader {
    /// A rebalance round, if the settings ask for one; called once reconcile has
    /// nothing left to move.
    pub(crate) fn rebalance_round(&mut self, now: Instant) {
        let settings = self.ctx.rebalance.current();
        if settings.enabled {
            self.rebalance(settings, settings.threshold, now, true);
        }
    }

    /// `rebalance.now`: a round evening the cluster as far as the budget allows now,
    /// or with `dry_run` the whole plan.
    pub(crate) fn rebalance_now(&mut self, dry_run: bool) -> Result<RebalanceReport, ShoalError> {
        let now = Instant::now();
        let settings = self.ctx.rebalance.current();
        let (before, reason) = self.ctx.members.read(|m| {
            (
                rebalance_plan::spread(&self.state, m),
                held(
                    &self.state,
                    m,
                    self.guard.paused(),
                    self.guard.in_grace(now),
                ),
            )
        });
        if dry_run {
            let plan = self
                .ctx
                .members
                .read(|m| rebalance_plan::plan(&self.state, m, EVEN, usize::MAX, Utc::now()));
            let held = match reason {
                Some(reason) => Some(reason.to_string()),
                None => plan.moves.is_empty().then(|| nothing_to_do(before)),
            };
            return Ok(RebalanceReport {
                dry_run,
                spread_before: before.width(),
                spread_after: plan.after.width(),
                deferred: 0,
                held,
                moves: plan.moves,
            });
        }
        if let Some(reason) = reason {
            return Ok(RebalanceReport {
                dry_run,
                moves: Vec::new(),
                spread_before: before.width(),
                spread_after: before.width(),
                deferred: 0,
                held: Some(reason.to_string()),
            });
        }
        let moves = self.rebalance(settings, EVEN, now, false);
        let (after, deferred) = self.ctx.members.read(|m| {
            (
                rebalance_plan::spread(&self.state, m),
                rebalance_plan::plan(&self.state, m, EVEN, usize::MAX, Utc::now())
                    .moves
                    .len(),
            )
        });
        Ok(RebalanceReport {
            dry_run,
            held: moves.is_empty().then(|| {
                if deferred > 0 {
                    "the per-minute budget is spent: retry shortly".to_string()
                } else {
                    nothing_to_do(before)
                }
            }),
            moves,
            spread_before: before.width(),
            spread_after: after.width(),
            deferred,
        })
    }

    /// Makes the moves that bring the spread to `threshold`, as many as the budget
    /// allows; the rest follow on the next rounds. With `settle`, only once the
    /// nodes taking agents have stopped changing.
    fn rebalance(
        &mut self,
        settings: RebalanceSettings,
        threshold: u32,
        now: Instant,
        settle: bool,
    ) -> Vec<shoal_protocol::RebalanceMove> {
        let mut made = Vec::new();
        if !self.ctx.lease.is_leader() {
            return made;
        }
        let reason = self.ctx.members.read(|m| {
            held(
                &self.state,
                m,
                self.guard.paused(),
                self.guard.in_grace(now),
            )
        });
        if reason.is_some() {
            return made;
        }
        self.budget.follow(settings.max_moves_per_minute, now);
        let before = self
            .ctx
            .members
            .read(|m| rebalance_plan::spread(&self.state, m));
        if settle && let Some(when) = self.settle.wait(before.fingerprint, now) {
            self.next_sweep = self.next_sweep.min(when);
            return made;
        }
        while let Some(mv) = self
            .ctx
            .members
            .read(|m| rebalance_plan::next_move(&self.state, m, threshold))
        {
            if !self.budget.bucket.take(now) {
                // Come back when the next move is allowed.
                let wait = self.budget.bucket.wait(now).max(Duration::from_millis(10));
                self.next_sweep = self.next_sweep.min(now + wait);
                break;
            }
            let change = self.state.move_change(
                &self.author,
                &mv.agent_name,
                Some(&mv.to),
                MoveKind::Rebalance,
                None,
                Utc::now(),
            );
            let Some(change) = change else { break };
            if !self.record(change, Reply::None) {
                break;
            }
            made.push(mv);
        }
        if !made.is_empty() {
            let after = self
                .ctx
                .members
                .read(|m| rebalance_plan::spread(&self.state, m));
            self.ctx.metrics.rebalanced.inc_by(made.len() as u64);
            info!(
                moves = made.len(),
                spread_before = before.width(),
                spread_after = after.width(),
                "rebalanced"
            );
        }
        made
    }
}

fn nothing_to_do(spread: Spread) -> String {
    if spread.nodes < 2 {
        "fewer than two nodes take agents".to_string()
    } else if spread.width() <= EVEN {
        format!("the cluster is even (spread {})", spread.width())
    } else {
        format!(
            "no agent can move to narrow the spread of {} (pins, services, labels or group rules keep them)",
            spread.width()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebalancing_waits_for_joins_to_stop_but_not_forever() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Settle::default();
        // The first look, and each change, start a settle period.
        assert_eq!(s.wait(1, t0), Some(t0 + SETTLE));
        assert_eq!(s.wait(2, t0 + ms(500)), Some(t0 + ms(500) + SETTLE));
        assert_eq!(s.wait(2, t0 + ms(1400)), Some(t0 + ms(1500)));
        assert_eq!(s.wait(2, t0 + ms(1500)), None);
        assert_eq!(s.wait(2, t0 + ms(9000)), None, "settled stays settled");
        // A node joining every half second holds it for MAX_SETTLE at most.
        let start = t0 + ms(10_000);
        let mut at = start;
        let mut fp = 3;
        while s.wait(fp, at).is_some() {
            at += ms(500);
            fp += 1;
            assert!(at <= start + MAX_SETTLE, "held past {MAX_SETTLE:?}");
        }
        assert_eq!(at, start + MAX_SETTLE);
    }
}
