//! The leader's write requests: `assign` (pinned, or placed by the balancer),
//! `unassign`, `move` and `leader.promote`. Balancer picks run outside the decision
//! loop so that many are in flight at once; the loop alone checks each pick against
//! its state and appends, so the log stays the one serial point.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shoal_protocol::{
    AssignRequest, Assignment, ClientError, ErrorCode, MoveRequest, SelectRequest, ShoalError,
    UnassignReply, UnassignRequest,
};
use tokio::sync::{mpsc, oneshot};

use crate::commands::not_leader;
use crate::constraints::{self, Rules};
use crate::grouped;
use crate::leader::{Internal, Leader};
use crate::picker::Pick;
use crate::pipeline::Reply;
use crate::record::Explanation;
use crate::state::{MoveKind, State};

/// How many balancer picks a request may try before giving up.
pub(crate) const MAX_PICKS: u32 = 4;

pub(crate) type AssignmentTx = oneshot::Sender<Result<Assignment, ShoalError>>;

/// What a pick is for.
pub enum Want {
    Assign(AssignRequest),
    Move(MoveRequest),
}

impl Want {
    pub fn agent_name(&self) -> &str {
        match self {
            Want::Assign(req) => &req.agent_name,
            Want::Move(req) => &req.agent_name,
        }
    }
}

/// A request waiting on (or back from) the balancer.
pub struct Placement {
    want: Want,
    tx: AssignmentTx,
    attempt: u32,
    select: SelectRequest,
    /// The selections to try next when this one finds no capacity.
    alternatives: Vec<SelectRequest>,
    /// The group whose next placement waits for this one.
    group: Option<String>,
    result: Result<Pick, ShoalError>,
}

impl Placement {
    pub fn refuse(self) {
        let _ = self.tx.send(Err(not_leader()));
    }
}

pub(crate) fn no_assignment(agent_name: &str) -> ShoalError {
    ShoalError::not_found(format!("agent {agent_name:?} has no assignment"))
        .with_details(json!({ "agent_name": agent_name }))
}

impl Leader {
    pub(crate) async fn assign(&mut self, req: AssignRequest, tx: AssignmentTx) {
        if let Some(done) = self.state.answered(req.request_id.as_deref()) {
            // Answer only once whatever produced it is in the log.
            let done = done.clone();
            return self.pipeline.after_pending(Reply::Assign(tx, done));
        }
        if let Some(current) = self.state.get(&req.agent_name) {
            let answer = match &req.node_id {
                Some(pin) if *pin != current.node_id => Err(ShoalError::conflict(format!(
                    "agent {:?} is already on node {:?}: to move it, use move (shoal move {} --node {pin})",
                    current.agent_name, current.node_id, current.agent_name
                ))
                .with_details(json!({
                    "agent_name": current.agent_name,
                    "node_id": current.node_id,
                    "status": current.status,
                    "requested_node_id": pin,
                }))),
                _ => Ok(current.clone()),
            };
            return match answer {
                Ok(current) => self.pipeline.after_pending(Reply::Assign(tx, current)),
                Err(e) => drop(tx.send(Err(e))),
            };
        }
        match req.node_id.clone() {
            Some(pin) => {
                let checked = match self.check_pin(&pin, None).await {
                    Ok(()) => self.check_rules(Rules::of_request(&req), &req.agent_name, &pin),
                    Err(e) => Err(e),
                };
                match checked {
                    Ok(()) => self.commit_assign(req, tx, pin, "pinned", None),
                    Err(e) => drop(tx.send(Err(e))),
                }
            }
            None => self.place(Want::Assign(req), tx),
        }
    }

    pub(crate) async fn move_agent(&mut self, req: MoveRequest, tx: AssignmentTx) {
        if let Some(done) = self.state.answered(req.request_id.as_deref())
            && done.agent_name == req.agent_name
        {
            let done = done.clone();
            return self.pipeline.after_pending(Reply::Assign(tx, done));
        }
        let Some(current) = self.state.get(&req.agent_name).cloned() else {
            return drop(tx.send(Err(no_assignment(&req.agent_name))));
        };
        match req.node_id.clone() {
            Some(target) if target == current.node_id && !current.status.is_waiting() => {
                self.pipeline.after_pending(Reply::Assign(tx, current))
            }
            Some(target) => {
                // An agent waiting on its own node does not need a second slot there.
                let itself = (target == current.node_id).then_some(1);
                let checked = match self.check_pin(&target, itself).await {
                    Ok(()) => self.check_rules(
                        Rules::of_assignment(&current),
                        &current.agent_name,
                        &target,
                    ),
                    Err(e) => Err(e),
                };
                match checked {
                    Ok(()) => self.commit_move(req, tx, target, None),
                    Err(e) => drop(tx.send(Err(e))),
                }
            }
            None => self.place(Want::Move(req), tx),
        }
    }

