//! Membership with real processes: nats-server, `shoal-registry` replicas and
//! `shoal-announcer` nodes, faults by signal.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use shoal_announcer::sim::{SimConfig, SimulatedCluster};
use shoal_protocol::{
    ClientError, Endpoint, ErrorCode, ListNodesRequest, NodeEventKind, NodeRole, NodeStatus,
    ShoalError, Subjects,
};
use shoal_testkit::wait_for;

use common::*;

#[tokio::test]
async fn three_announcers_are_listed_by_both_replicas_within_milliseconds() -> Result<()> {
    let TwoReplicas {
        nats,
        c,
        registries: _registries,
    } = two_replicas().await?;
    let events = Events::record(&c).await?;

    // When each announce goes out, as seen by a plain subscriber.
    let mut announces = c.nats().subscribe(c.subjects().node_announce_all()).await?;
    c.nats().flush().await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sink = sent.clone();
    let recorder = tokio::spawn(async move {
        while let Some(m) = announces.next().await {
            if let Some((id, _)) = Subjects::default().parse_node_subject(&m.subject) {
                sink.lock()
                    .unwrap()
                    .entry(id.to_string())
                    .or_insert_with(Instant::now);
            }
        }
    });

    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(announcer(&nats, id, None, &[]).await?);
    }
    wait_listed(
        &c,
        &REPLICAS,
        &["n1", "n2", "n3"],
        "3 nodes on both replicas",
        |n| n.status == NodeStatus::Online && n.healthy,
    )
    .await?;
    for id in ["n1", "n2", "n3"] {
        assert_eq!(
            events.count(id, NodeEventKind::Joined),
            1,
            "one joined event for {id}"
        );
    }
    // Three real announcers: announce (as received by this test) → joined event.
    let report: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| {
            let joined = events.of(id, NodeEventKind::Joined)[0].0;
            let sent = sent.lock().unwrap()[*id];
            format!("{id} {:?}", joined.saturating_duration_since(sent))
        })
        .collect();
    println!(
        "discovery latency of the 3 announcers (announce → joined event): {}",
        report.join(", ")
    );

    // Discovery latency: announce sent → listed by both replicas, over 200 more
    // (simulated) nodes announcing at once.
    let sim = SimulatedCluster::start(
        c.nats().clone(),
        Subjects::default(),
        SimConfig {
            count: 200,
            id_prefix: "sim".into(),
            ..SimConfig::default()
        },
    )
    .await?;
    let listed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sim_ids = sim.ids();
    wait_for(
        "200 simulated nodes listed by both replicas",
        DEADLINE,
        || {
            let (c, listed) = (&c, listed.clone());
            async move {
                let all = ListNodesRequest::default();
                let lists = futures::future::join_all(REPLICAS.map(|r| list_on(c, r, &all))).await;
                let now = Instant::now();
                let on: Vec<Vec<String>> = lists
                    .into_iter()
                    .map(|l| l.map(|l| ids(&l)).unwrap_or_default())
                    .collect();
                let mut listed = listed.lock().unwrap();
                for id in on[0].iter().filter(|id| on[1].contains(id)) {
                    listed.entry(id.clone()).or_insert(now);
                }
                (listed.len() >= 203).then_some(())
            }
        },
    )
    .await?;
    recorder.abort();
    let sent = sent.lock().unwrap().clone();
    let listed = listed.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = sim_ids
        .iter()
        .filter_map(|id| Some(listed.get(id)?.saturating_duration_since(*sent.get(id)?)))
        .collect();
    latencies.sort();
    // The joined event is published by the winning replica right after its write:
    // announce → event is exact, not bounded by polling.
    let mut to_event: Vec<Duration> = sim_ids
        .iter()
        .filter_map(|id| {
            let joined = events.of(id, NodeEventKind::Joined).first()?.0;
            Some(joined.saturating_duration_since(*sent.get(id)?))
        })
        .collect();
    to_event.sort();
    println!(
        "discovery latency, 200 nodes announcing at once: announce → joined event p50 {:?} p99 {:?} max {:?} ({} samples); announce → listed by both replicas (polled every 10-25 ms) p50 {:?} p99 {:?} max {:?} ({} samples); goal p99 < 100 ms",
        percentile(&to_event, 0.5),
        percentile(&to_event, 0.99),
        to_event.last().copied().unwrap_or_default(),
        to_event.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        latencies.len(),
    );
    assert!(
        latencies.len() >= 190,
        "latencies measured for most nodes: {}",
        latencies.len()
    );
    for id in &sim_ids {
        assert_eq!(
            events.count(id, NodeEventKind::Joined),
            1,
            "exactly one joined event for {id}"
        );
    }
    drop(sim);
    Ok(())
}

