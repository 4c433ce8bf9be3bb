//! Strategies and view bookkeeping on pure state: no NATS, no clock but the one
//! passed in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_protocol::{
    AssignmentAction, AssignmentEvent, ErrorCode, Heartbeat, Node, NodeStatus, SelectRequest,
    Strategy,
};

use crate::bench::synthetic_node;
use crate::view::{Settings, View};

fn view(strategy: Strategy) -> View {
    View::with_seed(
        Settings {
            strategy,
            ..Settings::default()
        },
        42,
    )
}

fn node(id: &str, max: u32, agents: u32) -> Node {
    synthetic_node(id, max, agents, 10.0, 10.0)
}

fn pick(v: &mut View, req: &SelectRequest, now: Instant) -> String {
    v.select(req, now).expect("a node is available").node_id
}

fn with(strategy: Strategy) -> SelectRequest {
    SelectRequest {
        strategy: Some(strategy),
        ..SelectRequest::default()
    }
}

/// Nodes that must never be picked, one per reason.
/// The coordinator's event that `agent` was `action`ed on node "n".
fn event(action: AssignmentAction, agent: &str) -> AssignmentEvent {
    AssignmentEvent {
        event: action,
        agent_name: agent.into(),
        node_id: Some("n".into()),
        previous_node_id: None,
        reason: "test".into(),
        epoch: 1,
        at: Utc::now(),
        resources: None,
    }
}

fn ineligible() -> Vec<Node> {
    let mut draining = node("x-draining", 100, 0);
    draining.draining = true;
    let mut draining_status = node("x-draining-status", 100, 0);
    draining_status.status = NodeStatus::Draining;
    let mut offline = node("x-offline", 100, 0);
    offline.status = NodeStatus::Offline;
    let mut suspect = node("x-suspect", 100, 0);
    suspect.status = NodeStatus::Suspect;
    let mut left = node("x-left", 100, 0);
    left.status = NodeStatus::Left;
    let full = node("x-full", 5, 5);
    let zero = node("x-zero-slots", 0, 0);
    vec![
        draining,
        draining_status,
        offline,
        suspect,
        left,
        full,
        zero,
    ]
}

#[test]
fn round_robin_visits_every_eligible_node_once_per_cycle() {
    let mut v = view(Strategy::RoundRobin);
    let now = Instant::now();
    let eligible: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
    // Inserted out of order: the cycle follows id order, the same on every replica.
    for id in eligible.iter().rev() {
        v.upsert(node(id, 1000, 0), now);
    }
    for n in ineligible() {
        v.upsert(n, now);
    }
    let req = SelectRequest::default();
    for cycle in 0..5 {
        let picks: Vec<String> = (0..eligible.len())
            .map(|_| pick(&mut v, &req, now))
            .collect();
        assert_eq!(picks, eligible, "cycle {cycle}");
    }
}

#[test]
fn round_robin_keeps_its_place_when_membership_changes() {
    let mut v = view(Strategy::RoundRobin);
    let now = Instant::now();
    for id in ["a", "c", "e"] {
        v.upsert(node(id, 1000, 0), now);
    }
    let req = SelectRequest::default();
    assert_eq!(pick(&mut v, &req, now), "a");
    v.upsert(node("b", 1000, 0), now); // joins right before the next turn: takes it
    assert_eq!(pick(&mut v, &req, now), "b");
    v.remove("a"); // leaves behind the cursor: nobody skipped
    assert_eq!(pick(&mut v, &req, now), "c");
    v.remove("e");
    assert_eq!(pick(&mut v, &req, now), "b");
    assert_eq!(pick(&mut v, &req, now), "c");
}

#[test]
fn least_agents_always_picks_a_minimum() {
    let mut v = view(Strategy::LeastAgents);
    let now = Instant::now();
    let ids: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    for (k, id) in ids.iter().enumerate() {
        v.upsert(node(id, 100, (k as u32 * 7) % 23), now);
    }
    for n in ineligible() {
        v.upsert(n, now);
    }
    let req = SelectRequest::default();
    for _ in 0..600 {
        let min = ids
            .iter()
            .map(|id| v.node(id).unwrap())
            .filter(|n| n.active_agents < n.max_agents)
            .map(|n| n.active_agents)
            .min()
            .unwrap();
        let reply = v.select(&req, now).unwrap();
        assert_eq!(reply.node.active_agents, min, "picked {}", reply.node_id);
        assert!(!reply.node_id.starts_with("x-"));
        assert_eq!(reply.candidates[0].node_id, reply.node_id);
        assert!(
            reply
                .candidates
                .windows(2)
                .all(|w| w[0].score <= w[1].score)
        );
    }
}

