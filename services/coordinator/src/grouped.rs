//! Placements that follow group rules ([`crate::constraints`]). Each narrows the
//! balancer's selection by where the rest of its group runs, so two placements of
//! one group must not be decided on the same view: a group's requests (`assign`,
//! `move` without a node) are placed one at a time, the next once the previous is
//! answered, and the leader's own moves of a group's agents ask the balancer one
//! after the other. Requests of other groups, and agents with no rules, are not held.

use std::collections::{HashMap, VecDeque};

use shoal_protocol::{ErrorCode, SelectRequest, ShoalError};

use crate::commands::not_leader;
use crate::constraints::{self, Rules};
use crate::leader::Leader;
use crate::picker::Pick;
use crate::pipeline::Reply;
use crate::writes::{AssignmentTx, MAX_PICKS, Want};

/// The groups with a placement in flight, and the requests waiting behind it.
#[derive(Default)]
pub(crate) struct GroupQueue {
    busy: HashMap<String, VecDeque<(Want, AssignmentTx)>>,
}

impl GroupQueue {
    /// Marks `group` busy and hands the request back to be started, or queues it
    /// behind the group's placement in flight.
    fn enter(&mut self, group: &str, want: Want, tx: AssignmentTx) -> Option<(Want, AssignmentTx)> {
        match self.busy.get_mut(group) {
            Some(queue) => {
                queue.push_back((want, tx));
                None
            }
            None => {
                self.busy.insert(group.to_string(), VecDeque::new());
                Some((want, tx))
            }
        }
    }

    /// The group's next request (the group stays busy), or none (it is free).
    fn next(&mut self, group: &str) -> Option<(Want, AssignmentTx)> {
        let queue = self.busy.get_mut(group)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.busy.remove(group);
        }
        next
    }

    /// Answers every waiting request `not_leader` (the term is over).
    pub(crate) fn refuse_all(&mut self) {
        for (_, queue) in self.busy.drain() {
            for (_, tx) in queue {
                let _ = tx.send(Err(not_leader()));
            }
        }
    }
}

/// The `no_capacity` of a group's placement once the balancer refused every
/// selection its rules allow.
pub(crate) fn exhausted(group: &str, last: &ShoalError) -> ShoalError {
    ShoalError::no_capacity(format!(
        "group {group:?}: the balancer found no node for any placement the group's rules allow (last: {})",
        last.message
    ))
    .with_details(serde_json::json!({ "group": group }))
}

impl Leader {
    /// Places `want`'s agent on the balancer's pick, following its group rules.
    pub(crate) fn place(&mut self, want: Want, tx: AssignmentTx) {
        let Some(rules) = self.rules_of(&want) else {
            return match self.base_select(&want) {
                Ok(select) => self.spawn_select(want, tx, 1, select, Vec::new(), None),
                Err(e) => drop(tx.send(Err(e))),
            };
        };
        if let Some((want, tx)) = self.groups.enter(&rules.group, want, tx)
            && !self.start(want, tx, &rules)
        {
            self.release(&rules.group);
        }
    }

    /// Starts the group's next waiting placement, if any (answering at once those
    /// that cannot start).
    pub(crate) fn release(&mut self, group: &str) {
        while let Some((want, tx)) = self.groups.next(group) {
            let started = match self.rules_of(&want) {
                Some(rules) => self.start(want, tx, &rules),
                // The agent was unassigned meanwhile: the move answers not_found.
                None => {
                    match self.base_select(&want) {
                        Ok(select) => self.spawn_select(want, tx, 1, select, Vec::new(), None),
                        Err(e) => drop(tx.send(Err(e))),
                    }
                    false
                }
            };
            if started {
                return;
            }
        }
    }

    /// Asks the balancer for the first selection `rules` allow; false when the
    /// request was answered at once instead.
    fn start(&mut self, want: Want, tx: AssignmentTx, rules: &Rules) -> bool {
        if let Want::Assign(req) = &want
            && let Some(existing) = self.state.existing(req)
        {
            // A request for the same agent placed it while this one waited.
            self.pipeline.after_pending(Reply::Assign(tx, existing));
            return false;
        }
        let tries = self.base_select(&want).and_then(|base| {
            self.ctx
                .members
                .read(|m| constraints::selections(&self.state, m, rules, want.agent_name(), &base))
        });
        let mut tries = match tries {
            Ok(tries) => tries.into_iter(),
            Err(e) => {
                let _ = tx.send(Err(e));
                return false;
            }
        };
        match tries.next() {
            Some(first) => {
                let group = Some(rules.group.clone());
                self.spawn_select(want, tx, 1, first, tries.collect(), group);
                true
            }
            None => {
                let e = ShoalError::no_capacity(format!(
                    "group {:?}: its rules allow no placement",
                    rules.group
                ));
                let _ = tx.send(Err(e));
                false
            }
        }
    }

    /// The balancer's pick for `agent` following `rules`, each selection asked in
    /// turn and each pick checked against the state: for the leader's own moves,
    /// made from the decision loop, so the group's next move sees this one.
    pub(crate) async fn pick_following(
        &self,
        rules: &Rules,
        agent: &str,
        base: &SelectRequest,
    ) -> Result<Pick, ShoalError> {
        let tries = self
            .ctx
            .members
            .read(|m| constraints::selections(&self.state, m, rules, agent, base))?;
        let mut last = None;
        for mut select in tries {
            for _ in 0..MAX_PICKS {
                let pick = match self.picker.pick(select.clone()).await {
                    Ok(pick) => pick,
                    Err(e) if e.code == ErrorCode::NoCapacity => {
                        last = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let count = self.state.count_on(&pick.node_id);
                let refused = self.ctx.members.read(|m| {
                    m.refuses(&pick.node_id, count)
                        || constraints::check_node(&self.state, m, rules, agent, &pick.node_id)
                            .is_err()
                });
                if !refused {
                    return Ok(pick);
                }
                select.exclude.push(pick.node_id);
            }
        }
        let last = last.unwrap_or_else(|| {
            ShoalError::no_capacity("the balancer's picks are all full, offline or draining")
        });
        Err(exhausted(&rules.group, &last))
    }
}
