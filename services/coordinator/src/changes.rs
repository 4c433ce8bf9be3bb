//! The changes a leader may append, built from the state as it is: placing a new
//! agent, removing one, moving one. Pure.

use chrono::{DateTime, Utc};
use shoal_protocol::{AssignRequest, AssignmentAction, AssignmentStatus, ShoalError};

use crate::move_kind::MoveKind;
use crate::record::{Change, Explanation, new_event_id};
use crate::state::{Author, State};

impl State {
    /// The change placing a new agent on `node_id`.
    pub fn assign_change(
        author: &Author,
        req: &AssignRequest,
        node_id: &str,
        reason: &str,
        candidates: Option<Explanation>,
        at: DateTime<Utc>,
    ) -> Change {
        Change {
            event_id: new_event_id(),
            action: AssignmentAction::Assigned,
            agent_name: req.agent_name.clone(),
            node_id: Some(node_id.to_string()),
            previous_node_id: None,
            status: AssignmentStatus::Running,
            reason: reason.to_string(),
            leader_id: author.leader_id.clone(),
            epoch: author.epoch,
            at,
            service: req.service.clone(),
            labels: req.labels.clone(),
            request_id: req.request_id.clone(),
            candidates,
            resources: req.resources,
            group: req.group.clone(),
            spread_by: req.spread_by.clone(),
            anti_affinity: req.anti_affinity,
            pinned: req.node_id.is_some(),
        }
    }

    /// The change removing `agent_name`; `not_found` if it has no assignment.
    pub fn unassign_change(
        &self,
        author: &Author,
        agent_name: &str,
        at: DateTime<Utc>,
    ) -> Result<Change, ShoalError> {
        let current = self.get(agent_name).ok_or_else(|| {
            ShoalError::not_found(format!("agent {agent_name:?} has no assignment"))
                .with_details(serde_json::json!({ "agent_name": agent_name }))
        })?;
        Ok(Change {
            event_id: new_event_id(),
            action: AssignmentAction::Unassigned,
            agent_name: agent_name.to_string(),
            node_id: None,
            previous_node_id: Some(current.node_id.clone()),
            status: current.status,
            reason: "requested".to_string(),
            leader_id: author.leader_id.clone(),
            epoch: author.epoch,
            at,
            service: current.service.clone(),
            labels: current.labels.clone(),
            request_id: None,
            candidates: None,
            resources: current.resources,
            group: current.group.clone(),
            spread_by: current.spread_by.clone(),
            anti_affinity: current.anti_affinity,
            pinned: current.pinned,
        })
    }

    /// The change moving `agent_name` off its node: to `to`, or, with `to` `None`,
    /// marking it as waiting for one. `None` if there is nothing to record (no such
    /// agent, or already marked waiting).
    pub fn move_change(
        &self,
        author: &Author,
        agent_name: &str,
        to: Option<&str>,
        kind: MoveKind,
        candidates: Option<Explanation>,
        at: DateTime<Utc>,
    ) -> Option<Change> {
        let current = self.get(agent_name)?;
        let waiting = kind.waiting_status();
        if to.is_none() && current.status == waiting {
            return None;
        }
        // An agent that already waited and is now placed is "reassigned"; an
        // operator's move is always "migrated", a rebalance's "rebalanced".
        let action = match (to, current.status, kind) {
            (_, _, MoveKind::Operator | MoveKind::Rebalance) => kind.action(),
            (Some(_), AssignmentStatus::Orphaned | AssignmentStatus::Migrating, _) => {
                AssignmentAction::Reassigned
            }
            _ => kind.action(),
        };

        Some(Change {
            event_id: new_event_id(),
            action,
            agent_name: agent_name.to_string(),
            node_id: to.map(str::to_string),
            previous_node_id: Some(current.node_id.clone()),
            status: if to.is_some() {
                AssignmentStatus::Running
            } else {
                waiting
            },
            reason: kind.reason().to_string(),
            leader_id: author.leader_id.clone(),
            epoch: author.epoch,
            at,
            service: current.service.clone(),
            labels: current.labels.clone(),
            request_id: current.request_id.clone(),
            candidates,
            resources: current.resources,
            group: current.group.clone(),
            spread_by: current.spread_by.clone(),
            anti_affinity: current.anti_affinity,
            // Set again by an operator's move to a named node.
            pinned: false,
        })
    }
}