#[tokio::test]
async fn a_killed_announcer_goes_suspect_then_offline_and_recovers_on_restart() -> Result<()> {
    let TwoReplicas {
        nats,
        c,
        registries: _registries,
    } = two_replicas().await?;
    let events = Events::record(&c).await?;
    let mut node = announcer(&nats, "n1", None, &[]).await?;
    let _other = announcer(&nats, "n2", None, &[]).await?;
    wait_listed(&c, &REPLICAS, &["n1", "n2"], "both nodes online", |n| {
        n.status == NodeStatus::Online
    })
    .await?;

    node.kill()?;
    let killed = Instant::now();
    let (suspect_at, suspect) = events
        .wait("n1", NodeEventKind::Suspect, killed, DEADLINE)
        .await?;
    let (offline_at, offline) = events
        .wait("n1", NodeEventKind::Offline, killed, DEADLINE)
        .await?;
    println!(
        "kill -9 (heartbeats only, defaults): suspect after {:?}, offline after {:?}",
        suspect_at - killed,
        offline_at - killed
    );
    assert_eq!(suspect.status, NodeStatus::Suspect);
    assert_eq!(offline.status, NodeStatus::Offline);
    assert_eq!(offline.previous_status, Some(NodeStatus::Suspect));
    assert!(offline_at > suspect_at);
    // Defaults: offline 3 intervals after the last heartbeat, which came at most one
    // interval before the kill; the bound allows for a loaded machine.
    assert!(
        offline_at - killed < Duration::from_millis(4500),
        "offline {:?} after the kill",
        offline_at - killed
    );
    wait_listed(
        &c,
        &REPLICAS,
        &["n1", "n2"],
        "n1 offline on both replicas",
        |n| (n.id == "n1") == (n.status == NodeStatus::Offline),
    )
    .await?;
    let n1 = c.get_node("n1").await?;
    assert!(!n1.healthy);
    // The healthy node was never suspected.
    assert_eq!(events.count("n2", NodeEventKind::Suspect), 0);

    node.respawn()?;
    let restarted = Instant::now();
    events
        .wait("n1", NodeEventKind::Recovered, restarted, DEADLINE)
        .await?;
    wait_listed(
        &c,
        &REPLICAS,
        &["n1", "n2"],
        "n1 online again, one entry",
        |n| n.status == NodeStatus::Online,
    )
    .await?;
    // Two replicas saw each transition; exactly one published it.
    for kind in [
        NodeEventKind::Suspect,
        NodeEventKind::Offline,
        NodeEventKind::Recovered,
    ] {
        assert_eq!(events.count("n1", kind), 1, "{kind:?} published once");
    }
    Ok(())
}

