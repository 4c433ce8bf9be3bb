//! A registry attached to a nats-server that is cut off from the rest of the
//! cluster: its connection stays up, but it hears only that server's side (no
//! node) and can write nothing. That silence says nothing about the nodes: it must
//! move to a server of the majority and, through the cut and after it, suspect
//! none of the nodes that kept heartbeating, while still taking a node that really
//! died during the cut offline.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use shoal_protocol::{ListNodesRequest, NodeEventKind, NodeStatus, ServiceKind, connection};
use shoal_testkit::{NatsCluster, NatsOptions, NetNs, ServiceProcess, binary, wait_for};

/// How long the routes stay cut: past the default offline threshold (3 s).
const CUT: Duration = Duration::from_secs(8);

#[tokio::test]
async fn a_registry_on_a_cut_off_server_moves_and_suspects_no_live_node() -> Result<()> {
    // Declared first: dropped after the server that runs in it.
    let netns = NetNs::new()?;
    let cluster =
        NatsCluster::start_spread(NatsOptions::for_netns(), &[None, None, Some(&netns)]).await?;
    let (majority, minority) = (&cluster.servers[0], &cluster.servers[2]);
    let c = client(majority, None).await?;
    let events = Events::record(&c).await?;
    // Given only the server that will be cut off; it learns the others from it.
    let args: Vec<String> = ["--nats-url", &minority.url(), "--instance-id", "r1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let registry = ServiceProcess::spawn(
        "registry r1",
        &binary("shoal-registry")?,
        &args,
        &[("SHOAL_KV_REPLICAS".into(), "3".into())],
    )?;
    registry.wait_for_log("registry ready", DEADLINE).await?;
    let _live = announcer(majority, "live", None, &[]).await?;
    let mut dead = announcer(majority, "dead", None, &[]).await?;
    wait_listed(&c, &["r1"], &["dead", "live"], "both nodes online", |n| {
        n.status == NodeStatus::Online
    })
    .await?;

    netns.cut_routes(&cluster.cluster_ports())?;
    let cut_at = Instant::now();
    dead.kill()?;
    // The registry leaves the minority's server for the majority.
    let registry_connection = connection::service(ServiceKind::Registry, "r1");
    wait_for(
        "the registry to leave the cut-off server",
        DEADLINE,
        || async {
            let attached = minority.connections().await.ok()?;
            let on_it = attached
                .iter()
                .any(|conn| conn.name.as_deref() == Some(registry_connection.as_str()));
            (!on_it).then_some(())
        },
    )
    .await?;
    let moved = cut_at.elapsed();
    // ... and takes the node that died offline, on the majority's side.
    events
        .wait("dead", NodeEventKind::Offline, cut_at, DEADLINE)
        .await?;
    let offline = cut_at.elapsed();
    // The fault's length, not a wait for something: the routes stay cut this long.
    tokio::time::sleep_until((cut_at + CUT).into()).await;
    netns.restore_routes()?;
    let restored_wall = chrono::Utc::now();
    wait_for(
        "r1 to list the live node, heard after the heal",
        DEADLINE,
        || async {
            let list = list_on(&c, "r1", &ListNodesRequest::default()).await?;
            let live = list.nodes.iter().find(|n| n.id == "live")?;
            (live.status == NodeStatus::Online && live.last_seen > restored_wall).then_some(())
        },
    )
    .await?;
    println!(
        "MEASURED registry on a server cut off for {CUT:?}: moved to the majority after \
         {moved:?}, the node killed at the cut offline after {offline:?}"
    );
    for kind in [NodeEventKind::Suspect, NodeEventKind::Offline] {
        assert_eq!(
            events.count("live", kind),
            0,
            "the live node was marked {kind:?} for the registry's own cut"
        );
    }
    assert!(c.get_node("live").await?.healthy);
    Ok(())
}
