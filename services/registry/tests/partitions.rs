//! Heartbeat partitions across registry replicas, on a real nats-server that maps
//! heartbeats into partitions: each replica hears and judges its share, and as
//! replicas die, join and stop, their partitions change hands without a false
//! suspect, while a node that dies in a handed-over partition is still found.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shoal_announcer::sim::{SimConfig, SimulatedCluster};
use shoal_protocol::partition::{heartbeat_mapping_config, partition_of};
use shoal_protocol::{NodeEventKind, ServiceKind, ShoalClient, Subjects};
use shoal_testkit::{NatsOptions, NatsServer, metric_sum, wait_for};

use common::*;

const PARTITIONS: u32 = 6;
const NODES: usize = 60;

/// A registry's metric, summed over its samples (0 when unanswered).
async fn metric(c: &ShoalClient, instance: &str, name: &str) -> f64 {
    match c.metrics(ServiceKind::Registry, instance).await {
        Ok(text) => metric_sum(&text, name),
        Err(_) => 0.0,
    }
}

async fn owned(c: &ShoalClient, instance: &str) -> f64 {
    metric(c, instance, "shoal_registry_partitions_owned").await
}

async fn heard(c: &ShoalClient, instance: &str) -> f64 {
    metric(c, instance, "shoal_registry_heartbeats_received_total").await
}

/// Waits until each listed replica owns its number of partitions.
async fn wait_owned(c: &ShoalClient, want: &[(&str, f64)]) -> Result<()> {
    wait_for(&format!("partitions owned: {want:?}"), DEADLINE, || async {
        for (instance, n) in want {
            if owned(c, instance).await != *n {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Waits until `instance` has heard `count` more heartbeats than now: time enough
/// for silence to condemn anyone it wrongly judges.
async fn wait_heard(c: &ShoalClient, instance: &str, count: f64) -> Result<()> {
    let from = heard(c, instance).await;
    wait_for(
        &format!("{count} more heartbeats at {instance}"),
        DEADLINE,
        || async { (heard(c, instance).await >= from + count).then_some(()) },
    )
    .await
}

fn alarms(events: &Events) -> usize {
    events.count_kind(NodeEventKind::Suspect) + events.count_kind(NodeEventKind::Offline)
}

async fn partitioned_nats() -> Result<NatsServer> {
    NatsServer::start_with(NatsOptions {
        extra_config: heartbeat_mapping_config(&Subjects::default(), PARTITIONS),
        ..NatsOptions::default()
    })
    .await
}

async fn simulate(nats: &NatsServer, count: usize) -> Result<SimulatedCluster> {
    let nc = async_nats::connect(nats.url()).await?;
    Ok(SimulatedCluster::start(
        nc,
        Subjects::default(),
        SimConfig {
            count,
            id_prefix: "part".into(),
            ..SimConfig::default()
        },
    )
    .await?)
}

async fn wait_online(c: &ShoalClient, instances: &[&str], count: usize) -> Result<()> {
    wait_for(&format!("{count} nodes online"), DEADLINE, || async {
        for instance in instances {
            let s = stats_on(c, instance).await?;
            if s.online_nodes != count {
                return None;
            }
        }
        Some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_partitions_and_hand_them_over_without_false_alarms() -> Result<()> {
    let nats = partitioned_nats().await?;
    let c = client(&nats, None).await?;
    let events = Events::record(&c).await?;
    let flags = ["--heartbeat-partitions", "6"];
    let mut r1 = registry(&nats, "r1", None, &flags).await?;
    let mut r2 = registry(&nats, "r2", None, &flags).await?;
    wait_owned(&c, &[("r1", 3.0), ("r2", 3.0)]).await?;
    let sim = simulate(&nats, NODES).await?;
    wait_online(&c, &["r1", "r2"], NODES).await?;

    // Each hears its share, not everything.
    let (a0, b0) = (heard(&c, "r1").await, heard(&c, "r2").await);
    wait_heard(&c, "r1", (NODES * 2) as f64).await?;
    let (a, b) = (heard(&c, "r1").await - a0, heard(&c, "r2").await - b0);
    let share = a / (a + b);
    assert!(
        (0.2..0.8).contains(&share),
        "r1 heard {a} heartbeats and r2 {b}: not shared"
    );

    // r2 dies: r1 takes its partitions once r2's key ages out, and still finds a
    // node that dies in one of them.
    r2.kill()?;
    wait_owned(&c, &[("r1", PARTITIONS as f64)]).await?;
    let victim = (0..NODES)
        .find(|&i| partition_of(&sim.id(i), PARTITIONS) % 2 == 1)
        .context("a node in r2's partitions")?;
    let victim_id = sim.id(victim);
    let since = Instant::now();
    sim.kill(victim);
    events
        .wait(&victim_id, NodeEventKind::Offline, since, DEADLINE)
        .await?;
    assert_eq!(
        alarms(&events),
        2,
        "only the killed node was suspected and went offline"
    );

    // r3 joins and r1 stops gracefully: each handover keeps every live node online.
    let r3 = registry(&nats, "r3", None, &flags).await?;
    wait_owned(&c, &[("r1", 3.0), ("r3", 3.0)]).await?;
    wait_heard(&c, "r3", (NODES * 3) as f64).await?;
    let stopping = Instant::now();
    r1.terminate()?;
    r1.wait_exit(DEADLINE).await?;
    wait_owned(&c, &[("r3", PARTITIONS as f64)]).await?;
    let handed = stopping.elapsed();
    assert!(
        handed < Duration::from_secs(4),
        "a stopping replica's partitions are taken within a refresh or two, not when its key ages out: {handed:?}"
    );
    wait_heard(&c, "r3", (NODES * 3) as f64).await?;
    assert_eq!(alarms(&events), 2, "no false suspect or offline");
    wait_online(&c, &["r3"], NODES - 1).await?;
    drop(r3);
    drop(sim);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_servers_mapping_partitioned_replicas_still_judge_every_node_once() -> Result<()>
{
    let nats = nats().await?;
    let c = client(&nats, None).await?;
    let events = Events::record(&c).await?;
    let flags = ["--heartbeat-partitions", "4"];
    let r1 = registry(&nats, "r1", None, &flags).await?;
    let _r2 = registry(&nats, "r2", None, &flags).await?;
    wait_owned(&c, &[("r1", 2.0), ("r2", 2.0)]).await?;
    let sim = simulate(&nats, 20).await?;
    wait_online(&c, &["r1", "r2"], 20).await?;
    let since = Instant::now();
    sim.kill(0);
    events
        .wait(&sim.id(0), NodeEventKind::Offline, since, DEADLINE)
        .await?;
    wait_heard(&c, "r1", 40.0).await?;
    assert_eq!(
        alarms(&events),
        2,
        "one suspect and one offline, for the killed node alone"
    );
    assert!(
        r1.log().contains("heartbeat not mapped to its partition"),
        "the replica says the server does not map heartbeats"
    );
    assert!(
        metric(&c, "r1", "shoal_registry_heartbeats_unmapped_total").await > 0.0,
        "and counts them, for an alert"
    );
    drop(sim);
    Ok(())
}