#[tokio::test]
async fn with_system_credentials_a_killed_announcer_is_suspect_at_once() -> Result<()> {
    let nats = nats_with_accounts().await?;
    let c = client(&nats, Some(&APP)).await?;
    let sys = ["--sys-nats-user", "sys", "--sys-nats-password", "sys"];
    let r1 = registry(&nats, "r1", Some(&APP), &sys).await?;
    r1.wait_for_log("following nats connection advisories", DEADLINE)
        .await?;
    let events = Events::record(&c).await?;
    let mut node = announcer(&nats, "n1", Some(&APP), &[]).await?;
    wait_listed(&c, &["r1"], &["n1"], "n1 online", |n| {
        n.status == NodeStatus::Online
    })
    .await?;

    node.kill()?;
    let killed = Instant::now();
    let (suspect_at, suspect) = events
        .wait("n1", NodeEventKind::Suspect, killed, DEADLINE)
        .await?;
    let after = suspect_at - killed;
    println!("kill -9 with connection advisories: suspect after {after:?} (goal < 100 ms)");
    assert_eq!(suspect.reason.as_deref(), Some("connection closed"));
    // Missed heartbeats alone would take 2 intervals (2 s).
    assert!(after < Duration::from_secs(1), "suspect after {after:?}");
    let (offline_at, _) = events
        .wait("n1", NodeEventKind::Offline, killed, DEADLINE)
        .await?;
    println!(
        "  offline (confirmed by missed heartbeats) after {:?}",
        offline_at - killed
    );

    node.respawn()?;
    events
        .wait("n1", NodeEventKind::Recovered, Instant::now(), DEADLINE)
        .await?;
    Ok(())
}

