//! The estimated load as `least_loaded` sees it: placements raise it at once, the
//! measurements take it over, bursts and batches spread, replicas agree. Pure state;
//! every instant is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_protocol::{
    AssignmentAction, AssignmentEvent, Heartbeat, Resources, SelectRequest, Strategy, load_score,
};

use crate::bench::synthetic_node;
use crate::estimate::{Decay, load_of};
use crate::view::{DEFAULT_AGENT_COST, Settings, View};

const S: Duration = Duration::from_secs(1);
const EPS: f64 = 1e-9;

fn view() -> View {
    View::with_seed(
        Settings {
            strategy: Strategy::LeastLoaded,
            ..Settings::default()
        },
        7,
    )
}

fn heartbeat(id: &str, cpu: f64, memory: f64, agents: u32) -> Heartbeat {
    Heartbeat {
        id: id.into(),
        seq: 1,
        cpu_usage: cpu,
        memory_usage: memory,
        disk_usage: 10.0,
        load_average: 1.0,
        active_agents: agents,
        uptime_s: 60,
        sent_at: Utc::now(),
        agents_digest: None,
    }
}

fn event(
    action: AssignmentAction,
    agent: &str,
    node: &str,
    resources: Option<Resources>,
) -> AssignmentEvent {
    AssignmentEvent {
        event: action,
        agent_name: agent.into(),
        node_id: (action != AssignmentAction::Unassigned).then(|| node.into()),
        previous_node_id: None,
        reason: "test".into(),
        epoch: 1,
        at: Utc::now(),
        resources,
    }
}

fn load(v: &View, id: &str) -> f64 {
    v.node(id).expect("known node").load
}

fn pick(v: &mut View, req: &SelectRequest, now: Instant) -> String {
    v.select(req, now).expect("a node is available").node_id
}

/// The estimate with nothing pending: what the node measures.
fn measured(cpu: f64, memory: f64, agents: u32, max: u32) -> f64 {
    load_score(cpu, memory, agents, max)
}

#[test]
fn a_placement_raises_the_estimate_at_once() {
    let mut v = view();
    let t0 = Instant::now();
    v.upsert(synthetic_node("a", 100, 0, 10.0, 10.0), t0);
    v.upsert(synthetic_node("b", 100, 0, 11.0, 10.0), t0);
    assert_eq!(pick(&mut v, &SelectRequest::default(), t0), "a");
    let expected = measured(10.0, 10.0, 1, 100) + load_of(DEFAULT_AGENT_COST);
    assert!((load(&v, "a") - expected).abs() < EPS, "{}", load(&v, "a"));
    // a now looks busier than b, whose CPU is only 1 point higher.
    assert_eq!(pick(&mut v, &SelectRequest::default(), t0), "b");
}

