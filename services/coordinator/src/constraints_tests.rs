//! Tests of the group placement rules.

use super::*;
use crate::members::tests::node as member;
use crate::state::Author;
use chrono::Utc;
use shoal_protocol::{ErrorCode, NodeStatus};

fn node(id: &str, zone: Option<&str>) -> Node {
    let mut n = member(id, NodeStatus::Online, 10);
    if let Some(zone) = zone {
        n.labels.insert("zone".into(), zone.into());
    }
    n
}

fn spread() -> Rules {
    Rules {
        group: "g1".into(),
        spread_by: Some("zone".into()),
        anti_affinity: false,
    }
}

fn anti() -> Rules {
    Rules {
        group: "g1".into(),
        spread_by: None,
        anti_affinity: true,
    }
}

/// Spread by zone, and apart.
fn spread_apart() -> Rules {
    Rules {
        anti_affinity: true,
        ..spread()
    }
}

fn peer<'a>(agent: &'a str, node: &'a str, value: Option<&'a str>) -> Peer<'a> {
    Peer { agent, node, value }
}

/// The values the steps try, in order.
fn values(steps: &[Step]) -> Vec<&str> {
    steps
        .iter()
        .map(|s| s.label.as_ref().map_or("-", |(_, v)| v.as_str()))
        .collect()
}

/// Places `n` agents one after the other the way the leader does: the first step's
/// value, on the first candidate carrying it; returns the count per zone.
fn place(rules: &Rules, nodes: &[Node], n: usize) -> BTreeMap<String, usize> {
    let candidates: Vec<&Node> = nodes.iter().collect();
    let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
    let mut placed: Vec<(usize, &Node)> = Vec::new();
    for i in 0..n {
        let peers: Vec<Peer<'_>> = placed
            .iter()
            .map(|(a, node)| Peer {
                agent: &names[*a],
                node: &node.id,
                value: node.labels.get("zone").map(String::as_str),
            })
            .collect();
        let steps = narrow(rules, &candidates, &peers, "").unwrap();
        let (_, value) = steps[0].label.clone().unwrap();
        let to = nodes
            .iter()
            .find(|n| n.labels.get("zone") == Some(&value) && !steps[0].exclude.contains(&n.id))
            .unwrap();
        placed.push((i, to));
    }
    let mut per_zone = BTreeMap::new();
    for (_, node) in placed {
        *per_zone.entry(node.labels["zone"].clone()).or_default() += 1;
    }
    per_zone
}

#[test]
fn six_agents_spread_two_per_zone_over_three_zones() {
    let nodes: Vec<Node> = ["a", "a", "b", "b", "c", "c"]
        .iter()
        .enumerate()
        .map(|(i, z)| node(&format!("n{i}"), Some(z)))
        .collect();
    let per_zone = place(&spread(), &nodes, 6);
    assert_eq!(
        per_zone,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)])
    );
}

#[test]
fn zones_of_uneven_size_get_even_shares_and_the_least_filled_goes_first() {
    // One node in zone a, three in zone b: the group still splits evenly.
    let nodes = vec![
        node("n1", Some("a")),
        node("n2", Some("b")),
        node("n3", Some("b")),
        node("n4", Some("b")),
    ];
    let per_zone = place(&spread(), &nodes, 4);
    assert_eq!(per_zone, BTreeMap::from([("a".into(), 2), ("b".into(), 2)]));
    // With two in a and one in b, b comes first, then a; a node without the label
    // is never a step.
    let mut with_bare = nodes.clone();
    with_bare.push(node("bare", None));
    let candidates: Vec<&Node> = with_bare.iter().collect();
    let peers = [
        peer("x", "n1", Some("a")),
        peer("y", "n1", Some("a")),
        peer("z", "n2", Some("b")),
    ];
    let steps = narrow(&spread(), &candidates, &peers, "").unwrap();
    assert_eq!(values(&steps), ["b", "a"]);
    assert!(steps.iter().all(|s| s.exclude.is_empty()), "{steps:?}");
}

#[test]
fn anti_affinity_excludes_the_nodes_holding_the_group() {
    let nodes = [node("n1", None), node("n2", None), node("n3", None)];
    let candidates: Vec<&Node> = nodes.iter().collect();
    let peers = [peer("x", "n1", None), peer("y", "n2", None)];
    let steps = narrow(&anti(), &candidates, &peers, "").unwrap();
    assert_eq!(
        steps,
        [Step {
            label: None,
            exclude: vec!["n1".into(), "n2".into()]
        }]
    );
}