#[test]
fn weighted_frequencies_follow_free_capacity() {
    let settings = Settings {
        strategy: Strategy::Weighted,
        // Picks not counted against nodes, so the shares stay fixed while sampling.
        pick_ttl: Duration::ZERO,
        ..Settings::default()
    };
    let mut v = View::with_seed(settings, 1234);
    let now = Instant::now();
    // free slots 20, 30, 50 (and 0 for the full node).
    v.upsert(node("a", 40, 20), now);
    v.upsert(node("b", 30, 0), now);
    v.upsert(node("c", 60, 10), now);
    for n in ineligible() {
        v.upsert(n, now);
    }
    let shares = HashMap::from([("a", 0.2), ("b", 0.3), ("c", 0.5)]);
    for req in [
        SelectRequest::default(),
        // A filter that excludes nobody eligible still takes the rejection path.
        SelectRequest {
            exclude: vec!["x-offline".into(), "x-full".into()],
            ..SelectRequest::default()
        },
    ] {
        let picks = 10_000;
        let mut counts: HashMap<String, u32> = HashMap::new();
        for _ in 0..picks {
            *counts.entry(pick(&mut v, &req, now)).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        for (id, share) in &shares {
            let freq = f64::from(counts[*id]) / f64::from(picks);
            assert!(
                (freq - share).abs() <= 0.05 * share,
                "{id}: frequency {freq:.4}, free-capacity share {share} ({counts:?})"
            );
        }
    }
}

#[test]
fn random_reaches_every_eligible_node() {
    let mut v = view(Strategy::Random);
    let now = Instant::now();
    let ids: HashSet<String> = (0..25).map(|i| format!("n{i}")).collect();
    for id in &ids {
        v.upsert(node(id, 10_000, 0), now);
    }
    for n in ineligible() {
        v.upsert(n, now);
    }
    let seen: HashSet<String> = (0..2_000)
        .map(|_| pick(&mut v, &SelectRequest::default(), now))
        .collect();
    assert_eq!(seen, ids);
}

#[test]
fn offline_suspect_draining_and_full_nodes_are_never_chosen() {
    for strategy in Strategy::ALL {
        let mut v = view(strategy);
        let now = Instant::now();
        for n in ineligible() {
            v.upsert(n, now);
        }
        let err = v.select(&SelectRequest::default(), now).unwrap_err();
        assert_eq!(err.code, ErrorCode::NoCapacity, "{strategy}");
        v.upsert(node("ok-1", 1000, 0), now);
        v.upsert(node("ok-2", 1000, 3), now);
        for _ in 0..300 {
            let id = pick(&mut v, &SelectRequest::default(), now);
            assert!(id.starts_with("ok-"), "{strategy} picked {id}");
        }
        // A node that goes offline stops being picked at once.
        let mut gone = node("ok-1", 1000, 0);
        gone.status = NodeStatus::Offline;
        v.upsert(gone, now);
        for _ in 0..50 {
            assert_eq!(
                pick(&mut v, &SelectRequest::default(), now),
                "ok-2",
                "{strategy}"
            );
        }
    }
}

#[test]
fn a_burst_spreads_instead_of_piling_onto_the_emptiest_node() {
    for strategy in [Strategy::LeastAgents, Strategy::LeastLoaded] {
        let mut v = view(strategy);
        let now = Instant::now();
        for i in 0..10 {
            v.upsert(node(&format!("n{i}"), 100, 0), now);
        }
        let mut counts: HashMap<String, u32> = HashMap::new();
        for _ in 0..100 {
            *counts
                .entry(pick(&mut v, &SelectRequest::default(), now))
                .or_default() += 1;
        }
        assert!(counts.values().all(|&c| c == 10), "{strategy}: {counts:?}");
    }
}

#[test]
fn picks_fill_nodes_until_they_expire_or_are_confirmed() {
    let mut v = View::with_seed(
        Settings {
            strategy: Strategy::LeastAgents,
            pick_ttl: Duration::from_secs(5),
            ..Settings::default()
        },
        1,
    );
    let t0 = Instant::now();
    v.upsert(node("n", 2, 0), t0);
    let req = SelectRequest::default();
    pick(&mut v, &req, t0);
    pick(&mut v, &req, t0);
    let err = v.select(&req, t0).unwrap_err();
    assert_eq!(
        err.details.unwrap()["reason"],
        "all_full",
        "{}",
        err.message
    );
    // Unconfirmed picks expire and give their slots back.
    let t1 = t0 + Duration::from_secs(6);
    assert_eq!(pick(&mut v, &req, t1), "n");
    assert_eq!(v.node("n").unwrap().active_agents, 1);
    // The coordinator's event confirms it: counted once, not twice.
    v.apply_assignment(&event(AssignmentAction::Assigned, "agent-1"), t1);
    assert_eq!(v.node("n").unwrap().active_agents, 1);
    // Still counted after the pick's TTL: the coordinator's placement carries it.
    let t2 = t1 + Duration::from_secs(6);
    v.expire(t2);
    assert_eq!(v.node("n").unwrap().active_agents, 1);
    v.apply_assignment(&event(AssignmentAction::Assigned, "agent-2"), t2);
    assert_eq!(v.node("n").unwrap().active_agents, 2);
    assert!(v.select(&req, t2).is_err(), "the coordinator filled it");
    v.apply_assignment(&event(AssignmentAction::Unassigned, "agent-1"), t2);
    assert_eq!(pick(&mut v, &req, t2), "n");
}

#[test]
fn heartbeats_steer_least_loaded_and_outlive_older_records() {
    let mut v = view(Strategy::LeastLoaded);
    let now = Instant::now();
    v.upsert(node("a", 100, 0), now);
    v.upsert(node("b", 100, 0), now);
    let hb = |id: &str, cpu: f64| Heartbeat {
        id: id.into(),
        seq: 1,
        cpu_usage: cpu,
        memory_usage: 10.0,
        disk_usage: 10.0,
        load_average: 1.0,
        active_agents: 0,
        uptime_s: 5,
        sent_at: Utc::now(),
        agents_digest: None,
    };
    assert!(v.apply_heartbeat(&hb("a", 95.0), now));
    assert!(!v.apply_heartbeat(&hb("unknown", 1.0), now));
    assert_eq!(pick(&mut v, &SelectRequest::default(), now), "b");
    // The registry's periodic record (older metrics) does not undo a fresh heartbeat…
    v.upsert(node("a", 100, 0), now);
    assert_eq!(v.node("a").unwrap().cpu_usage, 95.0);
    // …but wins once heartbeats stop.
    v.upsert(node("a", 100, 0), now + Duration::from_secs(10));
    assert_eq!(v.node("a").unwrap().cpu_usage, 10.0);
}

#[test]
fn filters_and_no_capacity_reasons() {
    let mut v = view(Strategy::RoundRobin);
    let now = Instant::now();
    let mut gpu = node("gpu-1", 10_000, 0);
    gpu.services = vec!["gpu".into()];
    gpu.labels = BTreeMap::from([("zone".into(), "eu".into())]);
    let mut gpu2 = node("gpu-2", 10_000, 0);
    gpu2.services = vec!["gpu".into(), "agents".into()];
    gpu2.labels = BTreeMap::from([("zone".into(), "us".into())]);
    v.upsert(gpu, now);
    v.upsert(gpu2, now);
    v.upsert(node("plain", 10_000, 0), now);
    let reason = |v: &mut View, req: &SelectRequest| {
        let e = v.select(req, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoCapacity);
        (
            e.details.unwrap()["reason"].as_str().unwrap().to_string(),
            e.message,
        )
    };
    let req = |service: Option<&str>, labels: &[(&str, &str)], exclude: &[&str]| SelectRequest {
        service: service.map(Into::into),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        strategy: None,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        resources: None,
    };
    for strategy in Strategy::ALL {
        v.set_strategy(strategy);
        for _ in 0..20 {
            assert!(pick(&mut v, &req(Some("gpu"), &[], &[]), now).starts_with("gpu-"));
            assert_eq!(
                pick(&mut v, &req(Some("gpu"), &[("zone", "us")], &[]), now),
                "gpu-2"
            );
            assert_eq!(
                pick(&mut v, &req(Some("gpu"), &[], &["gpu-2"]), now),
                "gpu-1"
            );
            assert_eq!(
                pick(&mut v, &req(None, &[], &["gpu-1", "gpu-2"]), now),
                "plain"
            );
        }
    }
    let (r, m) = reason(&mut v, &req(Some("tpu"), &[], &[]));
    assert_eq!(r, "no_service");
    assert!(m.contains("no online node offers service \"tpu\""), "{m}");
    let (r, m) = reason(&mut v, &req(Some("gpu"), &[("zone", "ap")], &[]));
    assert_eq!(r, "no_labels");
    assert!(m.contains("zone=ap") && m.contains("\"gpu\""), "{m}");
    let (r, _) = reason(&mut v, &req(Some("gpu"), &[], &["gpu-1", "gpu-2"]));
    assert_eq!(r, "all_excluded");
    for id in ["gpu-1", "gpu-2", "plain"] {
        let mut n = v.node(id).unwrap();
        n.status = NodeStatus::Suspect;
        v.upsert(n, now);
    }
    let (r, m) = reason(&mut v, &req(None, &[], &[]));
    assert_eq!(r, "no_online_node");
    assert!(m.contains("none of the 3 known nodes"), "{m}");
    let (r, _) = reason(
        &mut View::with_seed(Settings::default(), 1),
        &req(None, &[], &[]),
    );
    assert_eq!(r, "no_nodes");
    assert_eq!(v.stats().no_capacity, 4);
}

#[test]
fn candidates_are_capped_and_explain_the_choice() {
    let mut v = view(Strategy::LeastLoaded);
    let now = Instant::now();
    for i in 0..50 {
        v.upsert(
            synthetic_node(&format!("n{i:02}"), 100, i, f64::from(i), 5.0),
            now,
        );
    }
    for strategy in Strategy::ALL {
        let reply = v.select(&with(strategy), now).unwrap();
        assert_eq!(reply.strategy, strategy);
        assert_eq!(reply.candidates.len(), 10, "{strategy}");
        assert_eq!(reply.candidates[0].node_id, reply.node_id, "{strategy}");
    }
    // The earlier picks raised their nodes' estimates: the lowest now is the pick.
    let lowest = (0..50)
        .map(|i| v.node(&format!("n{i:02}")).unwrap())
        .min_by(|a, b| a.load.total_cmp(&b.load))
        .unwrap();
    let reply = v.select(&with(Strategy::LeastLoaded), now).unwrap();
    assert_eq!(reply.node_id, lowest.id);
    assert_eq!(reply.candidates[0].score, lowest.load);
    assert!(
        reply
            .candidates
            .windows(2)
            .all(|w| w[0].score <= w[1].score)
    );
    let stats = v.stats();
    assert_eq!(stats.selections, 6);
    assert_eq!(stats.selections_by_strategy["least_loaded"], 2);
    assert_eq!(
        stats.strategy,
        Strategy::LeastLoaded,
        "overrides leave the setting alone"
    );
}

#[test]
fn removed_nodes_are_forgotten_and_their_slots_reused_cleanly() {
    let mut v = view(Strategy::LeastAgents);
    let t0 = Instant::now();
    v.upsert(node("old", 1, 0), t0);
    pick(&mut v, &SelectRequest::default(), t0); // in flight on "old"
    assert!(v.remove("old"));
    assert!(!v.remove("old"));
    v.upsert(node("new", 1, 0), t0); // reuses the slot
    // The old pick's expiry must not touch the new node.
    v.expire(t0 + Duration::from_secs(60));
    assert_eq!(
        pick(
            &mut v,
            &SelectRequest::default(),
            t0 + Duration::from_secs(60)
        ),
        "new"
    );
    assert_eq!(v.len(), 1);
}

#[test]
fn a_first_heartbeat_that_overtakes_the_record_still_counts() {
    let mut v = view(Strategy::LeastLoaded);
    let t0 = Instant::now();
    v.upsert(node("steady", 100, 0), t0);
    let busy = Heartbeat {
        id: "new".into(),
        seq: 1,
        cpu_usage: 90.0,
        memory_usage: 80.0,
        disk_usage: 10.0,
        load_average: 3.0,
        active_agents: 0,
        uptime_s: 1,
        sent_at: Utc::now(),
        agents_digest: None,
    };
    assert!(!v.apply_heartbeat(&busy, t0), "not a member yet");
    // The record of a node that just announced carries no metrics yet.
    v.upsert(
        synthetic_node("new", 100, 0, 0.0, 0.0),
        t0 + Duration::from_millis(5),
    );
    assert_eq!(v.node("new").unwrap().cpu_usage, 90.0);
    assert_eq!(pick(&mut v, &SelectRequest::default(), t0), "steady");
    // A heartbeat from long before the record is not trusted.
    let mut stale = busy.clone();
    stale.id = "late".into();
    v.apply_heartbeat(&stale, t0);
    v.upsert(
        synthetic_node("late", 100, 0, 5.0, 5.0),
        t0 + Duration::from_secs(10),
    );
    assert_eq!(v.node("late").unwrap().cpu_usage, 5.0);
}

#[test]
fn a_slot_freed_by_the_coordinator_is_pickable_before_the_nodes_next_heartbeat() {
    let mut v = view(Strategy::LeastAgents);
    let t0 = Instant::now();
    // A full node: its record and heartbeats report 2 of 2 agents.
    v.upsert(node("n", 2, 2), t0);
    v.apply_assignment(&event(AssignmentAction::Assigned, "a1"), t0);
    v.apply_assignment(&event(AssignmentAction::Assigned, "a2"), t0);
    let req = SelectRequest::default();
    assert!(v.select(&req, t0).is_err(), "full");
    // The coordinator unassigns one; the node has not heartbeated since.
    let mut gone = event(AssignmentAction::Unassigned, "a1");
    gone.node_id = None;
    v.apply_assignment(&gone, t0);
    assert_eq!(pick(&mut v, &req, t0), "n");
}