#[test]
fn heartbeats_catching_up_bring_the_estimate_back_to_measured() {
    let mut v = view();
    let decay = Decay::default();
    let t0 = Instant::now();
    v.upsert(synthetic_node("a", 100, 0, 10.0, 10.0), t0);
    v.apply_heartbeat(&heartbeat("a", 10.0, 10.0, 0), t0);
    let agent = Resources {
        cpu: 20.0,
        memory: 0.0,
    };
    let req = SelectRequest {
        resources: Some(agent),
        ..SelectRequest::default()
    };
    pick(&mut v, &req, t0);
    v.apply_assignment(
        &event(AssignmentAction::Assigned, "ag", "a", Some(agent)),
        t0,
    );
    let full = measured(10.0, 10.0, 1, 100) + load_of(agent);
    assert!((load(&v, "a") - full).abs() < EPS);

    // Time alone changes nothing: only measurements move the estimate.
    v.expire(t0 + 60 * S);
    assert!((load(&v, "a") - full).abs() < EPS);

    // The agent started (the count says so) but its CPU is not measured yet.
    v.apply_heartbeat(&heartbeat("a", 10.0, 10.0, 1), t0 + decay.hold);
    assert!((load(&v, "a") - full).abs() < EPS, "held in full");

    // Halfway through the fade, the node measures half of the agent's CPU.
    v.apply_heartbeat(
        &heartbeat("a", 20.0, 10.0, 1),
        t0 + decay.hold + decay.fade / 2,
    );
    let halfway = measured(20.0, 10.0, 1, 100) + load_of(agent) / 2.0;
    assert!((load(&v, "a") - halfway).abs() < EPS);
    assert!(
        (halfway - full).abs() < EPS,
        "a real node's estimate stays put"
    );

    // Caught up: the estimate is the measured load, the agent's CPU in it.
    let later = t0 + decay.hold + decay.fade;
    v.apply_heartbeat(&heartbeat("a", 30.0, 10.0, 1), later);
    assert!((load(&v, "a") - measured(30.0, 10.0, 1, 100)).abs() < EPS);
    assert_eq!(v.stats().estimated_load.unwrap().pending, 0);

    // A simulated node never shows its agents' CPU: back to what it reports.
    v.upsert(synthetic_node("sim", 100, 0, 10.0, 10.0), later);
    v.apply_heartbeat(&heartbeat("sim", 10.0, 10.0, 0), later);
    let only_sim = SelectRequest {
        exclude: vec!["a".into()],
        ..req
    };
    assert_eq!(pick(&mut v, &only_sim, later), "sim");
    v.apply_assignment(
        &event(AssignmentAction::Assigned, "ag-sim", "sim", Some(agent)),
        later,
    );
    assert!(load(&v, "sim") > measured(10.0, 10.0, 1, 100) + EPS);
    v.apply_heartbeat(
        &heartbeat("sim", 10.0, 10.0, 1),
        later + decay.hold + decay.fade,
    );
    assert!((load(&v, "sim") - measured(10.0, 10.0, 1, 100)).abs() < EPS);
}

#[test]
fn a_burst_on_unequal_nodes_ends_with_estimates_within_one_agent() {
    let mut v = view();
    let t0 = Instant::now();
    let ids: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let (cpu, memory) = (5.0 + 6.0 * i as f64, 70.0 - 5.0 * i as f64);
        v.upsert(synthetic_node(id, 1000, 0, cpu, memory), t0);
    }
    // One batch: every pick at the same instant, each counting for the next.
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        *counts
            .entry(pick(&mut v, &SelectRequest::default(), t0))
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 10, "every node took a share: {counts:?}");
    let spread = v.stats().estimated_load.unwrap();
    assert!(
        spread.max - spread.min <= spread.agent_cost + EPS,
        "{spread:?}, {counts:?}"
    );
    // Most went where the measured load was lowest, but not all of them.
    assert!(
        counts["n0"] > counts["n9"] && counts["n0"] < 200,
        "{counts:?}"
    );
}

#[test]
fn a_batch_on_equal_nodes_spreads_evenly() {
    let mut v = view();
    let t0 = Instant::now();
    for i in 0..10 {
        v.upsert(synthetic_node(&format!("n{i}"), 1000, 0, 30.0, 40.0), t0);
    }
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        *counts
            .entry(pick(&mut v, &SelectRequest::default(), t0))
            .or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
}

