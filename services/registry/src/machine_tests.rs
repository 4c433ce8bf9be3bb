//! The status machine, driven with explicit times: no I/O, no sleeping.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shoal_protocol::{Heartbeat, Leave, NodeEventKind, NodeStatus};

use crate::member::{Op, Outcome, Plan, Thresholds};
use crate::membership::{HeartbeatOutcome, Membership};
use crate::model::tests::announce;

const S: Duration = Duration::from_secs(1);

pub(crate) struct Clock {
    pub start: Instant,
    pub start_utc: DateTime<Utc>,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            start_utc: Utc::now(),
        }
    }
    pub fn at(&self, millis: u64) -> (Instant, DateTime<Utc>) {
        let d = Duration::from_millis(millis);
        (self.start + d, self.start_utc + d)
    }
}

pub(crate) fn heartbeat(id: &str, seq: u64, agents: u32) -> Heartbeat {
    Heartbeat {
        id: id.into(),
        seq,
        cpu_usage: 10.0,
        memory_usage: 20.0,
        disk_usage: 30.0,
        load_average: 0.5,
        active_agents: agents,
        uptime_s: 100,
        sent_at: Utc::now(),
        agents_digest: None,
    }
}

/// Carries out `plan` as a successful write at revision `rev`.
pub(crate) fn write(m: &mut Membership, plan: &Plan, rev: u64, now: Instant) {
    let outcome = match plan.op {
        Op::Delete(_) => Outcome::Deleted,
        _ => Outcome::Written(rev),
    };
    m.finish(plan, outcome, now);
}

/// A member that joined at t=0 (revision 1).
fn joined(c: &Clock) -> Membership {
    let mut m = Membership::new(Thresholds::default());
    let (t, u) = c.at(0);
    m.on_announce(announce("n1"), t, u);
    let plan = m.plan("n1", t, u).expect("a join is written");
    assert_eq!(plan.op, Op::Create);
    assert_eq!(plan.change.as_ref().unwrap().kind, NodeEventKind::Joined);
    write(&mut m, &plan, 1, t);
    m
}

pub(crate) fn kinds(plans: &[Plan]) -> Vec<NodeEventKind> {
    plans
        .iter()
        .filter_map(|p| p.change.as_ref().map(|c| c.kind))
        .collect()
}

#[test]
fn silence_makes_suspect_then_offline_and_heartbeats_recover() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(1000);
    assert_eq!(
        m.on_heartbeat(&heartbeat("n1", 1, 0), t, u),
        HeartbeatOutcome::Nothing
    );
    // Within two intervals of the last heartbeat: nothing.
    let (t, u) = c.at(2900);
    assert!(m.due(t, u).is_empty());
    let (t, u) = c.at(3050);
    let plans = m.due(t, u);
    assert_eq!(kinds(&plans), [NodeEventKind::Suspect]);
    assert_eq!(plans[0].node.status, NodeStatus::Suspect);
    assert!(!plans[0].node.healthy);
    write(&mut m, &plans[0], 2, t);
    let (t, u) = c.at(3900);
    assert!(m.due(t, u).is_empty());
    let (t, u) = c.at(4050);
    let plans = m.due(t, u);
    assert_eq!(kinds(&plans), [NodeEventKind::Offline]);
    write(&mut m, &plans[0], 3, t);
    assert_eq!(m.served("n1").unwrap().status, NodeStatus::Offline);

    let (t, u) = c.at(9000);
    assert_eq!(
        m.on_heartbeat(&heartbeat("n1", 2, 0), t, u),
        HeartbeatOutcome::Kick
    );
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.change.as_ref().unwrap().kind, NodeEventKind::Recovered);
    assert_eq!(plan.node.status, NodeStatus::Online);
    write(&mut m, &plan, 4, t);
    assert_eq!(m.count(), 1);
}

#[test]
fn an_offline_node_shows_no_agents_until_it_reports_again() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(500);
    m.on_heartbeat(&heartbeat("n1", 1, 4), t, u);
    if let Some(plan) = m.plan("n1", t, u) {
        write(&mut m, &plan, 2, t);
    }
    assert_eq!(m.served("n1").unwrap().active_agents, 4);
    let mut rev = 3;
    for ms in [2600, 3600] {
        let (t, u) = c.at(ms);
        for plan in m.due(t, u) {
            write(&mut m, &plan, rev, t);
            rev += 1;
        }
    }
    let served = m.served("n1").unwrap();
    assert_eq!(served.status, NodeStatus::Offline);
    assert_eq!(served.active_agents, 0, "its agents were moved off");
    assert_eq!(m.stats(0).total_agents, 0);
    let (t, u) = c.at(9000);
    m.on_heartbeat(&heartbeat("n1", 2, 1), t, u);
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.node.status, NodeStatus::Online);
    assert_eq!(plan.node.active_agents, 1);
}

