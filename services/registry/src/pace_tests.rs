//! A node's own heartbeat interval: the status machine counts its missed heartbeats at
//! its pace, driven with explicit times (no I/O, no sleeping).

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_protocol::{NodeEventKind, NodeRole, NodeStatus, RegisterNodeRequest};

use crate::machine_tests::{Clock, heartbeat, kinds, write};
use crate::member::Thresholds;
use crate::membership::Membership;
use crate::model::{self, tests::announce};

const S: Duration = Duration::from_secs(1);

/// A registration as the HTTP gateway forwards it, declaring `interval` seconds.
fn registration(id: &str, interval: Option<f64>) -> RegisterNodeRequest {
    RegisterNodeRequest {
        id: id.into(),
        hostname: format!("{id}.host"),
        ip_address: "10.0.0.9".into(),
        port: 8000,
        role: NodeRole::Worker,
        max_agents: 4,
        services: vec!["wrapper".into()],
        labels: BTreeMap::new(),
        heartbeat_interval: interval,
    }
}

/// The cluster's defaults (1 s interval, suspect after 2 s, offline after 3 s), with
/// `paced` registered at `interval` and `plain` announced, both heard at t=0.
fn cluster(c: &Clock, interval: f64) -> Membership {
    let mut m = Membership::new(Thresholds::default());
    let (t, u) = c.at(0);
    let node = model::from_registration(&registration("paced", Some(interval)), None, u);
    m.written("paced", node, 1, t);
    m.on_announce(announce("plain"), t, u);
    let plan = m.plan("plain", t, u).expect("a join is written");
    write(&mut m, &plan, 2, t);
    m.on_heartbeat(&heartbeat("paced", 1, 0), t, u);
    m.on_heartbeat(&heartbeat("plain", 1, 0), t, u);
    m
}

/// The status-changing events due at `ms`, written as they come (from revision `rev`).
fn step(m: &mut Membership, c: &Clock, ms: u64, rev: &mut u64) -> Vec<(String, NodeEventKind)> {
    let (t, u) = c.at(ms);
    let plans = m.due(t, u);
    for plan in &plans {
        write(m, plan, *rev, t);
        *rev += 1;
    }
    plans
        .iter()
        .zip(kinds(&plans))
        .map(|(p, k)| (p.id.clone(), k))
        .collect()
}

#[test]
fn a_node_at_its_own_pace_is_judged_by_missed_heartbeats_counted_at_that_pace() {
    let th = Thresholds::default();
    assert_eq!(th.at_pace(None), th, "absent: the cluster's interval");
    let slow = th.at_pace(Some(30.0));
    assert_eq!(slow.suspect_after, 60 * S, "two missed heartbeats of 30 s");
    assert_eq!(
        slow.offline_after,
        90 * S,
        "three missed heartbeats of 30 s"
    );
    assert_eq!(
        (slow.interval, slow.quarantine(), slow.tick()),
        (th.interval, th.quarantine(), th.tick()),
        "only the liveness thresholds scale"
    );
    // Faster than the cluster: never judged sooner than today.
    assert_eq!(th.at_pace(Some(0.1)), th);
    // A value no request could carry is not trusted: an hour at most.
    assert_eq!(th.at_pace(Some(1e12)), th.at_pace(Some(3600.0)));
    assert_eq!(th.at_pace(Some(-5.0)), th);
}

