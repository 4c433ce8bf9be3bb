//! The cluster converges, with the real registry, balancer and announcers: waiting
//! agents are placed as soon as a node can take them, nodes are told what they run
//! (a sync on every announce, and whenever their heartbeat digest disagrees), and
//! operators move agents explicitly.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_protocol::{
    AgentChange, AgentNotice, AssignRequest, AssignmentAction, AssignmentEvent, AssignmentStatus,
    DigestSum, ErrorCode, Heartbeat, ListAssignmentsRequest, MoveRequest, NodeEvent, NodeEventKind,
    ShoalClient, Subjects,
};
use shoal_testkit::{NatsServer, ServiceProcess, wait_for};

/// Registry, a least_agents balancer and one coordinator on a fresh server.
struct Stack {
    nats: NatsServer,
    client: async_nats::Client,
    shoal: ShoalClient,
    _services: Vec<ServiceProcess>,
    coordinator: Coordinator,
}

async fn stack() -> Stack {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let services = registry_and_balancer(&url);
    let coordinator = coordinator(&url, "c1", &[]).unwrap();
    let client = nats.client().await.unwrap();
    let shoal = shoal(&client);
    Stack {
        nats,
        client,
        shoal,
        _services: services,
        coordinator,
    }
}

/// Assigns, waiting for the first one to be accepted (the balancer and the
/// coordinator learn of new nodes a moment after the registry lists them).
async fn assign_all(shoal: &ShoalClient, reqs: Vec<AssignRequest>) -> Vec<String> {
    let mut nodes = Vec::new();
    for req in reqs {
        let a = wait_for("an assign to be accepted", LONG, || async {
            shoal.assign(&req).await.ok()
        })
        .await
        .unwrap();
        nodes.push(a.node_id);
    }
    nodes
}

fn with_service(agent: &str, service: &str) -> AssignRequest {
    AssignRequest {
        agent_name: agent.into(),
        service: Some(service.into()),
        ..Default::default()
    }
}

/// Waits for a heartbeat of `node` reporting exactly `agents`.
async fn reported(heartbeats: &mut async_nats::Subscriber, agents: &BTreeSet<String>) {
    assert!(
        reported_within(heartbeats, agents, LONG).await,
        "no heartbeat reported {agents:?}"
    );
}

/// Whether a heartbeat reports exactly `agents` within `deadline`.
async fn reported_within(
    heartbeats: &mut async_nats::Subscriber,
    agents: &BTreeSet<String>,
    deadline: Duration,
) -> bool {
    let want = DigestSum::of(agents.iter().map(String::as_str)).digest();
    tokio::time::timeout(deadline, async {
        while let Some(m) = heartbeats.next().await {
            let hb: Heartbeat = serde_json::from_slice(&m.payload).unwrap();
            if hb.agents_digest.as_ref() == Some(&want) {
                return;
            }
        }
    })
    .await
    .is_ok()
}

async fn waiting(shoal: &ShoalClient) -> usize {
    shoal
        .list_assignments(&ListAssignmentsRequest {
            status: Some(AssignmentStatus::Orphaned),
            ..Default::default()
        })
        .await
        .map(|l| l.count)
        .unwrap_or(usize::MAX)
}

