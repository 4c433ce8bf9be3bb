//! The announcer binary against a real nats-server: what it publishes, what it
//! answers, and how it lives through NATS going away.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use shoal_announcer::sim::{SimConfig, SimState, SimulatedCluster};
use shoal_protocol::{
    AgentChange, AgentNotice, AgentSync, Announce, DigestSum, Heartbeat, Leave, Subjects,
    SyncRequest,
};
use shoal_testkit::{NatsServer, ServiceProcess, binary, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);

/// Every message on `<prefix>.node.>`, decoded by kind.
#[derive(Default, Clone)]
struct Seen {
    announces: Arc<Mutex<Vec<Announce>>>,
    heartbeats: Arc<Mutex<Vec<Heartbeat>>>,
    leaves: Arc<Mutex<Vec<Leave>>>,
}

impl Seen {
    async fn record(nc: &async_nats::Client) -> Result<Seen> {
        let s = Subjects::default();
        let mut sub = nc.subscribe(s.node_all()).await?;
        nc.flush().await?;
        let seen = Seen::default();
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let p = &m.payload;
                match s.parse_node_subject(&m.subject).map(|x| x.1) {
                    Some(shoal_protocol::NodeSubjectKind::Announce) => sink
                        .announces
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(p).unwrap()),
                    Some(shoal_protocol::NodeSubjectKind::Heartbeat) => sink
                        .heartbeats
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(p).unwrap()),
                    Some(shoal_protocol::NodeSubjectKind::Leave) => sink
                        .leaves
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(p).unwrap()),
                    _ => {}
                }
            }
        });
        Ok(seen)
    }

    fn announces_of(&self, id: &str) -> usize {
        self.announces
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.id == id)
            .count()
    }

    fn last_heartbeat(&self, id: &str) -> Option<Heartbeat> {
        self.heartbeats
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|h| h.id == id)
            .cloned()
    }
}

