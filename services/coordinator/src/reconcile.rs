//! The leader's moves: agents off offline, gone and draining nodes, and waiting
//! agents onto nodes that can take them. Runs when membership changes in a way that
//! matters (a node joins, recovers, fails, drains, is undrained, changes its labels or
//! capacity), when a slot is freed, and on a slow backstop sweep. Waiting agents are
//! only sent to the balancer when the membership shows a free slot for them, so a full
//! cluster costs nothing while it stays full.

use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_protocol::{ErrorCode, SelectRequest, ShoalError};
use tracing::{debug, info, warn};

use crate::constraints::Rules;
use crate::failover::{Move, plan_moves};
use crate::leader::{Leader, RETRY_MIN};
use crate::picker::Pick;
use crate::pipeline::Reply;
use crate::state::MoveKind;

impl Leader {
    pub(crate) async fn reconcile(&mut self) {
        let now = Instant::now();
        self.next_sweep = now + self.ctx.cfg.sweep_interval;
        if !self.ctx.lease.is_leader() {
            return;
        }
        let (offline, total) = self.ctx.members.read(|m| m.offline_share());
        match self.guard.update_pause(offline, total) {
            Some(true) => warn!(offline, total, "mass failure: pausing reassignments"),
            Some(false) => info!(offline, total, "mass failure over: resuming reassignments"),
            None => {}
        }
        let judge_dead = !self.guard.in_grace(now);
        if let Some(end) = self.guard.grace_ends(now) {
            // A node that died during the grace is judged the moment it ends, not
            // up to a sweep interval later.
            self.next_sweep = self.next_sweep.min(end);
        }
        let moves = self
            .ctx
            .members
            .read(|m| plan_moves(&self.state, m, judge_dead));
        if !judge_dead && !self.grace_logged {
            info!(window = ?self.ctx.cfg.detection_window, "new term: judging no node dead for one detection window");
            self.grace_logged = true;
        }
        if self.guard.paused() {
            return;
        }
        if moves.is_empty() {
            // Nothing must move: even the cluster, if asked to.
            return self.rebalance_round(now);
        }
        // Orphans are recorded as such first (the balancer stops counting them on
        // their dead node); then the balancer is asked for every placeable agent at
        // once: one round trip for the batch instead of one per agent. Agents with
        // group rules are placed after, one at a time, each seeing the last.
        let mut todo = Vec::new();
        let mut grouped = Vec::new();
        for mv in moves {
            if !self.ctx.lease.is_leader() {
                return;
            }
            if !self.guard.take(Instant::now()) {
                self.next_sweep = Instant::now() + Duration::from_millis(100);
                break;
            }
            let Some(current) = self.state.get(&mv.agent_name).cloned() else {
                continue;
            };
            if current.node_id != mv.from {
                continue;
            }
            if mv.leave && (mv.kind == MoveKind::Orphan || !mv.placeable) {
                self.wait(&mv);
            }
            if mv.placeable {
                let request = SelectRequest {
                    service: current.service.clone(),
                    labels: current.labels.clone(),
                    strategy: None,
                    exclude: if mv.leave {
                        vec![mv.from.clone()]
                    } else {
                        Vec::new()
                    },
                    resources: current.resources,
                };
                match Rules::of_assignment(&current) {
                    Some(rules) => grouped.push((mv, request, rules)),
                    None => todo.push((mv, request)),
                }
            }
        }
        let mut refused = 0usize;
        if !todo.is_empty() {
            let (moves, requests): (Vec<Move>, Vec<SelectRequest>) = todo.into_iter().unzip();
            let picks = self.picker.pick_all(requests).await;
            for (mv, pick) in moves.into_iter().zip(picks) {
                if !self.ctx.lease.is_leader() {
                    return;
                }
                let placed = pick.and_then(|pick| {
                    let count = self.state.count_on(&pick.node_id);
                    if self.ctx.members.read(|m| m.refuses(&pick.node_id, count)) {
                        // Picked before the node filled up or went away: ask again shortly.
                        Err(ShoalError::no_capacity(
                            "the pick is full, offline or draining",
                        ))
                    } else {
                        Ok(pick)
                    }
                });
                if !self.settle_move(&mv, placed) {
                    refused += 1;
                }
            }
        }
        for (mv, request, rules) in grouped {
            if !self.ctx.lease.is_leader() {
                return;
            }
            let placed = self.pick_following(&rules, &mv.agent_name, &request).await;
            if !self.settle_move(&mv, placed) {
                refused += 1;
            }
        }
        // The membership said these fit but the balancer disagreed (its view trails
        // by a moment, or counts agents the node reports): try again soon, backing off.
        if refused > 0 {
            self.next_sweep = self.next_sweep.min(Instant::now() + self.retry_backoff);
            self.retry_backoff = (self.retry_backoff * 2).min(self.ctx.cfg.sweep_interval);
        } else {
            self.retry_backoff = RETRY_MIN;
        }
    }

    /// Moves `mv`'s agent to its pick, or marks it waiting when there is none;
    /// false then.
    fn settle_move(&mut self, mv: &Move, pick: Result<Pick, ShoalError>) -> bool {
        let pick = match pick {
            Ok(pick) => pick,
            Err(e) => {
                if e.code == ErrorCode::NoCapacity {
                    debug!(agent_name = %mv.agent_name, error = %e, "no node for agent yet");
                } else {
                    warn!(agent_name = %mv.agent_name, from = %mv.from, error = %e, "cannot move agent yet");
                }
                self.wait(mv);
                return false;
            }
        };
        let change = self.state.move_change(
            &self.author,
            &mv.agent_name,
            Some(&pick.node_id),
            mv.kind,
            Some(pick.why),
            Utc::now(),
        );
        if let Some(change) = change {
            info!(
                agent_name = %change.agent_name,
                from = %mv.from,
                to = change.node_id.as_deref().unwrap_or("-"),
                action = change.action.as_str(),
                reason = %change.reason,
                "moving agent"
            );
            self.record(change, Reply::None);
        }
        true
    }

    /// Records that `mv`'s agent waits for a node (nothing if it already does, or if
    /// it may stay where it is).
    fn wait(&mut self, mv: &Move) {
        if !mv.leave {
            return;
        }
        let change = self.state.move_change(
            &self.author,
            &mv.agent_name,
            None,
            mv.kind,
            None,
            Utc::now(),
        );
        if let Some(change) = change {
            self.record(change, Reply::None);
        }
    }
}
