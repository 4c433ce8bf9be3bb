//! A node that registers over `nodes.register` with its own heartbeat interval and
//! heartbeats at that pace, with real processes (nats-server, two `shoal-registry`
//! replicas): online across its gaps, offline after its scaled threshold, not before.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;
use shoal_protocol::{
    ClientError, ErrorCode, Heartbeat, ListNodesRequest, NodeEventKind, NodeRole, NodeStatus,
    RegisterNodeRequest, ShoalClient,
};

use common::*;

/// The registries' interval: suspect after 2 missed (400 ms), offline after 3 (600 ms).
const CLUSTER_INTERVAL: &str = "200ms";
const SUSPECT_AFTER: u32 = 2;
const OFFLINE_AFTER: u32 = 3;
/// The slow node's own pace, five times the cluster's.
const PACE: Duration = Duration::from_secs(1);
/// Gaps between heartbeats the slow node must stay online across.
const GAPS: u32 = 4;

fn registration(id: &str, interval: Option<Duration>) -> RegisterNodeRequest {
    RegisterNodeRequest {
        id: id.into(),
        hostname: format!("{id}.example"),
        ip_address: "10.0.0.7".into(),
        port: 8000,
        role: NodeRole::Worker,
        max_agents: 4,
        services: vec!["wrapper".into()],
        labels: Default::default(),
        heartbeat_interval: interval.map(|d| d.as_secs_f64()),
    }
}

async fn send_heartbeat(c: &ShoalClient, id: &str, seq: u64) -> Result<()> {
    let hb = Heartbeat {
        id: id.into(),
        seq,
        cpu_usage: 12.0,
        memory_usage: 30.0,
        disk_usage: 40.0,
        load_average: 0.2,
        active_agents: 0,
        uptime_s: seq * PACE.as_secs(),
        sent_at: Utc::now(),
        agents_digest: None,
    };
    c.nats()
        .publish(
            c.subjects().node_heartbeat(id),
            serde_json::to_vec(&hb)?.into(),
        )
        .await?;
    c.nats().flush().await?;
    Ok(())
}

#[tokio::test]
async fn a_node_heartbeating_at_its_registered_pace_is_offline_only_after_its_own_missed_heartbeats()
-> Result<()> {
    let nats = nats().await?;
    let c = client(&nats, None).await?;
    let (suspect, offline) = (SUSPECT_AFTER.to_string(), OFFLINE_AFTER.to_string());
    let flags = [
        "--heartbeat-interval",
        CLUSTER_INTERVAL,
        "--suspect-after",
        &suspect,
        "--offline-after",
        &offline,
    ];
    let mut _registries = Vec::new();
    for id in REPLICAS {
        _registries.push(registry(&nats, id, None, &flags).await?);
    }
    let events = Events::record(&c).await?;

    // An interval of zero, below zero or over an hour is refused, naming the field.
    for bad in [0.0, -30.0, 7200.0] {
        let err = c
            .register_node(&RegisterNodeRequest {
                heartbeat_interval: Some(bad),
                ..registration("slow", None)
            })
            .await
            .unwrap_err();
        let ClientError::Service(e) = err else {
            panic!("{err}")
        };
        assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
        assert!(
            e.message.starts_with("heartbeat_interval must be"),
            "{}",
            e.message
        );
    }

    // "slow" declares its pace; "plain", heartbeating alongside it at the same pace,
    // does not, and is judged at the cluster's interval as before.
    let reply = c.register_node(&registration("slow", Some(PACE))).await?;
    assert_eq!(reply.node.unwrap().heartbeat_interval, Some(1.0));
    c.register_node(&registration("plain", None)).await?;
    // The replica that did not take the registration reads the pace from the bucket;
    // the refused registrations added nothing.
    wait_listed(
        &c,
        &REPLICAS,
        &["plain", "slow"],
        "both registrations, with slow's pace, on both replicas",
        |n| n.status == NodeStatus::Online && (n.id == "slow") == n.heartbeat_interval.is_some(),
    )
    .await?;

    // Heartbeats at the slow pace; the ticker is the scenario's pace, not a wait.
    let mut ticker = tokio::time::interval(PACE);
    let mut last_sent = Instant::now();
    for seq in 1..=u64::from(GAPS) + 1 {
        ticker.tick().await;
        for id in ["slow", "plain"] {
            send_heartbeat(&c, id, seq).await?;
        }
        last_sent = Instant::now();
    }
    // Absence across a window: GAPS gaps of PACE, each half of slow's scaled suspect
    // threshold (SUSPECT_AFTER × PACE) and beyond the cluster's offline threshold
    // (OFFLINE_AFTER × 200 ms), which "plain" shows by going offline in every gap.
    assert_eq!(events.count("slow", NodeEventKind::Suspect), 0);
    assert_eq!(events.count("slow", NodeEventKind::Offline), 0);
    assert!(
        events.count("plain", NodeEventKind::Offline) >= GAPS as usize,
        "the node without a declared pace went offline in each gap: {} times",
        events.count("plain", NodeEventKind::Offline)
    );
    for r in REPLICAS {
        let list = list_on(&c, r, &ListNodesRequest::default())
            .await
            .expect("list");
        let slow = list.nodes.iter().find(|n| n.id == "slow").expect("listed");
        assert_eq!(slow.status, NodeStatus::Online, "slow on {r}");
        assert!(slow.healthy, "slow on {r}");
    }

    // Silence: suspect after its second missed heartbeat, offline after its third.
    let (suspect_at, _) = events
        .wait("slow", NodeEventKind::Suspect, last_sent, DEADLINE)
        .await?;
    let (offline_at, offline) = events
        .wait("slow", NodeEventKind::Offline, last_sent, DEADLINE)
        .await?;
    let (suspect_after, offline_after) = (suspect_at - last_sent, offline_at - last_sent);
    println!(
        "a node at 5× the cluster's interval ({PACE:?}), silent: suspect after {suspect_after:?} \
         (threshold {:?}), offline after {offline_after:?} (threshold {:?})",
        PACE * SUSPECT_AFTER,
        PACE * OFFLINE_AFTER
    );
    assert!(suspect_after >= PACE * SUSPECT_AFTER, "{suspect_after:?}");
    assert!(offline_after >= PACE * OFFLINE_AFTER, "{offline_after:?}");
    // Not much later either; the bound allows for a loaded machine.
    assert!(
        offline_after < PACE * OFFLINE_AFTER + Duration::from_secs(2),
        "{offline_after:?}"
    );
    assert_eq!(offline.previous_status, Some(NodeStatus::Suspect));
    wait_listed(
        &c,
        &REPLICAS,
        &["plain", "slow"],
        "both offline on both replicas",
        |n| n.status == NodeStatus::Offline,
    )
    .await?;
    Ok(())
}
