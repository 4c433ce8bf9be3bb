//! Which agents must move: those on nodes that are offline or gone (orphans) and
//! those on draining nodes. Pure planning; the leader executes the moves.

use crate::members::{Fate, Members};
use crate::state::{MoveKind, State};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub agent_name: String,
    pub from: String,
    pub kind: MoveKind,
}

/// The moves the current membership calls for. With `judge_dead` false (just after a
/// failover) offline nodes are left alone; drains still proceed.
pub fn plan_moves(state: &State, members: &Members, judge_dead: bool) -> Vec<Move> {
    if !members.is_loaded() {
        return Vec::new();
    }
    let mut nodes: Vec<&String> = state.nodes().collect();
    nodes.sort();
    let mut moves = Vec::new();
    for node in nodes {
        let kind = match members.fate(node) {
            Fate::Gone if judge_dead => MoveKind::Orphan,
            Fate::Draining => MoveKind::Drain,
            _ => continue,
        };
        moves.extend(state.agents_on(node).into_iter().map(|a| Move {
            agent_name: a.agent_name.clone(),
            from: node.clone(),
            kind,
        }));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::tests::node;
    use crate::state::Author;
    use chrono::Utc;
    use shoal_protocol::{AssignRequest, NodeStatus};

    fn state() -> State {
        let author = Author {
            leader_id: "c".into(),
            epoch: 1,
        };
        let mut s = State::default();
        for (agent, n) in [
            ("a1", "up"),
            ("a2", "down"),
            ("a3", "down"),
            ("a4", "drain"),
            ("a5", "gone"),
        ] {
            let req = AssignRequest {
                agent_name: agent.into(),
                ..Default::default()
            };
            s.apply_change(&State::assign_change(
                &author,
                &req,
                n,
                "r",
                None,
                Utc::now(),
            ));
        }
        s
    }

    fn members() -> Members {
        let mut m = Members::default();
        m.upsert(node("up", NodeStatus::Online, 10));
        m.upsert(node("down", NodeStatus::Offline, 10));
        let mut d = node("drain", NodeStatus::Online, 10);
        d.draining = true;
        m.upsert(d);
        m
    }

    #[test]
    fn agents_of_dead_and_draining_nodes_move() {
        let mut m = members();
        assert!(
            plan_moves(&state(), &m, true).is_empty(),
            "membership not read yet"
        );
        m.mark_loaded();
        let moves = plan_moves(&state(), &m, true);
        let summary: Vec<_> = moves
            .iter()
            .map(|mv| (mv.agent_name.as_str(), mv.from.as_str(), mv.kind))
            .collect();
        assert_eq!(
            summary,
            [
                ("a2", "down", MoveKind::Orphan),
                ("a3", "down", MoveKind::Orphan),
                ("a4", "drain", MoveKind::Drain),
                ("a5", "gone", MoveKind::Orphan),
            ]
        );
    }

    #[test]
    fn right_after_a_failover_only_drains_move() {
        let mut m = members();
        m.mark_loaded();
        let moves = plan_moves(&state(), &m, false);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].kind, MoveKind::Drain);
    }
}
