//! Scale: 10,000 simulated nodes heartbeating every second into one real registry
//! process for 60 s. No node may be suspected; the registry's CPU (share of one
//! core, from /proc/<pid>/stat) and RSS are printed.
//!
//! Run (release, so the figures mean something):
//! `cargo nextest run --release -p shoal-registry --test scale --run-ignored only --no-capture`
//! `SHOAL_SCALE_NODES` and `SHOAL_SCALE_SECS` change the size and duration.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shoal_announcer::sim::{SimConfig, SimulatedCluster};
use shoal_protocol::{MEMBERS_BUCKET, NodeEventKind, Subjects};
use shoal_testkit::wait_for;

use common::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Ok(ticks as f64 / hz as f64)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}

async fn bucket_sequence(c: &shoal_protocol::ShoalClient) -> Result<u64> {
    let js = async_nats::jetstream::new(c.nats().clone());
    let mut stream = js
        .get_stream(shoal_protocol::kv_stream(MEMBERS_BUCKET))
        .await?;
    Ok(stream.info().await?.state.last_sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale run: 10,000 nodes for 60 s; run explicitly (see the module docs)"]
async fn ten_thousand_nodes_heartbeating_for_a_minute() -> Result<()> {
    let count = env_or("SHOAL_SCALE_NODES", 10_000) as usize;
    let secs = env_or("SHOAL_SCALE_SECS", 60);
    let nats = nats().await?;
    let c = client(&nats, None).await?;
    let registry = registry(&nats, "r1", None, &[]).await?;
    let pid = registry.pid();
    let events = Events::record(&c).await?;
    // The simulated nodes get their own connection, as a separate host would.
    let sim_nc = async_nats::connect(nats.url()).await?;
    let started = Instant::now();
    let sim = SimulatedCluster::start(
        sim_nc,
        Subjects::default(),
        SimConfig {
            count,
            id_prefix: "sim".into(),
            ..SimConfig::default()
        },
    )
    .await?;
    wait_for(
        &format!("{count} nodes online"),
        Duration::from_secs(180),
        || async {
            let s = stats_on(&c, "r1").await?;
            (s.total_nodes == count && s.online_nodes == count).then_some(())
        },
    )
    .await?;
    println!(
        "{count} nodes joined and online after {:?}",
        started.elapsed()
    );

    let suspicions = |events: &Events| -> usize {
        events.count_kind(NodeEventKind::Suspect) + events.count_kind(NodeEventKind::Offline)
    };
    let cpu0 = cpu_seconds(pid)?;
    let seq0 = bucket_sequence(&c).await?;
    let t0 = Instant::now();
    let window = Duration::from_secs(secs);
    let mut rss_max = rss_kib(pid)?;
    // Watch the run for its whole duration, failing as soon as a node is suspected.
    let outcome = wait_for("a false suspicion", window, || {
        rss_max = rss_max.max(rss_kib(pid).unwrap_or(0));
        let n = suspicions(&events);
        async move { (n > 0).then_some(n) }
    })
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let writes = bucket_sequence(&c).await? - seq0;
    let stats = stats_on(&c, "r1").await.context("stats")?;
    println!(
        "scale: {count} nodes × 1 heartbeat/s for {elapsed:.1} s into one registry: \
         CPU {:.1}% of one core ({cpu:.2} s), RSS {:.1} MiB (max {:.1} MiB), \
         bucket writes {writes} ({:.0}/s), online {}/{count}, suspect+offline events {}",
        cpu / elapsed * 100.0,
        rss_kib(pid)? as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        writes as f64 / elapsed,
        stats.online_nodes,
        suspicions(&events),
    );
    if let Ok(n) = outcome {
        panic!("{n} suspect/offline events for healthy simulated nodes");
    }
    assert_eq!(stats.online_nodes, count);
    assert_eq!(stats.rejected_messages, 0);
    drop(sim);
    Ok(())
}
