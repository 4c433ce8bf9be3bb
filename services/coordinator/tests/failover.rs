//! Orphans, drains and balanced bursts with the real registry, announcers and
//! balancer.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_protocol::{
    AssignRequest, AssignmentAction, AssignmentEvent, ListAssignmentsRequest, NodeEvent,
    NodeEventKind, Subjects,
};
use shoal_testkit::{NatsServer, Postgres, wait_for};

#[tokio::test]
async fn agents_of_a_killed_node_are_reassigned_within_a_second() {
    let nats = NatsServer::start().await.unwrap();
    let pg = Postgres::start().await.unwrap();
    let db = pg.create_database().await.unwrap();
    let db_name = db.rsplit('/').next().unwrap().to_string();
    let url = nats.url();
    let _services = registry_and_balancer(&url);
    let mut victim = announcer(&url, "a1", 100);
    let _a2 = announcer(&url, "a2", 100);
    let _a3 = announcer(&url, "a3", 100);
    let _c1 = coordinator(&url, "c1", &[("SHOAL_DATABASE_URL", &db)]).unwrap();
    let client = nats.client().await.unwrap();
    let shoal = shoal(&client);
    wait_online(&shoal, 3).await;
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    // The registry lists a node a moment before its record reaches the KV bucket the
    // coordinator reads; the first pin waits for that.
    wait_for("the coordinator to know node a1", LONG, || async {
        shoal.assign(&pinned("agent-0", "a1")).await.ok()
    })
    .await
    .unwrap();
    for i in 1..50 {
        shoal
            .assign(&pinned(&format!("agent-{i}"), "a1"))
            .await
            .unwrap();
    }
    assert_eq!(on_node(&shoal, "a1").await, 50);

    let subjects = Subjects::default();
    let mut node_events = client
        .subscribe(subjects.registry_event("a1"))
        .await
        .unwrap();
    let mut moves = client
        .subscribe(subjects.coordinator_events_all())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let killed_at = Instant::now();
    victim.kill().unwrap();
    let offline_at = tokio::time::timeout(LONG, async {
        while let Some(m) = node_events.next().await {
            let e: NodeEvent = serde_json::from_slice(&m.payload).unwrap();
            if e.event == NodeEventKind::Offline {
                return Instant::now();
            }
        }
        panic!("registry events ended");
    })
    .await
    .unwrap();
    let mut placed = BTreeMap::new();
    let last_at = tokio::time::timeout(LONG, async {
        while let Some(m) = moves.next().await {
            let e: AssignmentEvent = serde_json::from_slice(&m.payload).unwrap();
            if e.event == AssignmentAction::Reassigned
                && e.previous_node_id.as_deref() == Some("a1")
            {
                placed.insert(e.agent_name, e.node_id.unwrap());
                if placed.len() == 50 {
                    return Instant::now();
                }
            }
        }
        panic!("coordinator events ended");
    })
    .await
    .unwrap();
    let took = last_at.saturating_duration_since(offline_at);
    println!(
        "MEASURED offline event {:?} after kill -9; all 50 agents reassigned {took:?} after it",
        offline_at - killed_at
    );
    assert!(took <= Duration::from_secs(1), "reassigned after {took:?}");
    assert!(
        placed.values().all(|n| n == "a2" || n == "a3"),
        "{placed:?}"
    );
    // Reads are served from the replica's tail of the log, a few ms behind the
    // events the leader publishes after each append.
    wait_for("assignments.list to show a1 empty", LONG, || async {
        (on_node(&shoal, "a1").await == 0).then_some(())
    })
    .await
    .unwrap();

    let pg_client = pg.connect(&db_name).await.unwrap();
    let orphaned = wait_for("50 orphaned rows in history", LONG, || async {
        let row = pg_client
            .query_one(
                "SELECT count(*) FROM assignment_history WHERE action = 'orphaned' AND previous_node_id = 'a1'",
                &[],
            )
            .await
            .ok()?;
        let n: i64 = row.get(0);
        (n >= 50).then_some(n)
    })
    .await
    .unwrap();
    assert_eq!(orphaned, 50);
    // Each move is explained: why (orphaned) and which candidates the balancer scored.
    let explained = wait_for("50 explained reassigned rows", LONG, || async {
        let row = pg_client
            .query_one(
                "SELECT count(*) FILTER (WHERE reason = 'orphaned' AND candidates ? 'candidates'), count(*) \
                 FROM assignment_history WHERE action = 'reassigned'",
                &[],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(1) >= 50).then(|| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
    })
    .await
    .unwrap();
    assert_eq!(explained, (50, 50));
}

#[tokio::test]
async fn a_draining_node_is_emptied_and_takes_no_new_agents() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let _services = registry_and_balancer(&url);
    let _a1 = announcer(&url, "a1", 100);
    let _a2 = announcer(&url, "a2", 100);
    let _c1 = coordinator(&url, "c1", &[]).unwrap();
    let client = nats.client().await.unwrap();
    let shoal = shoal(&client);
    wait_online(&shoal, 2).await;
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    for i in 0..20 {
        let req = AssignRequest {
            agent_name: format!("agent-{i}"),
            ..Default::default()
        };
        shoal.assign(&req).await.unwrap();
    }
    let before = on_node(&shoal, "a1").await;
    assert!(before > 0, "least_agents put some agents on a1");

    let started = Instant::now();
    shoal.drain_node("a1").await.unwrap();
    wait_for("a1 to be emptied", LONG, || async {
        (on_node(&shoal, "a1").await == 0).then_some(())
    })
    .await
    .unwrap();
    println!(
        "MEASURED drain of a1 ({before} agents) done in {:?}",
        started.elapsed()
    );
    assert_eq!(on_node(&shoal, "a2").await, 20);
    for i in 20..30 {
        let req = AssignRequest {
            agent_name: format!("agent-{i}"),
            ..Default::default()
        };
        assert_eq!(shoal.assign(&req).await.unwrap().node_id, "a2");
    }
    assert_eq!(on_node(&shoal, "a1").await, 0);
    let pinned_err = shoal.assign(&pinned("late", "a1")).await.unwrap_err();
    assert!(pinned_err.to_string().contains("draining"), "{pinned_err}");
}