#[tokio::test]
async fn orphans_of_the_only_matching_node_return_within_a_second_of_it() {
    let s = stack().await;
    let url = s.nats.url();
    let mut gpu = announcer_with(&url, "gpu", 10, &[("SHOAL_NODE_SERVICES", "gpu")]);
    let _plain = announcer(&url, "plain", 10);
    wait_online(&s.shoal, 2).await;
    wait_leader(&s.shoal, &["c1"], LONG).await.unwrap();
    let names: BTreeSet<String> = (0..5).map(|i| format!("gpu-agent-{i}")).collect();
    let placed = assign_all(
        &s.shoal,
        names.iter().map(|n| with_service(n, "gpu")).collect(),
    )
    .await;
    assert!(placed.iter().all(|n| n == "gpu"), "{placed:?}");

    let subjects = Subjects::default();
    let mut node_events = s
        .client
        .subscribe(subjects.registry_event("gpu"))
        .await
        .unwrap();
    let mut moves = s
        .client
        .subscribe(subjects.coordinator_events_all())
        .await
        .unwrap();
    gpu.kill().unwrap();
    // No other node offers gpu: the agents wait, visibly.
    wait_for("5 orphaned agents", LONG, || async {
        (waiting(&s.shoal).await == 5).then_some(())
    })
    .await
    .unwrap();
    let stats = s.shoal.cluster_stats().await.unwrap();
    assert_eq!(stats.waiting_agents, 5, "{stats:?}");
    assert_eq!(
        stats.agents_by_status.get(&AssignmentStatus::Orphaned),
        Some(&5)
    );
    let selections = s.shoal.balancer_stats().await.unwrap().selections;

    let mut heartbeats = s
        .client
        .subscribe(subjects.node_heartbeat("gpu"))
        .await
        .unwrap();
    gpu.respawn().unwrap();
    let back_at = tokio::time::timeout(LONG, async {
        while let Some(m) = node_events.next().await {
            let e: NodeEvent = serde_json::from_slice(&m.payload).unwrap();
            if matches!(e.event, NodeEventKind::Recovered | NodeEventKind::Joined) {
                return Instant::now();
            }
        }
        panic!("registry events ended")
    })
    .await
    .unwrap();
    let mut back = BTreeSet::new();
    let done_at = tokio::time::timeout(LONG, async {
        while let Some(m) = moves.next().await {
            let e: AssignmentEvent = serde_json::from_slice(&m.payload).unwrap();
            if e.event == AssignmentAction::Reassigned {
                assert_eq!(e.node_id.as_deref(), Some("gpu"), "{e:?}");
                back.insert(e.agent_name);
                if back.len() == 5 {
                    return Instant::now();
                }
            }
        }
        panic!("coordinator events ended")
    })
    .await
    .unwrap();
    let took = done_at.saturating_duration_since(back_at);
    println!("MEASURED 5 waiting agents placed {took:?} after their node came back");
    assert!(took <= Duration::from_secs(1), "placed after {took:?}");
    assert_eq!(back, names);
    // While nothing could take them, the leader did not keep asking the balancer.
    let asked = s.shoal.balancer_stats().await.unwrap().selections - selections;
    assert!(asked <= 10, "{asked} selections while the agents waited");
    // The restarted node was told what it runs.
    reported(&mut heartbeats, &names).await;
    assert_eq!(waiting(&s.shoal).await, 0);
}

#[tokio::test]
async fn a_restarted_node_gets_a_sync_listing_exactly_its_agents() {
    let s = stack().await;
    let url = s.nats.url();
    let mut a1 = announcer(&url, "a1", 20);
    let _a2 = announcer(&url, "a2", 20);
    wait_online(&s.shoal, 2).await;
    wait_leader(&s.shoal, &["c1"], LONG).await.unwrap();
    let names: BTreeSet<String> = (0..8).map(|i| format!("agent-{i}")).collect();
    assign_all(&s.shoal, names.iter().map(|n| pinned(n, "a1")).collect()).await;

    let subjects = Subjects::default();
    let mut notices = s
        .client
        .subscribe(subjects.node_agents("a1"))
        .await
        .unwrap();
    let mut heartbeats = s
        .client
        .subscribe(subjects.node_heartbeat("a1"))
        .await
        .unwrap();
    s.client.flush().await.unwrap();
    // kill -9 and start again at once: back before anyone judged it dead.
    a1.kill().unwrap();
    a1.respawn().unwrap();
    let sync = tokio::time::timeout(LONG, async {
        while let Some(m) = notices.next().await {
            if let AgentNotice::Sync(sync) = serde_json::from_slice(&m.payload).unwrap() {
                return sync;
            }
        }
        panic!("notices ended")
    })
    .await
    .unwrap();
    assert_eq!((sync.part, sync.parts), (1, 1));
    assert_eq!(sync.agents.iter().cloned().collect::<BTreeSet<_>>(), names);
    reported(&mut heartbeats, &names).await;
    assert_eq!(on_node(&s.shoal, "a1").await, 8, "its agents stayed");
}