#[tokio::test]
async fn announces_heartbeats_counts_agents_answers_sync_and_says_goodbye() -> Result<()> {
    let nats = NatsServer::start().await?;
    let nc = nats.client().await?;
    let seen = Seen::record(&nc).await?;
    let args: Vec<String> = [
        "--nats-url",
        &nats.url(),
        "--node-id",
        "n1",
        "--role",
        "replica",
        "--services",
        "wrapper,db",
        "--labels",
        "zone=a",
        "--max-agents",
        "4",
        "--heartbeat-interval",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = ServiceProcess::spawn("announcer n1", &binary("shoal-announcer")?, &args, &[])?;

    let a = wait_for("the announce", DEADLINE, || {
        let a = seen.announces.lock().unwrap().first().cloned();
        async move { a }
    })
    .await?;
    assert_eq!(a.id, "n1");
    assert_eq!(a.role, shoal_protocol::NodeRole::Replica);
    assert_eq!(a.services, ["wrapper", "db"]);
    assert_eq!(a.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(a.max_agents, 4);

    // Heartbeats with increasing sequence numbers and valid metrics.
    let hb = wait_for("3 heartbeats", DEADLINE, || {
        let h = seen.last_heartbeat("n1").filter(|h| h.seq >= 3);
        async move { h }
    })
    .await?;
    assert!((0.0..=100.0).contains(&hb.cpu_usage) && hb.memory_usage > 0.0);
    let seqs: Vec<u64> = seen
        .heartbeats
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // Agents it is told about appear in its heartbeats.
    let s = Subjects::default();
    let change = |agent: &str, epoch| AgentChange {
        agent_name: agent.into(),
        node_id: "n1".into(),
        epoch,
        at: chrono::Utc::now(),
    };
    for notice in [
        AgentNotice::Start(change("a1", 1)),
        AgentNotice::Start(change("a2", 1)),
        AgentNotice::Stop(change("a1", 2)),
        // From an older epoch: ignored.
        AgentNotice::Start(change("a3", 1)),
    ] {
        nc.publish(s.node_agents("n1"), serde_json::to_vec(&notice)?.into())
            .await?;
    }
    nc.flush().await?;
    node.wait_for_log("agent notice ignored", DEADLINE).await?;
    let a2 = Some(DigestSum::of(["a2"]).digest());
    wait_for("1 active agent in a heartbeat", DEADLINE, || {
        let h = seen
            .last_heartbeat("n1")
            .filter(|h| h.active_agents == 1 && h.agents_digest == a2);
        async move { h }
    })
    .await?;

    // A sync replaces the set; its parts apply once all have come.
    let all = ["b1", "b2", "b3"];
    for (part, agents) in [(1, vec!["b1", "b2"]), (2, vec!["b3"])] {
        let sync = AgentNotice::Sync(AgentSync {
            node_id: "n1".into(),
            agents: agents.into_iter().map(String::from).collect(),
            epoch: 3,
            at: chrono::Utc::now(),
            part,
            parts: 2,
            digest: DigestSum::of(all).digest(),
        });
        nc.publish(s.node_agents("n1"), serde_json::to_vec(&sync)?.into())
            .await?;
    }
    let synced = Some(DigestSum::of(all).digest());
    wait_for("the synced set in a heartbeat", DEADLINE, || {
        let h = seen
            .last_heartbeat("n1")
            .filter(|h| h.active_agents == 3 && h.agents_digest == synced);
        async move { h }
    })
    .await?;
    node.wait_for_log("agents synced with the coordinator", DEADLINE)
        .await?;

    // A registry asking for other nodes gets nothing; asking for this one, an announce.
    let before = seen.announces_of("n1");
    let ask = |ids: Vec<String>| serde_json::to_vec(&SyncRequest { ids }).unwrap();
    nc.publish(s.registry_sync(), ask(vec!["other".into()]).into())
        .await?;
    nc.publish(s.registry_sync(), ask(vec!["n1".into()]).into())
        .await?;
    wait_for("a re-announce", DEADLINE, || {
        let n = seen.announces_of("n1");
        async move { (n == before + 1).then_some(()) }
    })
    .await?;

    node.terminate()?;
    node.wait_exit(DEADLINE).await?;
    let leave = wait_for("the goodbye", DEADLINE, || {
        let l = seen.leaves.lock().unwrap().first().cloned();
        async move { l }
    })
    .await?;
    assert_eq!(leave.id, "n1");
    Ok(())
}

#[tokio::test]
async fn survives_nats_going_away_and_resumes_heartbeats() -> Result<()> {
    let mut nats = NatsServer::start().await?;
    let args: Vec<String> = [
        "--nats-url",
        &nats.url(),
        "--node-id",
        "n1",
        "--heartbeat-interval",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = ServiceProcess::spawn("announcer n1", &binary("shoal-announcer")?, &args, &[])?;
    node.wait_for_log("announcer ready", DEADLINE).await?;

    nats.stop().await?;
    node.wait_for_log("heartbeats paused", DEADLINE).await?;
    nats.start_again().await?;
    let nc = nats.client().await?;
    let seen = Seen::record(&nc).await?;
    node.wait_for_log("reconnected", DEADLINE).await?;
    wait_for(
        "an announce and heartbeats after the outage",
        DEADLINE,
        || {
            let ok = seen.announces_of("n1") >= 1
                && seen
                    .heartbeats
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|h| h.id == "n1")
                    .count()
                    >= 2;
            async move { ok.then_some(()) }
        },
    )
    .await?;
    assert!(node.is_running(), "the announcer did not exit");
    Ok(())
}

#[tokio::test]
async fn simulated_nodes_behave_like_announcers() -> Result<()> {
    let nats = NatsServer::start().await?;
    let nc = nats.client().await?;
    let seen = Seen::record(&nc).await?;
    let sim = SimulatedCluster::start(
        nats.client().await?,
        Subjects::default(),
        SimConfig {
            count: 50,
            interval: Duration::from_millis(200),
            ..SimConfig::default()
        },
    )
    .await?;
    wait_for("50 announces and heartbeats from each", DEADLINE, || {
        let hb = seen.heartbeats.lock().unwrap().clone();
        let ok = seen.announces.lock().unwrap().len() == 50
            && sim
                .ids()
                .iter()
                .all(|id| hb.iter().any(|h| &h.id == id && h.seq >= 2));
        async move { ok.then_some(()) }
    })
    .await?;

    let s = Subjects::default();
    let notice = AgentNotice::Start(AgentChange {
        agent_name: "a1".into(),
        node_id: sim.id(7),
        epoch: 1,
        at: chrono::Utc::now(),
    });
    nc.publish(
        s.node_agents(&sim.id(7)),
        serde_json::to_vec(&notice)?.into(),
    )
    .await?;
    wait_for("node 7 reports 1 agent", DEADLINE, || {
        let h = seen
            .last_heartbeat(&sim.id(7))
            .filter(|h| h.active_agents == 1);
        async move { h }
    })
    .await?;
    assert_eq!(sim.active_agents(7), 1);

    // Killed: silent, no goodbye, no answer to sync. Stopped: goodbye.
    sim.kill(3);
    sim.stop(4).await?;
    assert_eq!(sim.state(3), SimState::Killed);
    let announces = seen.announces.lock().unwrap().len();
    nc.publish(
        s.registry_sync(),
        serde_json::to_vec(&SyncRequest::default())?.into(),
    )
    .await?;
    wait_for("48 nodes re-announce", DEADLINE, || {
        let n = seen.announces.lock().unwrap().len();
        async move { (n == announces + 48).then_some(()) }
    })
    .await?;
    let leaves: Vec<String> = seen
        .leaves
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.id.clone())
        .collect();
    assert_eq!(leaves, [sim.id(4)]);
    let last3 = seen.last_heartbeat(&sim.id(3)).unwrap().seq;
    let probe = sim.id(0);
    let after = seen.last_heartbeat(&probe).unwrap().seq;
    wait_for("two more heartbeats of a running node", DEADLINE, || {
        let h = seen.last_heartbeat(&probe).filter(|h| h.seq >= after + 2);
        async move { h }
    })
    .await?;
    assert_eq!(
        seen.last_heartbeat(&sim.id(3)).unwrap().seq,
        last3,
        "a killed node is silent"
    );
    Ok(())
}

/// An announcer started before its NATS server announces once, when the server
/// comes up: the first connection is not a reconnection (which would announce again
/// and get the node a needless sync from the leader).
#[tokio::test]
async fn the_first_connection_is_announced_once() -> Result<()> {
    let mut nats = NatsServer::start().await?;
    nats.stop().await?;
    let args: Vec<String> = [
        "--nats-url",
        &nats.url(),
        "--node-id",
        "once",
        "--heartbeat-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = ServiceProcess::spawn("announcer once", &binary("shoal-announcer")?, &args, &[])?;
    node.wait_for_log("announcer ready", DEADLINE).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.start_again().await?;
    let nc = nats.client().await?;
    let seen = Seen::record(&nc).await?;
    wait_for("5 heartbeats", DEADLINE, || {
        let h = seen.last_heartbeat("once").filter(|h| h.seq >= 5);
        async move { h }
    })
    .await?;
    // At most the start announce (queued before the connection; this subscription
    // may come too late for it), and never a second.
    assert!(seen.announces_of("once") <= 1, "{}", node.log());
    assert!(!node.log().contains("reconnected"), "{}", node.log());
    Ok(())
}