#[test]
fn requested_resources_are_honoured() {
    let mut v = view();
    let t0 = Instant::now();
    v.upsert(synthetic_node("a", 100, 0, 10.0, 10.0), t0);
    v.upsert(synthetic_node("b", 100, 0, 10.0, 10.0), t0);
    let heavy = Resources {
        cpu: 40.0,
        memory: 0.0,
    };
    let req = SelectRequest {
        resources: Some(heavy),
        ..SelectRequest::default()
    };
    let first = pick(&mut v, &req, t0);
    let expected = measured(10.0, 10.0, 1, 100) + load_of(heavy);
    assert!((load(&v, &first) - expected).abs() < EPS);
    // Default-cost agents go to the other node until it is as loaded.
    let other = if first == "a" { "b" } else { "a" };
    for _ in 0..5 {
        assert_eq!(pick(&mut v, &SelectRequest::default(), t0), other);
    }
    // A light request is counted as light, below the default.
    let light = Resources {
        cpu: 0.1,
        memory: 0.0,
    };
    let before = load(&v, other);
    let req = SelectRequest {
        resources: Some(light),
        exclude: vec![first.clone()],
        ..SelectRequest::default()
    };
    pick(&mut v, &req, t0);
    let step = measured(10.0, 10.0, 6, 100) - measured(10.0, 10.0, 5, 100);
    assert!((load(&v, other) - before - step - load_of(light)).abs() < EPS);
}

#[test]
fn agents_without_requests_cost_the_default_or_what_the_node_shows() {
    let mut v = view();
    let decay = Decay::default();
    let t0 = Instant::now();
    v.upsert(synthetic_node("busy", 100, 0, 10.0, 10.0), t0);
    v.upsert(synthetic_node("fresh", 100, 0, 10.0, 10.0), t0);
    v.apply_heartbeat(&heartbeat("busy", 10.0, 10.0, 0), t0);
    for k in 0..4 {
        let agent = format!("ag-{k}");
        v.apply_assignment(&event(AssignmentAction::Assigned, &agent, "busy", None), t0);
    }
    // Settled: its four agents measure 10 % CPU each above the idle 10 %.
    let t1 = t0 + decay.hold + decay.fade;
    v.apply_heartbeat(&heartbeat("busy", 50.0, 10.0, 4), t1);
    let observed = Resources {
        cpu: 10.0,
        memory: DEFAULT_AGENT_COST.memory,
    };
    let only = |id: &str| SelectRequest {
        exclude: vec![if id == "busy" { "fresh" } else { "busy" }.into()],
        ..SelectRequest::default()
    };
    let before = load(&v, "busy");
    pick(&mut v, &only("busy"), t1);
    let step = measured(50.0, 10.0, 5, 100) - measured(50.0, 10.0, 4, 100);
    assert!((load(&v, "busy") - before - step - load_of(observed)).abs() < EPS);

    // Nothing observed on the fresh node: the configured default.
    let before = load(&v, "fresh");
    pick(&mut v, &only("fresh"), t1);
    let step = measured(10.0, 10.0, 1, 100) - measured(10.0, 10.0, 0, 100);
    assert!((load(&v, "fresh") - before - step - load_of(DEFAULT_AGENT_COST)).abs() < EPS);

    // A smaller configured default is what the fresh node's agents cost.
    let small = Resources {
        cpu: 0.5,
        memory: 0.0,
    };
    let mut w = View::with_seed(
        Settings {
            agent_cost: small,
            ..Settings::default()
        },
        1,
    );
    w.upsert(synthetic_node("x", 100, 0, 10.0, 10.0), t0);
    pick(&mut w, &SelectRequest::default(), t0);
    let expected = measured(10.0, 10.0, 1, 100) + load_of(small);
    assert!((load(&w, "x") - expected).abs() < EPS);
}