#[test]
fn a_heartbeat_in_flight_before_the_status_was_learned_does_not_recover() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(2100);
    let plans = m.due(t, u);
    assert_eq!(kinds(&plans), [NodeEventKind::Suspect]);
    // Heard before the suspect write landed.
    let (t1, u1) = c.at(2150);
    m.on_heartbeat(&heartbeat("n1", 1, 0), t1, u1);
    let (t2, _) = c.at(2200);
    write(&mut m, &plans[0], 2, t2);
    let (t, u) = c.at(2300);
    assert!(
        m.due(t, u).is_empty(),
        "no recovery from an older heartbeat"
    );
    let (t, u) = c.at(3150);
    m.on_heartbeat(&heartbeat("n1", 2, 0), t, u);
    assert_eq!(kinds(&m.due(t, u)), [NodeEventKind::Recovered]);
}

#[test]
fn a_closed_connection_makes_suspect_at_once_and_late_heartbeats_do_not_undo_it() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(500);
    m.on_heartbeat(&heartbeat("n1", 1, 0), t, u);
    let (t, u) = c.at(600);
    assert!(m.on_disconnect("n1", t));
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.change.as_ref().unwrap().kind, NodeEventKind::Suspect);
    assert_eq!(
        plan.change.as_ref().unwrap().reason.as_deref(),
        Some("connection closed")
    );
    write(&mut m, &plan, 2, t);
    // A heartbeat that was in flight when the connection closed.
    let (t, u) = c.at(650);
    m.on_heartbeat(&heartbeat("n1", 2, 0), t, u);
    assert!(m.due(t, u).is_empty());
    // Missed heartbeats then confirm offline.
    let (t, u) = c.at(3700);
    assert_eq!(kinds(&m.due(t, u)), [NodeEventKind::Offline]);
}

#[test]
fn a_reconnected_node_recovers_after_the_quarantine() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(100);
    m.on_disconnect("n1", t);
    let plan = m.plan("n1", t, u).unwrap();
    write(&mut m, &plan, 2, t);
    let (t, u) = c.at(1200);
    m.on_heartbeat(&heartbeat("n1", 2, 0), t, u);
    assert_eq!(kinds(&m.due(t, u)), [NodeEventKind::Recovered]);
}

#[test]
fn replicas_racing_on_a_transition_publish_one_event() {
    let c = Clock::new();
    let mut a = joined(&c);
    let mut b = joined(&c);
    let (t, u) = c.at(2100);
    let pa = a.due(t, u);
    let pb = b.due(t, u);
    assert_eq!(kinds(&pa), [NodeEventKind::Suspect]);
    assert_eq!(kinds(&pb), [NodeEventKind::Suspect]);
    // A wins the compare-and-set; B loses and reads A's value.
    write(&mut a, &pa[0], 2, t);
    let again = b.finish(
        &pb[0],
        Outcome::Conflict(Some((2, Some(Box::new(pa[0].node.clone()))))),
        t,
    );
    assert!(again);
    assert!(
        b.plan("n1", t, u).is_none(),
        "the loser has nothing left to write"
    );
    assert_eq!(b.served("n1").unwrap().status, NodeStatus::Suspect);
}

#[test]
fn a_registry_that_starts_late_gives_nodes_a_grace_period() {
    let c = Clock::new();
    let mut m = Membership::new(Thresholds::default());
    let (t, _) = c.at(0);
    let mut node = crate::model::from_announce(&announce("n1"), c.start_utc);
    node.status = NodeStatus::Online;
    m.apply_entry("n1", 7, Some(node), t);
    let (t, u) = c.at(1900);
    assert!(m.due(t, u).is_empty());
    let (t, u) = c.at(2100);
    assert_eq!(kinds(&m.due(t, u)), [NodeEventKind::Suspect]);
}

#[test]
fn unchanged_announces_write_nothing_and_changes_are_updates() {
    let c = Clock::new();
    let mut m = joined(&c);
    let stored = m.stored("n1").unwrap();
    let same = shoal_protocol::Announce {
        started_at: stored.node.started_at,
        ..announce("n1")
    };
    let (t, u) = c.at(200);
    m.on_announce(same.clone(), t, u);
    assert!(m.plan("n1", t, u).is_none());
    let mut changed = same;
    changed.max_agents = 20;
    m.on_announce(changed, t, u);
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.change.as_ref().unwrap().kind, NodeEventKind::Updated);
    assert_eq!(plan.node.max_agents, 20);
}