#[tokio::test]
async fn without_system_credentials_the_registry_says_it_uses_heartbeats_alone() -> Result<()> {
    let nats = nats().await?;
    let r1 = registry(&nats, "r1", None, &[]).await?;
    r1.wait_for_log("detected from missed heartbeats alone", DEADLINE)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_paused_announcer_goes_offline_and_recovers_as_the_same_node() -> Result<()> {
    let TwoReplicas {
        nats,
        c,
        registries: _registries,
    } = two_replicas().await?;
    let events = Events::record(&c).await?;
    let node = announcer(&nats, "n1", None, &[]).await?;
    wait_listed(&c, &REPLICAS, &["n1"], "n1 online", |n| {
        n.status == NodeStatus::Online
    })
    .await?;
    let started_at = c.get_node("n1").await?.started_at;

    node.pause()?;
    let paused = Instant::now();
    events
        .wait("n1", NodeEventKind::Offline, paused, DEADLINE)
        .await?;
    // The scenario is a 5 s stop; this is its duration, not a synchronisation.
    tokio::time::sleep_until((paused + Duration::from_secs(5)).into()).await;
    node.resume()?;
    let resumed = Instant::now();
    let (recovered_at, _) = events
        .wait("n1", NodeEventKind::Recovered, resumed, DEADLINE)
        .await?;
    println!(
        "SIGCONT after 5 s: recovered after {:?}",
        recovered_at - resumed
    );
    wait_listed(&c, &REPLICAS, &["n1"], "n1 online, one entry", |n| {
        n.status == NodeStatus::Online
    })
    .await?;
    // Same process, same node: not a new join.
    assert_eq!(c.get_node("n1").await?.started_at, started_at);
    assert_eq!(events.count("n1", NodeEventKind::Joined), 1);
    assert_eq!(events.count("n1", NodeEventKind::Offline), 1);
    assert_eq!(events.count("n1", NodeEventKind::Recovered), 1);
    Ok(())
}

#[tokio::test]
async fn membership_survives_a_registry_restart_and_a_nats_restart() -> Result<()> {
    let mut nats = nats().await?;
    let c = client(&nats, None).await?;
    let mut r1 = registry(&nats, "r1", None, &[]).await?;
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(announcer(&nats, id, None, &[]).await?);
    }
    wait_listed(&c, &["r1"], &["n1", "n2", "n3"], "3 nodes", |n| {
        n.status == NodeStatus::Online
    })
    .await?;

    r1.terminate()?;
    r1.wait_exit(DEADLINE).await?;
    let offset = r1.log_len();
    r1.respawn()?;
    r1.wait_for_log_since(offset, "registry ready", DEADLINE)
        .await?;
    // Served from the bucket at once: the first answer already has every node.
    let list = list_on(&c, "r1", &ListNodesRequest::default())
        .await
        .expect("the restarted registry answers");
    assert_eq!(ids(&list), ["n1", "n2", "n3"]);
    assert!(
        r1.log()[offset..].contains("membership loaded nodes=3"),
        "{}",
        &r1.log()[offset..]
    );

    nats.restart().await?;
    wait_listed(
        &c,
        &["r1"],
        &["n1", "n2", "n3"],
        "3 nodes online after the nats restart",
        |n| n.status == NodeStatus::Online,
    )
    .await?;
    // And a registry started now reads them from the restarted server's store.
    let r2 = registry(&nats, "r2", None, &[]).await?;
    assert!(
        r2.log().contains("membership loaded nodes=3"),
        "{}",
        r2.log()
    );
    wait_listed(
        &c,
        &REPLICAS,
        &["n1", "n2", "n3"],
        "both replicas agree",
        |n| n.status == NodeStatus::Online,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn drain_filters_and_stats_agree_on_both_replicas() -> Result<()> {
    let TwoReplicas {
        nats,
        c,
        registries: _registries,
    } = two_replicas().await?;
    let events = Events::record(&c).await?;
    let _n1 = announcer(
        &nats,
        "n1",
        None,
        &[
            "--role",
            "leader",
            "--services",
            "wrapper,database",
            "--labels",
            "zone=a",
            "--max-agents",
            "10",
        ],
    )
    .await?;
    let _n2 = announcer(
        &nats,
        "n2",
        None,
        &[
            "--services",
            "wrapper",
            "--labels",
            "zone=b,disk=ssd",
            "--max-agents",
            "20",
        ],
    )
    .await?;
    let _n3 = announcer(
        &nats,
        "n3",
        None,
        &[
            "--services",
            "wrapper",
            "--labels",
            "zone=b",
            "--max-agents",
            "30",
        ],
    )
    .await?;
    wait_listed(&c, &REPLICAS, &["n1", "n2", "n3"], "3 nodes", |n| {
        n.status == NodeStatus::Online
    })
    .await?;

    let drained = c.drain_node("n2").await?;
    assert_eq!(drained.status, NodeStatus::Draining);
    assert!(drained.draining);
    // Draining again changes nothing and publishes nothing.
    c.drain_node("n2").await?;
    let filter =
        |json: serde_json::Value| -> ListNodesRequest { serde_json::from_value(json).unwrap() };
    let cases = [
        (
            filter(serde_json::json!({"status": "draining"})),
            vec!["n2"],
        ),
        (
            filter(serde_json::json!({"status": "online"})),
            vec!["n1", "n3"],
        ),
        (filter(serde_json::json!({"role": "leader"})), vec!["n1"]),
        (
            filter(serde_json::json!({"service": "database"})),
            vec!["n1"],
        ),
        (
            filter(serde_json::json!({"label": "zone=b"})),
            vec!["n2", "n3"],
        ),
        (filter(serde_json::json!({"label": "disk"})), vec!["n2"]),
        (
            filter(serde_json::json!({"role": "worker", "label": "zone=b", "status": "online"})),
            vec!["n3"],
        ),
    ];
    for (f, expected) in &cases {
        for r in REPLICAS {
            let got = wait_for(&format!("{f:?} on {r}"), DEADLINE, || async {
                let list = list_on(&c, r, f).await?;
                (ids(&list) == *expected).then_some(list)
            })
            .await?;
            assert_eq!(got.count, expected.len());
        }
    }
    for r in REPLICAS {
        let s = stats_on(&c, r).await.expect("stats");
        assert_eq!(
            (s.total_nodes, s.healthy_nodes, s.online_nodes),
            (3, 3, 2),
            "{r}: {s:?}"
        );
        assert_eq!(s.max_agents, 60);
        assert_eq!(s.nodes_by_status.get("draining"), Some(&1));
        assert_eq!(s.nodes_by_role.get("leader"), Some(&1));
        assert_eq!(s.nodes_by_role.get("worker"), Some(&2));
    }
    assert_eq!(events.count("n2", NodeEventKind::Draining), 1);

    // Agents told to n1 show in its heartbeats, then in capacity and stats.
    for agent in ["a1", "a2", "a3"] {
        let notice = shoal_protocol::AgentNotice::Start(shoal_protocol::AgentChange {
            agent_name: agent.into(),
            node_id: "n1".into(),
            epoch: 1,
            at: chrono::Utc::now(),
        });
        c.nats()
            .publish(
                c.subjects().node_agents("n1"),
                serde_json::to_vec(&notice)?.into(),
            )
            .await?;
    }
    for r in REPLICAS {
        wait_for(&format!("3 agents on n1 at {r}"), DEADLINE, || async {
            let s = stats_on(&c, r).await?;
            let n1 = list_on(&c, r, &filter(serde_json::json!({"role": "leader"}))).await?;
            (s.total_agents == 3 && s.utilization_pct == 5.0 && n1.nodes[0].capacity == 0.7)
                .then_some(())
        })
        .await?;
    }

    let undrained = c.undrain_node("n2").await?;
    assert_eq!(undrained.status, NodeStatus::Online);
    assert!(!undrained.draining);
    wait_listed(
        &c,
        &REPLICAS,
        &["n1", "n2", "n3"],
        "all online after undrain",
        |n| n.status == NodeStatus::Online && !n.draining,
    )
    .await?;
    assert_eq!(events.count("n2", NodeEventKind::Undrained), 1);

    // Unknown ids and bad requests are told apart.
    let err = c.drain_node("nope").await.unwrap_err();
    assert_eq!(err.service_code(), Some(ErrorCode::NotFound));
    let err = c.get_node("nope").await.unwrap_err();
    assert_eq!(err.service_code(), Some(ErrorCode::NotFound));
    let reply = shoal_testkit::request_json(
        c.nats(),
        &c.subjects().endpoint(Endpoint::RegistryNodesList),
        &serde_json::json!({"role": "boss"}),
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let raw = c
        .nats()
        .request(
            c.subjects().endpoint(Endpoint::RegistryNodesGet),
            "{not json".into(),
        )
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&raw.payload)?;
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    Ok(())
}

#[tokio::test]
async fn manual_registration_and_unregistration() -> Result<()> {
    let TwoReplicas {
        nats: _nats,
        c,
        registries: _registries,
    } = two_replicas().await?;
    let events = Events::record(&c).await?;
    let reply = c
        .register_node(&shoal_protocol::RegisterNodeRequest {
            id: "m1".into(),
            hostname: "server2".into(),
            ip_address: "10.0.0.2".into(),
            port: 8151,
            role: NodeRole::Worker,
            max_agents: 20,
            services: vec!["wrapper".into(), "database".into()],
            labels: Default::default(),
            heartbeat_interval: None,
        })
        .await?;
    assert!(reply.success);
    let node = reply.node.unwrap();
    assert!(node.manual);
    assert_eq!(node.address, "10.0.0.2:8151");
    wait_listed(&c, &REPLICAS, &["m1"], "m1 on both replicas", |n| {
        n.status == NodeStatus::Online
    })
    .await?;
    assert_eq!(events.count("m1", NodeEventKind::Joined), 1);

    let reply = c.unregister_node("m1").await?;
    assert!(reply.success);
    wait_listed(&c, &REPLICAS, &[], "m1 gone from both replicas", |_| true).await?;
    events
        .wait(
            "m1",
            NodeEventKind::Left,
            Instant::now() - Duration::from_secs(60),
            DEADLINE,
        )
        .await?;
    let err = c.unregister_node("m1").await.unwrap_err();
    assert_eq!(err.service_code(), Some(ErrorCode::NotFound));
    // Every "no such node" names it the same way, whichever endpoint answers.
    for err in [
        err,
        c.get_node("m1").await.unwrap_err(),
        c.drain_node("m1").await.unwrap_err(),
    ] {
        let ClientError::Service(e) = err else {
            panic!("{err}")
        };
        assert_eq!(e, ShoalError::no_node("m1"));
    }
    Ok(())
}

#[tokio::test]
async fn bad_node_messages_change_nothing_and_are_counted() -> Result<()> {
    let TwoReplicas {
        nats,
        c,
        registries: _registries,
    } = two_replicas().await?;
    let _n1 = announcer(&nats, "n1", None, &[]).await?;
    wait_listed(&c, &REPLICAS, &["n1"], "n1 online", |n| {
        n.status == NodeStatus::Online
    })
    .await?;
    let before = c.get_node("n1").await?;
    let s = c.subjects();
    let hb = |id: &str, cpu: f64, agents: u32| {
        serde_json::json!({
            "id": id, "seq": 1, "cpu_usage": cpu, "memory_usage": 10.0, "disk_usage": 10.0,
            "load_average": 0.1, "active_agents": agents, "uptime_s": 1, "sent_at": chrono::Utc::now(),
        })
        .to_string()
    };
    let bad: Vec<(String, String)> = vec![
        // A heartbeat whose payload names another node than its subject.
        (s.node_heartbeat("n1"), hb("n2", 10.0, 7)),
        (s.node_heartbeat("n1"), hb("n1", 150.0, 7)),
        (s.node_heartbeat("n1"), hb("n1", -1.0, 7)),
        (s.node_heartbeat("n1"), "{\"id\":\"n1\",".into()),
        (s.node_heartbeat("n1"), "[1,2,3]".into()),
        (
            s.node_announce("n9"),
            serde_json::json!({"id": "n9", "hostname": "h", "ip_address": "1.2.3.4", "role": "boss", "max_agents": 1, "started_at": chrono::Utc::now()}).to_string(),
        ),
        (
            s.node_announce("n9"),
            serde_json::json!({"id": "n8", "hostname": "h", "ip_address": "1.2.3.4", "max_agents": 1, "started_at": chrono::Utc::now()}).to_string(),
        ),
        (s.node_leave("n1"), serde_json::json!({"id": "n2", "sent_at": chrono::Utc::now()}).to_string()),
    ];
    let base: Vec<u64> = {
        let mut v = Vec::new();
        for r in REPLICAS {
            v.push(stats_on(&c, r).await.expect("stats").rejected_messages);
        }
        v
    };
    for (subject, payload) in &bad {
        c.nats()
            .publish(subject.clone(), payload.clone().into())
            .await?;
    }
    c.nats().flush().await?;
    for (r, base) in REPLICAS.iter().zip(base) {
        wait_for(
            &format!("{} rejections counted on {r}", bad.len()),
            DEADLINE,
            || async {
                let s = stats_on(&c, r).await?;
                (s.rejected_messages == base + bad.len() as u64).then_some(())
            },
        )
        .await?;
    }
    for r in REPLICAS {
        let list = list_on(&c, r, &ListNodesRequest::default())
            .await
            .expect("list");
        assert_eq!(ids(&list), ["n1"], "nothing added on {r}");
        let n1 = &list.nodes[0];
        assert_eq!(n1.status, NodeStatus::Online);
        assert_eq!(
            n1.active_agents, 0,
            "the foreign heartbeat's agents were not taken"
        );
        assert!(n1.cpu_usage <= 100.0);
        assert_eq!(n1.started_at, before.started_at);
    }
    let err = c.get_node("n2").await.unwrap_err();
    assert_eq!(err.service_code(), Some(ErrorCode::NotFound));
    Ok(())
}
