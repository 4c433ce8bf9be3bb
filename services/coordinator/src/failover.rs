//! Which agents must move, and which waiting agents can be placed: agents on nodes
//! that are offline or gone (orphans) or draining must leave them; agents already
//! waiting (orphaned or migrating) are placed as soon as some node has a free slot
//! for them, their old node included once it can take them again. Pure planning; the
//! leader executes the moves.

use crate::members::{Fate, Members};
use crate::state::{MoveKind, State};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub agent_name: String,
    /// The node the agent is assigned to now.
    pub from: String,
    pub kind: MoveKind,
    /// The agent must leave `from` (gone or draining); false for a waiting agent whose
    /// node may have it back.
    pub leave: bool,
    /// Some node has a free slot for it, by the coordinator's own counts: worth asking
    /// the balancer.
    pub placeable: bool,
}

/// The moves the current membership calls for. With `judge_dead` false (just after a
/// failover) offline nodes are left alone; drains still proceed. A waiting agent no
/// node can take yet is left out: there is nothing to do for it until one can.
pub fn plan_moves(state: &State, members: &Members, judge_dead: bool) -> Vec<Move> {
    if !members.is_loaded() {
        return Vec::new();
    }
    let mut free = members.free_slots(|id| state.count_on(id));
    let mut nodes: Vec<&String> = state.nodes().collect();
    nodes.sort();
    let mut moves = Vec::new();
    for node in nodes {
        let kind = match members.fate(node) {
            Fate::Gone if judge_dead => MoveKind::Orphan,
            Fate::Draining => MoveKind::Drain,
            _ => continue,
        };
        for a in state.agents_on(node) {
            let placeable = free.take(a.service.as_deref(), &a.labels, Some(node));
            if a.status.is_waiting() && !placeable {
                continue;
            }
            moves.push(Move {
                agent_name: a.agent_name.clone(),
                from: node.clone(),
                kind,
                leave: true,
                placeable,
            });
        }
    }
    for a in state.waiting() {
        if members.fate(&a.node_id) != Fate::Stay {
            continue;
        }
        if free.take(a.service.as_deref(), &a.labels, None) {
            moves.push(Move {
                agent_name: a.agent_name.clone(),
                from: a.node_id.clone(),
                kind: MoveKind::resuming(a.status),
                leave: false,
                placeable: true,
            });
        }
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
            .map(|mv| (mv.agent_name.as_str(), mv.from.as_str(), mv.kind, mv.leave))
            .collect();
        assert_eq!(
            summary,
            [
                ("a2", "down", MoveKind::Orphan, true),
                ("a3", "down", MoveKind::Orphan, true),
                ("a4", "drain", MoveKind::Drain, true),
                ("a5", "gone", MoveKind::Orphan, true),
            ]
        );
        assert!(
            moves.iter().all(|mv| mv.placeable),
            "\"up\" has 9 free slots"
        );
    }

    fn author() -> Author {
        Author {
            leader_id: "c".into(),
            epoch: 1,
        }
    }

    /// Marks `agent` waiting, as the leader does when no node can take it.
    fn wait(s: &mut State, agent: &str, kind: MoveKind) {
        let c = s
            .move_change(&author(), agent, None, kind, None, Utc::now())
            .unwrap();
        s.apply_change(&c);
    }

    #[test]
    fn waiting_agents_move_only_when_a_slot_is_free_and_may_return_home() {
        let mut m = members();
        m.mark_loaded();
        // "up" is full: a1 plus 9 others.
        let mut s = state();
        for i in 0..9 {
            let req = AssignRequest {
                agent_name: format!("f{i}"),
                ..Default::default()
            };
            s.apply_change(&State::assign_change(
                &author(),
                &req,
                "up",
                "r",
                None,
                Utc::now(),
            ));
        }
        wait(&mut s, "a2", MoveKind::Orphan);
        wait(&mut s, "a3", MoveKind::Orphan);
        let moves = plan_moves(&s, &m, true);
        // Running agents still leave (marked waiting first); waiting ones with no
        // slot anywhere are left alone.
        let names: Vec<_> = moves
            .iter()
            .map(|mv| (mv.agent_name.as_str(), mv.placeable))
            .collect();
        assert_eq!(names, [("a4", false), ("a5", false)]);

        // "down" comes back: its waiting agents go back to it (not excluded), and
        // nothing else is planned for them.
        m.upsert(node("down", NodeStatus::Online, 10));
        let moves = plan_moves(&s, &m, true);
        let back: Vec<_> = moves
            .iter()
            .filter(|mv| !mv.leave)
            .map(|mv| (mv.agent_name.as_str(), mv.from.as_str(), mv.kind))
            .collect();
        assert_eq!(
            back,
            [
                ("a2", "down", MoveKind::Orphan),
                ("a3", "down", MoveKind::Orphan)
            ]
        );
    }

    #[test]
    fn a_slot_counts_once_across_waiting_agents() {
        let mut m = Members::default();
        m.upsert(node("gone-node", NodeStatus::Offline, 10));
        m.upsert(node("small", NodeStatus::Online, 1));
        m.mark_loaded();
        let mut s = State::default();
        for agent in ["w1", "w2", "w3"] {
            let req = AssignRequest {
                agent_name: agent.into(),
                ..Default::default()
            };
            s.apply_change(&State::assign_change(
                &author(),
                &req,
                "gone-node",
                "r",
                None,
                Utc::now(),
            ));
            wait(&mut s, agent, MoveKind::Orphan);
        }
        let moves = plan_moves(&s, &m, true);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert!(moves[0].placeable && moves[0].leave);
    }

    #[test]
    fn right_after_a_failover_only_drains_move() {
        let mut m = members();
        m.mark_loaded();
        let moves = plan_moves(&state(), &m, false);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].kind, MoveKind::Drain);
        assert!(moves[0].leave);
    }
}