#[test]
fn an_agent_leaving_takes_its_cost_along() {
    let mut v = view();
    let t0 = Instant::now();
    v.upsert(synthetic_node("a", 100, 0, 10.0, 10.0), t0);
    v.upsert(synthetic_node("b", 100, 0, 10.0, 10.0), t0);
    let heavy = Some(Resources {
        cpu: 30.0,
        memory: 0.0,
    });
    v.apply_assignment(&event(AssignmentAction::Assigned, "ag", "a", heavy), t0);
    assert!(load(&v, "a") > load(&v, "b") + 0.1);
    v.apply_assignment(&event(AssignmentAction::Migrated, "ag", "b", heavy), t0);
    assert!((load(&v, "a") - measured(10.0, 10.0, 0, 100)).abs() < EPS);
    assert!(
        load(&v, "b") > load(&v, "a") + 0.1,
        "the cost moved with it"
    );
    v.apply_assignment(&event(AssignmentAction::Unassigned, "ag", "b", None), t0);
    assert!((load(&v, "b") - measured(10.0, 10.0, 0, 100)).abs() < EPS);
    // A pick the coordinator never confirms stops counting when it expires.
    pick(&mut v, &SelectRequest::default(), t0);
    assert_eq!(v.stats().estimated_load.unwrap().pending, 1);
    v.expire(t0 + 60 * S);
    assert_eq!(v.stats().estimated_load.unwrap().pending, 0);
    assert!((load(&v, "a") - load(&v, "b")).abs() < EPS);
}

#[test]
fn replicas_agree_on_the_estimate() {
    let t0 = Instant::now();
    let decay = Decay::default();
    let (mut picker, mut other) = (view(), view());
    for v in [&mut picker, &mut other] {
        for id in ["a", "b", "c"] {
            v.upsert(synthetic_node(id, 100, 0, 20.0, 20.0), t0);
            v.apply_heartbeat(&heartbeat(id, 20.0, 20.0, 0), t0);
        }
    }
    // One replica picks; the coordinator's events reach both a moment later.
    let event_at = t0 + Duration::from_millis(5);
    let mut events = Vec::new();
    for k in 0..9 {
        let node = pick(&mut picker, &SelectRequest::default(), t0);
        events.push(event(
            AssignmentAction::Assigned,
            &format!("ag-{k}"),
            &node,
            None,
        ));
    }
    for v in [&mut picker, &mut other] {
        for ev in &events {
            v.apply_assignment(ev, event_at);
        }
    }
    let cost = load_of(DEFAULT_AGENT_COST);
    for at in [t0 + S, t0 + decay.hold + decay.fade / 2] {
        for v in [&mut picker, &mut other] {
            for id in ["a", "b", "c"] {
                v.apply_heartbeat(&heartbeat(id, 20.0, 20.0, 3), at);
            }
        }
        for id in ["a", "b", "c"] {
            let (p, o) = (load(&picker, id), load(&other, id));
            assert!((p - o).abs() < 0.01 * cost, "{id}: {p} vs {o}");
            assert!(p > measured(20.0, 20.0, 3, 100) + cost, "still pending");
        }
    }
    let pending = |v: &View| v.stats().estimated_load.unwrap().pending;
    assert_eq!(
        (pending(&picker), pending(&other)),
        (9, 9),
        "the picks became the placements"
    );
}

#[test]
fn a_node_never_measured_is_not_taken_for_idle() {
    let mut v = view();
    let t0 = Instant::now();
    v.upsert(synthetic_node("busy", 100, 0, 70.0, 70.0), t0);
    // The registry's record of a node that just announced: no metrics yet.
    let mut fresh = synthetic_node("fresh", 100, 0, 0.0, 0.0);
    fresh.uptime_s = 0;
    v.upsert(fresh, t0);
    assert_eq!(v.stats().unmeasured_nodes, 1);
    assert_eq!(pick(&mut v, &SelectRequest::default(), t0), "busy");
    // Its first heartbeat says how busy it really is.
    v.apply_heartbeat(&heartbeat("fresh", 5.0, 10.0, 0), t0);
    assert_eq!(v.stats().unmeasured_nodes, 0);
    assert_eq!(pick(&mut v, &SelectRequest::default(), t0), "fresh");
    // A record without metrics, long after the last heartbeat, does not erase them.
    let mut again = synthetic_node("fresh", 100, 0, 0.0, 0.0);
    again.uptime_s = 0;
    v.upsert(again, t0 + 60 * S);
    assert_eq!(v.node("fresh").unwrap().cpu_usage, 5.0);
}