#[tokio::test]
async fn a_burst_of_1000_least_agents_assigns_spreads_evenly() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    for i in 0..10 {
        put_node(&kv, &node(&format!("n{i}"), 1000)).await.unwrap();
    }
    let url = nats.url();
    let _balancer = balancer(&url);
    let _c1 = coordinator(&url, "c1", &[]).unwrap();
    let shoal = shoal(&client).with_timeout(Duration::from_secs(10));
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    wait_for("the balancer to see 10 nodes", LONG, || async {
        (shoal.balancer_stats().await.ok()?.nodes == 10).then_some(())
    })
    .await
    .unwrap();

    let started = Instant::now();
    let results = futures::stream::iter(0..1000)
        .map(|i| {
            let shoal = shoal.clone();
            async move {
                let req = AssignRequest {
                    agent_name: format!("agent-{i}"),
                    ..Default::default()
                };
                shoal.assign(&req).await
            }
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await;
    let took = started.elapsed();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        *per_node.entry(r.unwrap().node_id).or_default() += 1;
    }
    let (min, max) = (
        per_node.values().min().copied().unwrap_or(0),
        per_node.values().max().copied().unwrap_or(0),
    );
    println!(
        "MEASURED 1000 assigns in {took:?} ({:.0}/s): per node {per_node:?}",
        1000.0 / took.as_secs_f64()
    );
    assert_eq!(per_node.len(), 10);
    assert!(max - min <= 2, "spread {min}..{max}");
    // A read after the acks sees every one of them, whichever replica answers.
    let listed = shoal
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1000);
}