#[tokio::test]
async fn a_node_whose_digest_disagrees_is_synced_back() {
    let s = stack().await;
    let url = s.nats.url();
    let _a1 = announcer(&url, "a1", 20);
    wait_online(&s.shoal, 1).await;
    wait_leader(&s.shoal, &["c1"], LONG).await.unwrap();
    let names: BTreeSet<String> = (0..3).map(|i| format!("agent-{i}")).collect();
    assign_all(&s.shoal, names.iter().map(|n| pinned(n, "a1")).collect()).await;
    let subjects = Subjects::default();
    let mut heartbeats = s
        .client
        .subscribe(subjects.node_heartbeat("a1"))
        .await
        .unwrap();
    reported(&mut heartbeats, &names).await;

    // The node hears of an agent it was never given and misses a stop of one it
    // runs: notices in the leader's own epoch, as a lost or stray message would be.
    let epoch = s.shoal.leader().await.unwrap().leader.unwrap().epoch;
    let notice = |agent: &str| AgentChange {
        agent_name: agent.into(),
        node_id: "a1".into(),
        epoch,
        at: chrono::Utc::now(),
    };
    let wrong: BTreeSet<String> = ["agent-1", "agent-2", "ghost"]
        .map(String::from)
        .into_iter()
        .collect();
    // A sync for another reason (the node announcing again when a registry asks)
    // could mend the set before its heartbeat shows it wrong: spoil it again then.
    let mut attempts = 0;
    loop {
        for spoil in [
            AgentNotice::Start(notice("ghost")),
            AgentNotice::Stop(notice("agent-0")),
        ] {
            s.client
                .publish(
                    subjects.node_agents("a1"),
                    serde_json::to_vec(&spoil).unwrap().into(),
                )
                .await
                .unwrap();
        }
        if reported_within(&mut heartbeats, &wrong, Duration::from_secs(5)).await {
            break;
        }
        attempts += 1;
        assert!(attempts < 5, "the node never reported the spoiled set");
    }
    let mark = s.coordinator.process.log_len();
    let wrong_at = Instant::now();
    reported(&mut heartbeats, &names).await;
    println!(
        "MEASURED a node with a wrong agent set synced back {:?} after it reported it",
        wrong_at.elapsed()
    );
    s.coordinator
        .process
        .wait_for_log_since(mark, "node disagrees on its agents", LONG)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_freed_slot_takes_a_waiting_agent_within_a_second() {
    let s = stack().await;
    let url = s.nats.url();
    let _a1 = announcer(&url, "a1", 2);
    let mut a2 = announcer(&url, "a2", 2);
    wait_online(&s.shoal, 2).await;
    wait_leader(&s.shoal, &["c1"], LONG).await.unwrap();
    assign_all(
        &s.shoal,
        vec![
            pinned("on-a1-0", "a1"),
            pinned("on-a1-1", "a1"),
            pinned("on-a2-0", "a2"),
            pinned("on-a2-1", "a2"),
        ],
    )
    .await;
    a2.kill().unwrap();
    wait_for("a2's agents to wait (a1 is full)", LONG, || async {
        (waiting(&s.shoal).await == 2).then_some(())
    })
    .await
    .unwrap();
    let mut moves = s
        .client
        .subscribe(Subjects::default().coordinator_events_all())
        .await
        .unwrap();
    s.client.flush().await.unwrap();
    let freed_at = Instant::now();
    s.shoal.unassign("on-a1-0").await.unwrap();
    let placed = tokio::time::timeout(LONG, async {
        while let Some(m) = moves.next().await {
            let e: AssignmentEvent = serde_json::from_slice(&m.payload).unwrap();
            if e.event == AssignmentAction::Reassigned {
                return e;
            }
        }
        panic!("events ended")
    })
    .await
    .unwrap();
    let took = freed_at.elapsed();
    println!("MEASURED a waiting agent placed {took:?} after a slot was freed");
    assert!(took <= Duration::from_secs(1), "{took:?}");
    assert_eq!(placed.node_id.as_deref(), Some("a1"));
    wait_for("one agent still waiting", LONG, || async {
        (waiting(&s.shoal).await == 1).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn move_places_an_agent_where_asked_or_where_the_balancer_picks() {
    let s = stack().await;
    let url = s.nats.url();
    let _a: Vec<_> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| announcer(&url, id, 10))
        .collect();
    wait_online(&s.shoal, 3).await;
    wait_leader(&s.shoal, &["c1"], LONG).await.unwrap();
    assign_all(&s.shoal, vec![pinned("x", "a1")]).await;
    let subjects = Subjects::default();
    let mut to_a1 = s
        .client
        .subscribe(subjects.node_agents("a1"))
        .await
        .unwrap();
    let moved = |node: Option<&str>, request_id: Option<&str>| MoveRequest {
        agent_name: "x".into(),
        node_id: node.map(str::to_string),
        request_id: request_id.map(str::to_string),
    };

    let a = s.shoal.move_agent(&moved(Some("a2"), None)).await.unwrap();
    assert_eq!(
        (a.node_id.as_str(), a.status),
        ("a2", AssignmentStatus::Running)
    );
    let stop = tokio::time::timeout(LONG, to_a1.next())
        .await
        .unwrap()
        .unwrap();
    let stop: AgentNotice = serde_json::from_slice(&stop.payload).unwrap();
    assert_eq!(stop.action(), "stop");
    // Already there: the same answer, nothing written.
    let again = s.shoal.move_agent(&moved(Some("a2"), None)).await.unwrap();
    assert_eq!(again, a);
    // A retried request_id gets the first answer, even after the agent moved on.
    let first = s
        .shoal
        .move_agent(&moved(Some("a3"), Some("r-1")))
        .await
        .unwrap();
    assert_eq!(first.node_id, "a3");
    let picked = s.shoal.move_agent(&moved(None, None)).await.unwrap();
    assert_ne!(picked.node_id, "a3", "the balancer's pick is another node");
    let retried = s
        .shoal
        .move_agent(&moved(Some("a3"), Some("r-1")))
        .await
        .unwrap();
    assert_eq!(retried, first);

    let log = log_records(&s.client).await.unwrap();
    let operator_moves = log
        .iter()
        .filter(|(_, r)| r["action"] == "migrated" && r["reason"] == "operator")
        .count();
    assert_eq!(operator_moves, 3, "a1→a2, a2→a3, a3→pick");

    let code = |r: Result<_, shoal_protocol::ClientError>| r.unwrap_err().service_code();
    let ghost = MoveRequest {
        agent_name: "ghost".into(),
        ..moved(None, None)
    };
    assert_eq!(
        code(s.shoal.move_agent(&ghost).await),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        code(s.shoal.move_agent(&moved(Some("nowhere"), None)).await),
        Some(ErrorCode::NotFound)
    );
    let bad = MoveRequest {
        agent_name: "a.b".into(),
        ..moved(None, None)
    };
    assert_eq!(
        code(s.shoal.move_agent(&bad).await),
        Some(ErrorCode::BadRequest)
    );
    // Drain a node the agent is not on: moving there is refused.
    let other = if picked.node_id == "a1" { "a3" } else { "a1" };
    s.shoal.drain_node(other).await.unwrap();
    let e = wait_for("the node to be known as draining", LONG, || async {
        let e = s
            .shoal
            .move_agent(&moved(Some(other), None))
            .await
            .unwrap_err();
        (e.service_code() == Some(ErrorCode::Conflict)).then_some(e)
    })
    .await
    .unwrap();
    assert!(e.to_string().contains("draining"), "{e}");
}