#[test]
fn capacity_is_written_at_once_metrics_only_per_snapshot() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(500);
    m.on_heartbeat(&heartbeat("n1", 1, 0), t, u);
    assert!(
        m.due(t, u).is_empty(),
        "metrics alone wait for the snapshot"
    );
    assert_eq!(
        m.on_heartbeat(&heartbeat("n1", 2, 3), t, u),
        HeartbeatOutcome::Kick
    );
    let plan = m.plan("n1", t, u).unwrap();
    assert!(plan.change.is_none(), "no event for capacity");
    assert_eq!(plan.node.active_agents, 3);
    write(&mut m, &plan, 2, t);
    let mut busier = heartbeat("n1", 3, 3);
    busier.cpu_usage = 90.0;
    for ms in (1000..15_000).step_by(1000) {
        let (t, u) = c.at(ms);
        busier.seq += 1;
        m.on_heartbeat(&busier, t, u);
        let plans = m.due(t, u);
        if ms < 10_500 {
            assert!(plans.is_empty(), "no snapshot before the period at {ms} ms");
        } else if let Some(p) = plans.first() {
            assert_eq!(p.node.cpu_usage, 90.0);
            return;
        }
    }
    panic!("no metrics snapshot within 15 s");
}

#[test]
fn leave_then_prune_after_retention() {
    let c = Clock::new();
    let mut m = joined(&c);
    m.on_leave(Leave {
        id: "n1".into(),
        reason: Some("shutdown".into()),
        sent_at: Utc::now(),
    });
    let (t, u) = c.at(100);
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.change.as_ref().unwrap().kind, NodeEventKind::Left);
    write(&mut m, &plan, 2, t);
    // A left node is not judged by silence.
    let (t, u) = c.at(60_000);
    assert!(m.due(t, u).is_empty());
    let (t, u) = c.at(601_000);
    let plans = m.due(t, u);
    assert_eq!(kinds(&plans), [NodeEventKind::Pruned]);
    write(&mut m, &plans[0], 0, t);
    assert_eq!(m.count(), 0);
}

#[test]
fn a_left_node_that_announces_joins_again() {
    let c = Clock::new();
    let mut m = joined(&c);
    m.on_leave(Leave {
        id: "n1".into(),
        reason: None,
        sent_at: Utc::now(),
    });
    let (t, u) = c.at(100);
    let plan = m.plan("n1", t, u).unwrap();
    write(&mut m, &plan, 2, t);
    let (t, u) = c.at(200);
    assert_eq!(
        m.on_heartbeat(&heartbeat("n1", 1, 0), t, u),
        HeartbeatOutcome::Unknown
    );
    m.on_announce(announce("n1"), t, u);
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.change.as_ref().unwrap().kind, NodeEventKind::Joined);
    assert_eq!(plan.node.status, NodeStatus::Online);
}

#[test]
fn draining_survives_failure_and_recovery() {
    let c = Clock::new();
    let mut m = joined(&c);
    let mut node = m.stored("n1").unwrap().node;
    node.draining = true;
    crate::model::set_status(&mut node, NodeStatus::Draining);
    let (t, u) = c.at(100);
    m.written("n1", node, 2, t);
    let (t, u2) = c.at(3200);
    let _ = u;
    let plans = m.due(t, u2);
    assert_eq!(kinds(&plans), [NodeEventKind::Offline]);
    write(&mut m, &plans[0], 3, t);
    let (t, u) = c.at(5000);
    m.on_heartbeat(&heartbeat("n1", 1, 0), t, u);
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.node.status, NodeStatus::Draining);
    assert!(plan.node.draining);
}

#[test]
fn unknown_heartbeating_nodes_are_asked_to_announce_at_a_bounded_rate() {
    let c = Clock::new();
    let mut m = Membership::new(Thresholds::default());
    let (t, u) = c.at(0);
    assert_eq!(
        m.on_heartbeat(&heartbeat("x", 1, 0), t, u),
        HeartbeatOutcome::Unknown
    );
    assert_eq!(m.wanted_announces(t), ["x"]);
    let (t, u) = c.at(1000);
    m.on_heartbeat(&heartbeat("x", 2, 0), t, u);
    assert!(m.wanted_announces(t).is_empty());
    let (t, u) = c.at(2100);
    m.on_heartbeat(&heartbeat("x", 3, 0), t, u);
    assert_eq!(m.wanted_announces(t), ["x"]);
    // Silent and unknown: forgotten.
    let (t, _) = c.at(10_000);
    m.wanted_announces(t);
    assert!(m.served("x").is_none());
    assert_eq!(m.list(&Default::default()).0.len(), 0);
}

#[test]
fn a_write_in_flight_defers_the_next_plan() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(3100);
    let plans = m.due(t, u);
    assert_eq!(plans.len(), 1);
    assert!(m.due(t, u).is_empty(), "one write at a time per node");
    let again = m.finish(&plans[0], Outcome::Failed, t);
    assert!(!again);
    assert!(m.due(t, u).is_empty(), "a failed write backs off");
    let (t, u) = c.at(4200);
    assert_eq!(m.due(t, u).len(), 1);
    let _ = S;
}