    /// Whether `node` follows the group rules of `agent`, if it has any.
    fn check_rules(&self, rules: Option<Rules>, agent: &str, node: &str) -> Result<(), ShoalError> {
        let Some(rules) = rules else {
            return Ok(());
        };
        self.ctx
            .members
            .read(|m| constraints::check_node(&self.state, m, &rules, agent, node))
    }

    /// The selection `want` asks the balancer for before any group rule narrows it.
    pub(crate) fn base_select(&self, want: &Want) -> Result<SelectRequest, ShoalError> {
        Ok(match want {
            Want::Assign(req) => SelectRequest {
                service: req.service.clone(),
                labels: req.labels.clone(),
                strategy: None,
                exclude: Vec::new(),
                resources: req.resources,
            },
            Want::Move(req) => {
                let current = self
                    .state
                    .get(&req.agent_name)
                    .ok_or_else(|| no_assignment(&req.agent_name))?;
                SelectRequest {
                    service: current.service.clone(),
                    labels: current.labels.clone(),
                    strategy: None,
                    exclude: vec![current.node_id.clone()],
                    resources: current.resources,
                }
            }
        })
    }

    /// The group rules `want`'s agent follows, if any.
    pub(crate) fn rules_of(&self, want: &Want) -> Option<Rules> {
        match want {
            Want::Assign(req) => Rules::of_request(req),
            Want::Move(req) => self
                .state
                .get(&req.agent_name)
                .and_then(Rules::of_assignment),
        }
    }

    /// Whether `node` may take one more agent (`already` of its agents being the one
    /// placed). A node just joined may not be in the membership view yet: read it
    /// from the bucket before calling it unknown.
    async fn check_pin(&self, node: &str, already: Option<usize>) -> Result<(), ShoalError> {
        let count = self.state.count_on(node) - already.unwrap_or(0);
        let checked = self.ctx.members.read(|m| m.check_pin(node, count));
        if checked
            .as_ref()
            .is_err_and(|e| e.code == ErrorCode::NotFound)
            && self.ctx.members.fetch(node).await
        {
            return self.ctx.members.read(|m| m.check_pin(node, count));
        }
        checked
    }

    /// Asks the balancer for `select` from a task of its own (then for each of
    /// `alternatives` in turn while none has capacity); the answer comes back as
    /// `Internal::Placed`. `group`: the group whose placements wait for this one.
    pub(crate) fn spawn_select(
        &self,
        want: Want,
        tx: AssignmentTx,
        attempt: u32,
        select: SelectRequest,
        alternatives: Vec<SelectRequest>,
        group: Option<String>,
    ) {
        let (picker, loopback) = (self.picker.clone(), self.loopback.clone());
        tokio::spawn(async move {
            let result = picker.pick(select.clone()).await;
            let placement = Placement {
                want,
                tx,
                attempt,
                select,
                alternatives,
                group,
                result,
            };
            if let Err(mpsc::error::SendError(Internal::Placed(p))) =
                loopback.send(Internal::Placed(Box::new(placement))).await
            {
                p.refuse();
            }
        });
    }

    /// Checks the balancer's pick against the state as it is now (another request
    /// may have placed or moved the same agent, or filled the node, meanwhile); once
    /// the request is answered, its group's next placement starts.
    pub(crate) fn placed(&mut self, p: Placement) {
        let group = p.group.clone();
        if self.settle(p)
            && let Some(group) = group
        {
            self.release(&group);
        }
    }

