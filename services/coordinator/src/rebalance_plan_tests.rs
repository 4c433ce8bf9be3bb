//! Tests of the rebalance planner.

use std::collections::BTreeMap;

use super::*;
use crate::members::tests::node as member;
use shoal_protocol::AssignRequest;

fn author() -> Author {
    Author {
        leader_id: "c1".into(),
        epoch: 1,
    }
}

fn members(nodes: &[(&str, u32)]) -> Members {
    let mut m = Members::default();
    for (id, max) in nodes {
        m.upsert(member(id, NodeStatus::Online, *max));
    }
    m.mark_loaded();
    m
}

/// Assigns `n` agents named `<prefix>-<i>` to `node`, as `req` says.
fn fill(state: &mut State, node: &str, prefix: &str, n: usize, req: &AssignRequest) {
    for i in 0..n {
        let req = AssignRequest {
            agent_name: format!("{prefix}-{i}"),
            ..req.clone()
        };
        let c = State::assign_change(&author(), &req, node, "balanced", None, Utc::now());
        state.apply_change(&c);
    }
}

fn counts(state: &State, m: &Members) -> BTreeMap<String, usize> {
    m.nodes()
        .map(|n| (n.id.clone(), state.count_on(&n.id)))
        .collect()
}

#[test]
fn joining_nodes_get_half_the_agents_with_the_fewest_moves() {
    // 10 nodes with 100 agents each, 10 empty ones just joined.
    let ids: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    let m = members(&ids.iter().map(|id| (id.as_str(), 1000)).collect::<Vec<_>>());
    let mut state = State::default();
    for id in &ids[..10] {
        fill(&mut state, id, id, 100, &AssignRequest::default());
    }
    let before = spread(&state, &m);
    assert_eq!((before.nodes, before.max, before.min), (20, 100, 0));

    // To a spread of 2: 51 on the old nodes, 49 on the new ones.
    let to_two = plan(&state, &m, 2, usize::MAX, Utc::now());
    assert_eq!(to_two.moves.len(), 490);
    assert_eq!(to_two.after.width(), 2);
    // Perfectly even: exactly the 500 agents the new nodes must take.
    let even = plan(&state, &m, 1, usize::MAX, Utc::now());
    assert_eq!(even.moves.len(), 500);
    assert_eq!((even.after.max, even.after.min), (50, 50));
    // Every move goes from an old node to a new one, and no agent moves twice.
    let mut moved = std::collections::BTreeSet::new();
    for mv in &even.moves {
        assert!(
            ids[..10].contains(&mv.from) && ids[10..].contains(&mv.to),
            "{mv:?}"
        );
        assert!(
            moved.insert(mv.agent_name.clone()),
            "{} moved twice",
            mv.agent_name
        );
    }
    // The plan was worked out on a copy.
    assert_eq!(state.count_on("n00"), 100);
    // The limit bounds a plan.
    assert_eq!(plan(&state, &m, 1, 7, Utc::now()).moves.len(), 7);
}

#[test]
fn an_even_cluster_or_one_within_the_threshold_is_left_alone() {
    let m = members(&[("a", 10), ("b", 10), ("c", 10)]);
    let mut state = State::default();
    fill(&mut state, "a", "x", 3, &AssignRequest::default());
    fill(&mut state, "b", "y", 1, &AssignRequest::default());
    // Spread 3 (3, 1, 0): above 2, not above 3.
    assert!(next_move(&state, &m, 3).is_none());
    let mv = next_move(&state, &m, 2).unwrap();
    assert_eq!((mv.from.as_str(), mv.to.as_str()), ("a", "c"));
    assert!(next_move(&State::default(), &m, 1).is_none(), "no agents");
    assert!(
        next_move(&state, &members(&[("a", 10)]), 1).is_none(),
        "one node"
    );
}