/// What the tick asks before it lets silence condemn anyone: exactly the members
/// `due` would make suspect or offline for silence, and none once a replica back
/// from its own outage has given everyone grace.
#[test]
fn falling_silent_counts_whom_silence_would_condemn_and_grace_clears_it() {
    let c = Clock::new();
    let mut m = joined(&c);
    let (t, u) = c.at(1000);
    m.on_heartbeat(&heartbeat("n1", 1, 0), t, u);
    let (t, _) = c.at(2900);
    assert_eq!(m.falling_silent(t), 0);
    let (t, u) = c.at(3050);
    assert_eq!(m.falling_silent(t), 1);
    let plans = m.due(t, u);
    assert_eq!(kinds(&plans), [NodeEventKind::Suspect]);
    write(&mut m, &plans[0], 2, t);
    // Suspect: counted again only once silence would make it offline.
    let (t, _) = c.at(3900);
    assert_eq!(m.falling_silent(t), 0);
    let (t, _) = c.at(4050);
    assert_eq!(m.falling_silent(t), 1);

    // The replica was the one cut off: grace from now, and nobody falls silent
    // until the grace has passed without a heartbeat.
    m.grace_all(t + Thresholds::default().suspect_after);
    assert_eq!(m.falling_silent(t + S), 0);
    assert!(m.due(t + S, u + S).is_empty());
}

#[test]
fn stats_and_pages_agree_with_the_served_nodes_without_copying_them_all() {
    let c = Clock::new();
    let mut m = Membership::new(Thresholds::default());
    let (t, u) = c.at(0);
    for (rev, id) in (1..).zip(["n3", "n1", "n5", "n2", "n4"]) {
        m.on_announce(announce(id), t, u);
        let plan = m.plan(id, t, u).expect("a join is written");
        write(&mut m, &plan, rev, t);
    }
    // Heartbeats carry agent counts the stored records do not have yet.
    let (t, u) = c.at(300);
    for (agents, id) in (1..).zip(["n1", "n2", "n3"]) {
        m.on_heartbeat(&heartbeat(id, 1, agents), t, u);
    }
    let all = m.list(&shoal_protocol::ListNodesRequest::default()).0;
    let stats = m.stats(0);
    assert_eq!(stats.total_nodes, all.len());
    assert_eq!(
        stats.total_agents,
        all.iter().map(|n| u64::from(n.active_agents)).sum::<u64>()
    );
    assert_eq!(stats.total_agents, 6);
    let page = |after: Option<&str>| {
        m.list(&shoal_protocol::ListNodesRequest {
            after: after.map(str::to_string),
            limit: Some(2),
            ..Default::default()
        })
    };
    let (first, next) = page(None);
    let ids: Vec<_> = first.iter().map(|n| n.id.as_str()).collect();
    assert_eq!((ids, next.as_deref()), (vec!["n1", "n2"], Some("n2")));
    assert_eq!(
        first[1].active_agents, 2,
        "a page is served with live metrics"
    );
    let (second, next) = page(Some("n2"));
    let ids: Vec<_> = second.iter().map(|n| n.id.as_str()).collect();
    assert_eq!((ids, next.as_deref()), (vec!["n3", "n4"], Some("n4")));
    let (last, next) = page(Some("n4"));
    assert_eq!((last.len(), next), (1, None));
}

#[test]
fn a_large_membership_stretches_its_snapshots_to_a_bounded_write_rate() {
    // 20,000 nodes: snapshots every 20 to 30 s (at most 1,000 writes a second), not
    // every 10 to 15 s.
    let c = Clock::new();
    let mut m = Membership::new(Thresholds::default());
    let (t, u) = c.at(0);
    let ids: Vec<String> = (0..20_000).map(|i| format!("n{i}")).collect();
    for (rev, id) in (1..).zip(&ids) {
        m.on_announce(announce(id), t, u);
        let plan = m.plan(id, t, u).expect("a join is written");
        write(&mut m, &plan, rev, t);
    }
    let mut snapshots = 0;
    for second in 1..=31u64 {
        let (t, u) = c.at(second * 1000);
        for id in &ids {
            let mut hb = heartbeat(id, second, 0);
            hb.cpu_usage = second as f64;
            m.on_heartbeat(&hb, t, u);
        }
        let plans = m.due(t, u);
        if second < 20 {
            assert!(plans.is_empty(), "a snapshot after {second} s");
        }
        snapshots += plans.len();
        for plan in &plans {
            m.finish(plan, Outcome::Written(1_000_000 + second), t);
        }
    }
    assert_eq!(
        snapshots,
        ids.len(),
        "each node snapshotted once within 30 s"
    );
}