#[test]
fn spread_and_anti_affinity_together_skip_values_whose_nodes_are_all_held() {
    let nodes = [
        node("a1", Some("a")),
        node("b1", Some("b")),
        node("b2", Some("b")),
    ];
    let candidates: Vec<&Node> = nodes.iter().collect();
    let rules = spread_apart();
    let peers = [peer("x", "a1", Some("a"))];
    let steps = narrow(&rules, &candidates, &peers, "").unwrap();
    assert_eq!(values(&steps), ["b"]);
    assert!(steps[0].exclude.is_empty());
    let peers = [peer("x", "a1", Some("a")), peer("y", "b1", Some("b"))];
    let steps = narrow(&rules, &candidates, &peers, "").unwrap();
    assert_eq!(values(&steps), ["b"]);
    assert_eq!(steps[0].exclude, ["b1"]);
}

#[test]
fn impossible_placements_say_why() {
    let nodes = [node("n1", None), node("n2", None), node("n3", None)];
    let candidates: Vec<&Node> = nodes.iter().collect();
    let peers: Vec<Peer<'_>> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| peer("x", n, None))
        .collect();
    let wanted = describe(Some("wrapper"), &BTreeMap::new());
    let e = narrow(&anti(), &candidates, &peers, &wanted).unwrap_err();
    assert_eq!(e.code, ErrorCode::NoCapacity);
    assert_eq!(
        e.message,
        "anti_affinity: all 3 node(s) offering service \"wrapper\" with a free slot already run an agent of group \"g1\""
    );

    let e = narrow(&spread(), &candidates, &[], &wanted).unwrap_err();
    assert_eq!(e.code, ErrorCode::NoCapacity);
    assert_eq!(
        e.message,
        "spread_by \"zone\": none of the 3 node(s) offering service \"wrapper\" with a free slot carries the label \"zone\""
    );

    let e = narrow(&spread(), &[], &[], "").unwrap_err();
    assert_eq!(e.message, "group \"g1\": no node has a free slot");

    let zoned = [node("a1", Some("a")), node("bare", None)];
    let candidates: Vec<&Node> = zoned.iter().collect();
    let rules = spread_apart();
    let peers = [peer("x", "a1", Some("a"))];
    let e = narrow(&rules, &candidates, &peers, "").unwrap_err();
    assert_eq!(
        e.message,
        "anti_affinity: all 1 node(s) carrying the label \"zone\" with a free slot already run an agent of group \"g1\""
    );
}

#[test]
fn only_a_group_with_a_rule_has_rules() {
    let mut req = AssignRequest {
        agent_name: "a".into(),
        group: Some("g".into()),
        ..Default::default()
    };
    assert_eq!(Rules::of_request(&req), None, "a group alone places freely");
    req.anti_affinity = true;
    assert_eq!(Rules::of_request(&req).unwrap().group, "g");
}

fn author() -> Author {
    Author {
        leader_id: "c".into(),
        epoch: 1,
    }
}

#[test]
fn selections_and_node_checks_read_the_state_and_membership() {
    let mut members = Members::default();
    for (id, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
        members.upsert(node(id, Some(zone)));
    }
    members.upsert(node("bare", None));
    members.mark_loaded();
    let mut state = State::default();
    let rules = spread_apart();
    for (agent, on) in [("g-0", "a1"), ("g-1", "b1"), ("other", "c1")] {
        let req = AssignRequest {
            agent_name: agent.into(),
            group: (agent != "other").then(|| "g1".into()),
            spread_by: Some("zone".into()),
            anti_affinity: true,
            ..Default::default()
        };
        state.apply_change(&State::assign_change(
            &author(),
            &req,
            on,
            "r",
            None,
            Utc::now(),
        ));
    }
    let base = SelectRequest {
        exclude: vec!["bare".into()],
        ..Default::default()
    };
    let tries = selections(&state, &members, &rules, "g-2", &base).unwrap();
    let tried: Vec<(Option<&String>, &[String])> = tries
        .iter()
        .map(|s| (s.labels.get("zone"), s.exclude.as_slice()))
        .collect();
    let (a, c) = ("a".to_string(), "c".to_string());
    assert_eq!(
        tried,
        [
            (Some(&c), &["bare".to_string()][..]),
            (Some(&a), &["bare".to_string(), "a1".to_string()][..]),
        ],
        "zone c holds no agent of g1, zone a one (b's only node holds one)"
    );
    let e = check_node(&state, &members, &rules, "g-2", "a1").unwrap_err();
    assert_eq!(e.code, ErrorCode::NoCapacity);
    assert!(e.message.contains("already runs agent \"g-0\""), "{e}");
    assert!(
        check_node(&state, &members, &rules, "g-0", "a1").is_ok(),
        "itself"
    );
    let e = check_node(&state, &members, &rules, "g-2", "bare").unwrap_err();
    assert!(e.message.contains("carries no label \"zone\""), "{e}");
    assert!(check_node(&state, &members, &rules, "g-2", "a2").is_ok());
}