#[test]
fn pins_services_labels_and_capacity_are_respected() {
    let mut m = members(&[("full", 10), ("small", 1), ("gpu", 10)]);
    let mut gpu = member("gpu", NodeStatus::Online, 10);
    gpu.services = vec!["gpu".into()];
    gpu.labels.insert("zone".into(), "b".into());
    m.upsert(gpu);
    let mut state = State::default();
    // Pinned agents stay.
    let pinned = AssignRequest {
        node_id: Some("full".into()),
        ..AssignRequest::default()
    };
    fill(&mut state, "full", "pin", 4, &pinned);
    assert!(next_move(&state, &m, 1).is_none(), "every agent is pinned");

    // Agents needing zone a fit neither "gpu" (zone b) nor ... "small" has no zone.
    let zoned = AssignRequest {
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        ..AssignRequest::default()
    };
    fill(&mut state, "full", "zoned", 4, &zoned);
    assert!(next_move(&state, &m, 1).is_none(), "no node carries zone a");

    // Free agents go to the emptiest node with a slot: "small" takes one, then
    // only "gpu" (which offers every service an agent without one asks for).
    fill(&mut state, "full", "free", 4, &AssignRequest::default());
    let p = plan(&state, &m, 1, usize::MAX, Utc::now());
    let to_small = p.moves.iter().filter(|mv| mv.to == "small").count();
    assert_eq!(to_small, 1, "{:?}", p.moves);
    assert!(
        p.moves.iter().all(|mv| mv.agent_name.starts_with("free")),
        "{:?}",
        p.moves
    );
    // A service the node does not offer keeps the agent off it.
    let mut state = State::default();
    let service = AssignRequest {
        service: Some("web".into()),
        ..AssignRequest::default()
    };
    fill(&mut state, "full", "web", 6, &service);
    let p = plan(&state, &m, 1, usize::MAX, Utc::now());
    assert!(p.moves.iter().all(|mv| mv.to != "gpu"), "{:?}", p.moves);
}

#[test]
fn draining_and_offline_nodes_take_nothing_and_do_not_count() {
    let mut m = members(&[("a", 10), ("b", 10)]);
    let mut d = member("drain", NodeStatus::Online, 10);
    d.draining = true;
    m.upsert(d);
    m.upsert(member("down", NodeStatus::Offline, 10));
    let mut state = State::default();
    fill(&mut state, "a", "x", 4, &AssignRequest::default());
    assert_eq!(spread(&state, &m).nodes, 2);
    let p = plan(&state, &m, 1, usize::MAX, Utc::now());
    assert_eq!(p.moves.len(), 2);
    assert!(p.moves.iter().all(|mv| mv.to == "b"));
}

#[test]
fn group_rules_hold_through_a_rebalance() {
    let zone = |id: &str, z: &str| {
        let mut n = member(id, NodeStatus::Online, 10);
        n.labels.insert("zone".into(), z.into());
        n
    };
    let mut m = Members::default();
    for n in [
        zone("a1", "a"),
        zone("a2", "a"),
        zone("b1", "b"),
        zone("b2", "b"),
    ] {
        m.upsert(n);
    }
    m.mark_loaded();
    let mut state = State::default();
    // Group "apart" (anti-affinity): one agent on each of a1 and b1, plus loose
    // agents filling a1 and b1; the empty a2 and b2 joined.
    let apart = AssignRequest {
        group: Some("apart".into()),
        anti_affinity: true,
        ..AssignRequest::default()
    };
    fill(&mut state, "a1", "apart-a", 1, &apart);
    fill(&mut state, "b1", "apart-b", 1, &apart);
    // Group "zones" spread by zone: two per zone on a1 and b1.
    let zones = AssignRequest {
        group: Some("zones".into()),
        spread_by: Some("zone".into()),
        ..AssignRequest::default()
    };
    fill(&mut state, "a1", "zones-a", 2, &zones);
    fill(&mut state, "b1", "zones-b", 2, &zones);
    let p = plan(&state, &m, 1, usize::MAX, Utc::now());
    let mut state = state.clone();
    for mv in &p.moves {
        let c = state
            .move_change(
                &author(),
                &mv.agent_name,
                Some(&mv.to),
                MoveKind::Rebalance,
                None,
                Utc::now(),
            )
            .unwrap();
        assert_eq!(c.action, shoal_protocol::AssignmentAction::Rebalanced);
        state.apply_change(&c);
    }
    let c = counts(&state, &m);
    assert!(
        c.values().all(|n| (1..=2).contains(n)),
        "{c:?} after {:?}",
        p.moves
    );
    // The apart agents are on different nodes, and the zones group is 2/2.
    let node_of = |a: &str| state.get(a).unwrap().node_id.clone();
    assert_ne!(node_of("apart-a-0"), node_of("apart-b-0"));
    let zone_of = |a: &str| m.get(&node_of(a)).unwrap().labels["zone"].clone();
    let in_a = ["zones-a-0", "zones-a-1", "zones-b-0", "zones-b-1"]
        .iter()
        .filter(|a| zone_of(a) == "a")
        .count();
    assert_eq!(in_a, 2, "{:?}", p.moves);
}
