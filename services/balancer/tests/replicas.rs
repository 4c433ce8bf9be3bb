//! Two balancer replicas (real processes) over one membership: they follow one
//! strategy, drop a draining node at once, and share round robin evenly.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::Result;
use chrono::Utc;
use common::{Cluster, DEADLINE, put_node, ten_nodes};
use futures::StreamExt;
use shoal_protocol::{
    AssignmentAction, AssignmentEvent, AssignmentEvents, Endpoint, ErrorCode, Heartbeat,
    NodeStatus, SelectReply, SelectRequest, Strategy, Subjects,
};
use shoal_testkit::wait_for;

#[tokio::test]
async fn strategy_set_on_one_replica_is_followed_by_the_other() -> Result<()> {
    let cluster = Cluster::start(2, &ten_nodes()).await?;
    let (a, b) = (&cluster.ids[0], &cluster.ids[1]);
    assert_eq!(
        cluster.strategy_of(b).await?,
        Strategy::LeastLoaded,
        "the default"
    );
    let mut lags = Vec::new();
    for strategy in [
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::LeastAgents,
        Strategy::Random,
        Strategy::LeastLoaded,
    ] {
        let started = Instant::now();
        assert_eq!(cluster.set_strategy_on(a, strategy).await?, strategy);
        let b_ref = &b;
        let c = &cluster;
        wait_for(
            &format!("{b} to follow {strategy}"),
            DEADLINE,
            || async move { (c.strategy_of(b_ref).await.ok()? == strategy).then_some(()) },
        )
        .await?;
        let lag = started.elapsed();
        println!(
            "strategy.set {strategy} on {a} -> {b} uses it after {lag:?} (goal < 100ms; polled every 10-25ms)"
        );
        lags.push(lag);
        // The other replica's selections use it, and say so.
        let reply: SelectReply = cluster
            .shoal
            .call_direct(Endpoint::BalancerSelect, b, &SelectRequest::default())
            .await?;
        assert_eq!(reply.strategy, strategy);
    }
    lags.sort();
    println!(
        "strategy propagation over {} switches: median {:?}, max {:?}",
        lags.len(),
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    for id in &cluster.ids {
        assert_eq!(cluster.stats(id).await?.strategy, Strategy::LeastLoaded);
    }
    Ok(())
}

#[tokio::test]
async fn a_draining_node_leaves_selection_right_away() -> Result<()> {
    let nodes = ten_nodes();
    let cluster = Cluster::start(2, &nodes).await?;
    let only_slot_3 = SelectRequest {
        labels: BTreeMap::from([("slot".to_string(), "3".to_string())]),
        ..SelectRequest::default()
    };
    for id in &cluster.ids {
        let reply: SelectReply = cluster
            .shoal
            .call_direct(Endpoint::BalancerSelect, id, &only_slot_3)
            .await?;
        assert_eq!(reply.node_id, "n03");
    }

    // As the registry drains a node: the record turns draining.
    let mut drained = nodes[3].clone();
    drained.draining = true;
    drained.status = NodeStatus::Draining;
    let started = Instant::now();
    put_node(&cluster.members, &drained).await?;
    for id in &cluster.ids {
        let c = &cluster;
        let req = &only_slot_3;
        let err = wait_for(
            &format!("{id} to stop picking n03"),
            DEADLINE,
            || async move {
                match c
                    .shoal
                    .call_direct::<_, SelectReply>(Endpoint::BalancerSelect, id, req)
                    .await
                {
                    Err(e) => e.service_code().map(|_| e),
                    Ok(_) => None,
                }
            },
        )
        .await?;
        assert_eq!(err.service_code(), Some(ErrorCode::NoCapacity), "{err}");
        println!(
            "{id} stopped picking the draining node {:?} after the KV write",
            started.elapsed()
        );
    }

    let counts = select_many(&cluster, 300, Some(Strategy::RoundRobin)).await?;
    assert!(!counts.contains_key("n03"), "{counts:?}");
    assert_eq!(
        counts.len(),
        9,
        "every other node still gets work: {counts:?}"
    );

    // Undrained, it is picked again.
    put_node(&cluster.members, &nodes[3]).await?;
    for id in &cluster.ids {
        let c = &cluster;
        let req = &only_slot_3;
        wait_for(
            &format!("{id} to pick n03 again"),
            DEADLINE,
            || async move {
                c.shoal
                    .call_direct::<_, SelectReply>(Endpoint::BalancerSelect, id, req)
                    .await
                    .ok()
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn round_robin_over_two_replicas_gives_each_node_its_share() -> Result<()> {
    let cluster = Cluster::start(2, &ten_nodes()).await?;
    cluster
        .set_strategy_on(&cluster.ids[0], Strategy::RoundRobin)
        .await?;
    cluster
        .wait_strategy_everywhere(Strategy::RoundRobin)
        .await?;

    let counts = select_many(&cluster, 1_000, None).await?;
    let mut by_replica = Vec::new();
    for id in &cluster.ids {
        by_replica.push((id.clone(), cluster.stats(id).await?.selections));
    }
    println!("1000 round-robin selections: per node {counts:?}; per replica {by_replica:?}");
    assert_eq!(counts.values().sum::<u32>(), 1_000);
    assert_eq!(counts.len(), 10, "{counts:?}");
    for (node, n) in &counts {
        assert!((90..=110).contains(n), "{node} got {n}: {counts:?}");
    }
    assert!(
        by_replica.iter().all(|(_, n)| *n > 0),
        "both replicas answered: {by_replica:?}"
    );
    Ok(())
}

/// `n` selections on the shared subject (the queue group spreads them over the
/// replicas), 16 at a time; counts per chosen node.
async fn select_many(
    cluster: &Cluster,
    n: usize,
    strategy: Option<Strategy>,
) -> Result<HashMap<String, u32>> {
    let req = SelectRequest {
        strategy,
        ..SelectRequest::default()
    };
    let replies: Vec<Result<SelectReply, _>> = futures::stream::iter(0..n)
        .map(|_| cluster.shoal.select(&req))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts = HashMap::new();
    for reply in replies {
        *counts.entry(reply?.node_id).or_default() += 1;
    }
    Ok(counts)
}

#[tokio::test]
async fn heartbeats_and_assignment_events_shape_the_choice() -> Result<()> {
    let mut nodes = ten_nodes();
    nodes[5].max_agents = 2;
    // Picks not counted, so only the coordinator's placements can fill n05.
    let no_picks = [("SHOAL_BALANCER_PICK_TTL".to_string(), "0s".to_string())];
    let cluster = Cluster::start_with(2, &nodes, &no_picks).await?;
    let subjects = Subjects::default();

    // Live load from heartbeats: every node but n09 reports a busy CPU.
    for node in &nodes {
        let hb = Heartbeat {
            id: node.id.clone(),
            seq: 1,
            cpu_usage: if node.id == "n09" { 5.0 } else { 90.0 },
            memory_usage: 20.0,
            disk_usage: 10.0,
            load_average: 1.0,
            active_agents: 0,
            uptime_s: 30,
            sent_at: Utc::now(),
            agents_digest: None,
        };
        cluster
            .client
            .publish(
                subjects.node_heartbeat(&node.id),
                serde_json::to_vec(&hb)?.into(),
            )
            .await?;
    }
    let least_loaded = SelectRequest {
        strategy: Some(Strategy::LeastLoaded),
        ..SelectRequest::default()
    };
    for id in &cluster.ids {
        let c = &cluster;
        let req = &least_loaded;
        let reply = wait_for(
            &format!("{id} to see n09 as least loaded"),
            DEADLINE,
            || async move {
                let reply: SelectReply = c
                    .shoal
                    .call_direct(Endpoint::BalancerSelect, id, req)
                    .await
                    .ok()?;
                (reply.node_id == "n09").then_some(reply)
            },
        )
        .await?;
        assert!(
            reply.node.cpu_usage < 10.0,
            "the reply carries the live metrics"
        );
        assert!(reply.candidates.len() == 10 && reply.candidates[0].node_id == "n09");
    }

    // The coordinator's placements count: two agents fill n05 (max_agents 2).
    let event = |event, agent: &str| AssignmentEvent {
        event,
        agent_name: agent.to_string(),
        node_id: Some("n05".to_string()),
        previous_node_id: None,
        reason: "test".to_string(),
        epoch: 1,
        at: Utc::now(),
        resources: None,
    };
    for agent in ["agent-a", "agent-b"] {
        let ev = event(AssignmentAction::Assigned, agent);
        let feed = AssignmentEvents { events: vec![ev] };
        cluster
            .client
            .publish(
                subjects.coordinator_placements(),
                serde_json::to_vec(&feed)?.into(),
            )
            .await?;
    }
    let only_n05 = SelectRequest {
        labels: BTreeMap::from([("slot".to_string(), "5".to_string())]),
        strategy: Some(Strategy::LeastAgents),
        ..SelectRequest::default()
    };
    for id in &cluster.ids {
        let c = &cluster;
        let req = &only_n05;
        let err = wait_for(
            &format!("{id} to count n05 full"),
            DEADLINE,
            || async move {
                c.shoal
                    .call_direct::<_, SelectReply>(Endpoint::BalancerSelect, id, req)
                    .await
                    .err()
            },
        )
        .await?;
        assert_eq!(err.service_code(), Some(ErrorCode::NoCapacity), "{err}");
        assert!(err.to_string().contains("full"), "{err}");
    }
    let feed = AssignmentEvents {
        events: vec![event(AssignmentAction::Unassigned, "agent-a")],
    };
    cluster
        .client
        .publish(
            subjects.coordinator_placements(),
            serde_json::to_vec(&feed)?.into(),
        )
        .await?;
    for id in &cluster.ids {
        let c = &cluster;
        let req = &only_n05;
        let reply = wait_for(
            &format!("{id} to see a free slot on n05"),
            DEADLINE,
            || async move {
                c.shoal
                    .call_direct::<_, SelectReply>(Endpoint::BalancerSelect, id, req)
                    .await
                    .ok()
            },
        )
        .await?;
        assert_eq!(reply.node_id, "n05");
    }
    Ok(())
}
