//! A node cut off from NATS while its agents are moved away: it runs in its own
//! network namespace, its link is dropped like a pulled cable (the server drops its
//! connection; the stop notices sent meanwhile are lost), then restored. Once back it
//! must run exactly what the coordinator says, as the nodes themselves report in their
//! heartbeats: no agent on two nodes, every acknowledged agent on one.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use shoal_protocol::{AgentsDigest, DigestSum, Heartbeat, NodeEvent, NodeEventKind, Subjects};
use shoal_testkit::{NatsOptions, NatsServer, NetNs, ServiceProcess, binary, wait_for};

const AGENTS: usize = 100;

/// The last heartbeat of every node, as it arrives.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<HashMap<String, Heartbeat>>>);

impl Reports {
    async fn follow(client: &async_nats::Client) -> Reports {
        let mut sub = client
            .subscribe(Subjects::default().node_heartbeat_all())
            .await
            .unwrap();
        client.flush().await.unwrap();
        let reports = Reports::default();
        let seen = reports.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&m.payload) {
                    seen.0.lock().unwrap().insert(hb.id.clone(), hb);
                }
            }
        });
        reports
    }

    fn digest(&self, node: &str) -> Option<AgentsDigest> {
        self.0.lock().unwrap().get(node)?.agents_digest.clone()
    }
}

/// Whether every node reports exactly the agents the coordinator has on it, and the
/// coordinator has all `agents` agents placed: then no agent runs on two nodes and
/// every one runs somewhere. Returns the count per node.
async fn nodes_agree(
    shoal: &shoal_protocol::ShoalClient,
    reports: &Reports,
    nodes: &[&str],
    agents: usize,
) -> Option<BTreeMap<String, u32>> {
    let all = shoal.list_all_assignments(&Default::default()).await.ok()?;
    if all.len() != agents || all.iter().any(|a| a.status.is_waiting()) {
        return None;
    }
    let mut by_node: BTreeMap<&str, BTreeSet<&str>> =
        nodes.iter().map(|n| (*n, BTreeSet::new())).collect();
    for a in &all {
        by_node
            .get_mut(a.node_id.as_str())?
            .insert(a.agent_name.as_str());
    }
    let mut counts = BTreeMap::new();
    for (node, names) in by_node {
        let want = DigestSum::of(names.iter().copied());
        if !want.matches(&reports.digest(node)?) {
            return None;
        }
        counts.insert(node.to_string(), want.count());
    }
    Some(counts)
}

#[tokio::test]
async fn a_node_cut_off_while_its_agents_moved_runs_only_what_it_is_told_once_back() {
    // Declared first: dropped after the processes that run in it.
    let netns = NetNs::new().unwrap();
    let nats = NatsServer::start_with(NatsOptions::for_netns())
        .await
        .unwrap();
    let url = nats.url();
    let _services = registry_and_balancer(&url);
    let _c1 = coordinator(&url, "c1", &[]).unwrap();
    let _a2 = announcer(&url, "a2", 1000);
    let _a3 = announcer(&url, "a3", 1000);
    let args: Vec<String> = [
        "--nats-url",
        &netns.nats_url(&nats).unwrap(),
        "--node-id",
        "a1",
        "--max-agents",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _a1 = ServiceProcess::spawn_in(
        &netns,
        "announcer-a1",
        &binary("shoal-announcer").unwrap(),
        &args,
        &[],
    )
    .unwrap();
    let client = nats.client().await.unwrap();
    let shoal = shoal(&client);
    let reports = Reports::follow(&client).await;
    wait_online(&shoal, 3).await;
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    wait_for("the coordinator to know a1", LONG, || async {
        shoal.assign(&pinned("agent-0", "a1")).await.ok()
    })
    .await
    .unwrap();
    for i in 1..AGENTS {
        shoal
            .assign(&pinned(&format!("agent-{i}"), "a1"))
            .await
            .unwrap();
    }
    let nodes = ["a1", "a2", "a3"];
    let before = wait_for("a1 to report its agents", LONG, || {
        nodes_agree(&shoal, &reports, &nodes, AGENTS)
    })
    .await
    .unwrap();
    assert_eq!(before.get("a1"), Some(&(AGENTS as u32)));

    let mut a1_events = client
        .subscribe(Subjects::default().registry_event("a1"))
        .await
        .unwrap();
    netns.cut().unwrap();
    let cut_at = Instant::now();
    // a1 goes offline and every agent moves to a2 and a3; the stop notices for a1
    // go nowhere.
    wait_for("a1's agents to move away", LONG, || async {
        (on_node(&shoal, "a1").await == 0).then_some(())
    })
    .await
    .unwrap();
    let from_a1 = |c: &shoal_testkit::Connection| c.ip == std::net::IpAddr::V4(netns.ns_ip());
    wait_for("the server to drop a1's connection", LONG, || async {
        let open = nats.connections().await.ok()?;
        (!open.iter().any(from_a1)).then_some(())
    })
    .await
    .unwrap();
    println!(
        "moved off the cut node {:?} after the cut",
        cut_at.elapsed()
    );
    netns.restore().unwrap();

    let back_at = tokio::time::timeout(LONG, async {
        while let Some(m) = a1_events.next().await {
            let e: NodeEvent = serde_json::from_slice(&m.payload).unwrap();
            if e.event == NodeEventKind::Recovered {
                return Instant::now();
            }
        }
        panic!("registry events ended")
    })
    .await
    .unwrap();
    let after = wait_for("every node to report what it runs", LONG, || {
        nodes_agree(&shoal, &reports, &nodes, AGENTS)
    })
    .await
    .unwrap();
    let took = back_at.elapsed();
    println!(
        "MEASURED cut node back: nodes agree {took:?} after it was heard again; per node {after:?}"
    );
    assert_eq!(after.get("a1"), Some(&0));
    assert_eq!(after.values().sum::<u32>(), AGENTS as u32);
    assert!(took <= Duration::from_secs(3), "agreed after {took:?}");
}