    /// Answers the request of `p`, or asks the balancer again (false then).
    fn settle(&mut self, p: Placement) -> bool {
        let Placement {
            want,
            tx,
            attempt,
            mut select,
            mut alternatives,
            group,
            result,
        } = p;
        match &want {
            Want::Assign(req) => {
                if let Some(existing) = self.state.existing(req) {
                    self.pipeline.after_pending(Reply::Assign(tx, existing));
                    return true;
                }
            }
            Want::Move(req) => {
                if self.state.get(&req.agent_name).is_none() {
                    let _ = tx.send(Err(no_assignment(&req.agent_name)));
                    return true;
                }
            }
        }
        let pick = match result {
            Ok(pick) => pick,
            Err(e) if e.code == ErrorCode::NoCapacity && !alternatives.is_empty() => {
                let next = alternatives.remove(0);
                self.spawn_select(want, tx, 1, next, alternatives, group);
                return false;
            }
            Err(e) => {
                let e = match &group {
                    Some(g) if e.code == ErrorCode::NoCapacity => grouped::exhausted(g, &e),
                    _ => e,
                };
                let _ = tx.send(Err(e));
                return true;
            }
        };
        let count = self.state.count_on(&pick.node_id);
        let breaks = self
            .check_rules(self.rules_of(&want), want.agent_name(), &pick.node_id)
            .is_err();
        if breaks || self.ctx.members.read(|m| m.refuses(&pick.node_id, count)) {
            if attempt < MAX_PICKS {
                select.exclude.push(pick.node_id);
                self.spawn_select(want, tx, attempt + 1, select, alternatives, group);
                return false;
            }
            if !alternatives.is_empty() {
                let next = alternatives.remove(0);
                self.spawn_select(want, tx, 1, next, alternatives, group);
                return false;
            }
            let _ = tx.send(Err(ShoalError::no_capacity(
                "the balancer's picks are all full, offline or draining",
            )));
            return true;
        }
        match want {
            Want::Assign(req) => {
                self.commit_assign(req, tx, pick.node_id, "balanced", Some(pick.why))
            }
            Want::Move(req) => self.commit_move(req, tx, pick.node_id, Some(pick.why)),
        }
        true
    }

    fn commit_assign(
        &mut self,
        req: AssignRequest,
        tx: AssignmentTx,
        node: String,
        reason: &str,
        candidates: Option<Explanation>,
    ) {
        let change =
            State::assign_change(&self.author, &req, &node, reason, candidates, Utc::now());
        let assignment = State::placed(&change);
        self.record(change, Reply::Assign(tx, assignment));
    }

    fn commit_move(
        &mut self,
        req: MoveRequest,
        tx: AssignmentTx,
        node: String,
        candidates: Option<Explanation>,
    ) {
        let change = self.state.move_change(
            &self.author,
            &req.agent_name,
            Some(&node),
            MoveKind::Operator,
            candidates,
            Utc::now(),
        );
        let Some(mut change) = change else {
            return drop(tx.send(Err(no_assignment(&req.agent_name))));
        };
        change.request_id = req.request_id;
        change.pinned = req.node_id.is_some();
        let assignment = State::placed(&change);
        if self.record(change, Reply::Assign(tx, assignment)) {
            self.slot_freed();
        }
    }

    pub(crate) fn unassign(
        &mut self,
        req: UnassignRequest,
        tx: oneshot::Sender<Result<UnassignReply, ShoalError>>,
    ) {
        if let Some(done) = self.state.answered_unassign(req.request_id.as_deref())
            && done.agent_name == req.agent_name
        {
            // Answer only once whatever produced it is in the log.
            let done = done.clone();
            return self.pipeline.after_pending(Reply::Unassign(tx, done));
        }
        match self
            .state
            .unassign_change(&self.author, &req.agent_name, Utc::now())
        {
            Ok(mut change) => {
                change.request_id = req.request_id;
                let reply = State::unassigned(&change);
                if self.record(change, Reply::Unassign(tx, reply)) {
                    self.slot_freed();
                }
            }
            Err(e) => drop(tx.send(Err(e))),
        }
    }

    pub(crate) async fn promote(&mut self, target: &str) -> Result<(), ShoalError> {
        if target == self.ctx.me {
            return Ok(());
        }
        let alive = self
            .ctx
            .peers
            .clone()
            .with_retry_for(Duration::ZERO)
            .leader_of(target)
            .await;
        match alive {
            Ok(_) => {}
            Err(ClientError::NoResponders { .. } | ClientError::Timeout { .. }) => {
                return Err(ShoalError::not_found(format!(
                    "no coordinator named {target:?} is answering"
                ))
                .with_details(json!({ "coordinator_id": target })));
            }
            Err(e) => return Err(ShoalError::unavailable(format!("asking {target:?}: {e}"))),
        }
        if !self.pipeline.idle().await {
            return Err(ShoalError::not_leader(
                "this coordinator lost the leadership",
            ));
        }
        self.ctx.lease.handoff(target).await
    }
}
