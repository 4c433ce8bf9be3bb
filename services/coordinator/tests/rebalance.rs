//! Rebalancing with the real registry, announcers and balancer: two nodes hold 24
//! agents (two of them pinned), two empty nodes join. Off, nothing moves and a dry
//! run only reports; on, the leader evens the four nodes with the fewest moves,
//! each recorded as `rebalanced` straight from one node to another (no agent ever
//! waits), pins stay, the announcers run what they were moved, and the per-minute
//! budget paces the moves.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_protocol::{
    AssignRequest, AssignmentAction, AssignmentEvent, ErrorCode, RebalanceUpdate, ShoalClient,
};
use shoal_testkit::{NatsServer, wait_for};

async fn counts(shoal: &ShoalClient, nodes: &[&str]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for node in nodes {
        out.insert(node.to_string(), on_node(shoal, node).await);
    }
    out
}

fn spread(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().max().unwrap() - counts.values().min().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn joining_nodes_are_evened_with_the_fewest_moves_and_no_agent_waits() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let _services = registry_and_balancer(&url);
    let _n1 = announcer(&url, "n1", 50);
    let _n2 = announcer(&url, "n2", 50);
    let _c1 = coordinator(&url, "c1", &[("SHOAL_DETECTION_WINDOW", "1s")]).unwrap();
    let client = nats.client().await.unwrap();
    let shoal = shoal(&client);
    wait_online(&shoal, 2).await;
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();

    // Bad settings are refused, naming the field.
    let e = shoal
        .set_rebalance(&RebalanceUpdate {
            threshold: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.service_code(), Some(ErrorCode::BadRequest), "{e}");
    assert!(e.to_string().contains("threshold"), "{e}");

    // 24 agents on two nodes: two pinned to n1, 22 balanced.
    for i in 0..2 {
        wait_for("a pin to n1 to take", LONG, || async {
            shoal.assign(&pinned(&format!("pin-{i}"), "n1")).await.ok()
        })
        .await
        .unwrap();
    }
    for i in 0..22 {
        let req = AssignRequest {
            agent_name: format!("a-{i:02}"),
            request_id: Some(format!("r-{i}")),
            ..AssignRequest::default()
        };
        assign_acked(&shoal, &req, LONG).await.unwrap();
    }
    let _n3 = announcer(&url, "n3", 50);
    let _n4 = announcer(&url, "n4", 50);
    wait_online(&shoal, 4).await;
    let all = ["n1", "n2", "n3", "n4"];
    let before = counts(&shoal, &all).await;
    assert_eq!(before.values().sum::<usize>(), 24);
    assert_eq!(before["n3"] + before["n4"], 0, "{before:?}");

    // Off: the status shows the spread and the moves it would take; a dry run lists
    // them and moves nothing.
    let status = wait_for("the coordinator to count four nodes", LONG, || async {
        let s = shoal.rebalance_status().await.ok()?;
        (s.nodes == 4).then_some(s)
    })
    .await
    .unwrap();
    assert!(!status.settings.enabled);
    assert_eq!(status.spread as usize, spread(&before));
    assert!(
        status.held.as_deref().unwrap().contains("off"),
        "{status:?}"
    );
    let dry = shoal.rebalance_now(true).await.unwrap();
    assert!(dry.dry_run);
    // 12 agents each on n1 and n2: 6 go to each new node.
    let minimum = before.values().map(|n| n.saturating_sub(6)).sum::<usize>();
    assert_eq!(dry.moves.len(), minimum, "{dry:?}");
    assert!(dry.moves.iter().all(|m| !m.agent_name.starts_with("pin")));
    assert_eq!(dry.spread_after, 0);
    assert_eq!(counts(&shoal, &all).await, before, "a dry run moved agents");

    // On: every event is a straight move, never a wait.
    let mut events = client
        .subscribe(shoal_protocol::Subjects::default().coordinator_events_all())
        .await
        .unwrap();
    let status = shoal
        .set_rebalance(&RebalanceUpdate {
            enabled: Some(true),
            max_moves_per_minute: Some(6000),
            threshold: Some(1),
        })
        .await
        .unwrap();
    assert!(status.settings.enabled);
    let after = wait_for("the four nodes to be even", LONG, || async {
        let c = counts(&shoal, &all).await;
        (spread(&c) == 0).then_some(c)
    })
    .await
    .unwrap();
    let mut moves = 0;
    while moves < minimum {
        let msg = tokio::time::timeout(LONG, events.next())
            .await
            .unwrap()
            .unwrap();
        let ev: AssignmentEvent = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(ev.event, AssignmentAction::Rebalanced, "{ev:?}");
        assert!(
            ev.node_id.is_some() && ev.previous_node_id.is_some(),
            "{ev:?}"
        );
        assert!(
            !ev.agent_name.starts_with("pin"),
            "a pinned agent moved: {ev:?}"
        );
        moves += 1;
    }
    let status = shoal.rebalance_status().await.unwrap();
    assert_eq!(status.moves_total as usize, minimum, "{status:?} {after:?}");
    for i in 0..2 {
        let a = shoal.get_assignment(&format!("pin-{i}")).await.unwrap();
        assert_eq!(a.node_id, "n1");
        assert!(a.pinned);
    }
    // The announcers run what they were given.
    wait_for("every node to report its agents", LONG, || async {
        for node in all {
            let reported = shoal.get_node(node).await.ok()?.active_agents as usize;
            if reported != after[node] {
                return None;
            }
        }
        Some(())
    })
    .await
    .unwrap();

    // The budget paces the moves: at 60 a minute, one now and one a second.
    shoal
        .set_rebalance(&RebalanceUpdate {
            enabled: Some(false),
            max_moves_per_minute: Some(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let _n5 = announcer(&url, "n5", 50);
    wait_online(&shoal, 5).await;
    wait_for("the coordinator to count five nodes", LONG, || async {
        (shoal.rebalance_status().await.ok()?.nodes == 5).then_some(())
    })
    .await
    .unwrap();
    let started = Instant::now();
    shoal
        .set_rebalance(&RebalanceUpdate {
            enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for("three agents on the new node", LONG, || async {
        (on_node(&shoal, "n5").await >= 3).then_some(())
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "three moves at 60 a minute took {took:?}"
    );
}