#[test]
fn a_30_s_node_stays_online_through_its_gaps_and_goes_offline_after_the_scaled_thresholds() {
    let c = Clock::new();
    let mut m = cluster(&c, 30.0);
    let mut rev = 3;
    // 25 s of silence: one heartbeat of the slow node is not even due yet, while the
    // default node, silent as long, went suspect after 2 s and offline after 3 s.
    assert_eq!(
        step(&mut m, &c, 2_050, &mut rev),
        [("plain".to_string(), NodeEventKind::Suspect)]
    );
    assert_eq!(
        step(&mut m, &c, 3_050, &mut rev),
        [("plain".to_string(), NodeEventKind::Offline)]
    );
    assert!(step(&mut m, &c, 25_000, &mut rev).is_empty());
    let (t, _) = c.at(25_000);
    assert_eq!(m.falling_silent(t), 0, "no one alive is falling silent");
    assert_eq!(m.served("paced").unwrap().status, NodeStatus::Online);

    // Its next heartbeat, 30 s after the first, then silence: two missed (60 s) make
    // it suspect, three (90 s) offline, not a moment before.
    let (t, u) = c.at(30_000);
    m.on_heartbeat(&heartbeat("paced", 2, 0), t, u);
    assert!(step(&mut m, &c, 89_900, &mut rev).is_empty());
    let (t, _) = c.at(90_050);
    assert_eq!(m.falling_silent(t), 1);
    assert_eq!(
        step(&mut m, &c, 90_050, &mut rev),
        [("paced".to_string(), NodeEventKind::Suspect)]
    );
    assert!(step(&mut m, &c, 119_900, &mut rev).is_empty());
    assert_eq!(
        step(&mut m, &c, 120_050, &mut rev),
        [("paced".to_string(), NodeEventKind::Offline)]
    );
    assert_eq!(m.served("paced").unwrap().status, NodeStatus::Offline);
}

#[test]
fn another_replica_reads_the_pace_from_the_stored_record() {
    let c = Clock::new();
    let first = cluster(&c, 30.0);
    let stored = first.stored("paced").expect("registered");
    assert_eq!(stored.node.heartbeat_interval, Some(30.0));

    // A replica started later learns the record from the bucket, then hears the node.
    let mut other = Membership::new(Thresholds::default());
    let (t, u) = c.at(1_000);
    other.apply_entry("paced", stored.revision, Some(stored.node), t);
    other.on_heartbeat(&heartbeat("paced", 2, 0), t, u);
    let mut rev = stored.revision + 1;
    assert!(step(&mut other, &c, 60_900, &mut rev).is_empty());
    assert_eq!(
        step(&mut other, &c, 61_050, &mut rev),
        [("paced".to_string(), NodeEventKind::Suspect)]
    );
}

#[test]
fn registering_again_without_an_interval_returns_the_node_to_the_clusters_pace() {
    let c = Clock::new();
    let mut m = cluster(&c, 30.0);
    let (t, u) = c.at(0);
    let stored = m.stored("paced").unwrap();
    let again = model::from_registration(&registration("paced", None), Some(&stored.node), u);
    assert_eq!(again.heartbeat_interval, None);
    m.written("paced", again, 10, t);
    let mut rev = 11;
    let events = step(&mut m, &c, 2_050, &mut rev);
    assert!(
        events.contains(&("paced".to_string(), NodeEventKind::Suspect)),
        "{events:?}"
    );
}

#[test]
fn an_announce_may_declare_the_pace_too() {
    let c = Clock::new();
    let mut m = Membership::new(Thresholds::default());
    let (t, u) = c.at(0);
    let mut slow = announce("n1");
    slow.heartbeat_interval = Some(5.0);
    m.on_announce(slow, t, u);
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.node.heartbeat_interval, Some(5.0));
    write(&mut m, &plan, 1, t);
    let mut rev = 2;
    assert!(step(&mut m, &c, 9_900, &mut rev).is_empty());
    assert_eq!(
        step(&mut m, &c, 10_050, &mut rev),
        [("n1".to_string(), NodeEventKind::Suspect)]
    );
    // Announcing again without it: the cluster's interval.
    let (t, u) = c.at(10_100);
    m.on_announce(announce("n1"), t, u);
    let plan = m.plan("n1", t, u).unwrap();
    assert_eq!(plan.node.heartbeat_interval, None);
    write(&mut m, &plan, rev, t);
    rev += 1;
    assert_eq!(
        step(&mut m, &c, 12_200, &mut rev),
        [("n1".to_string(), NodeEventKind::Suspect)]
    );
}
