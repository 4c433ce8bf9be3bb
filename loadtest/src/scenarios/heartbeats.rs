//! `heartbeats`: --nodes simulated nodes heartbeating every second for --duration;
//! the registry's CPU (share of one core) and RSS read from /proc, and every suspect
//! or offline event for a node that never stopped is a false alarm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_protocol::{NodeEvent, NodeEventKind};

use crate::args::Args;
use crate::cost::cpu_ticks;
use crate::report::Report;
use crate::stack::{Spawn, Stack};

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok(kib / 1024.0)
}

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = Stack::open(args, Spawn::REGISTRY_ONLY).await?;
    let pid = match &stack.registry {
        Some(p) => p.pid(),
        None => anyhow::bail!(
            "the heartbeats scenario reads the registry's CPU from /proc: run it with --spawn"
        ),
    };
    let alarms = Arc::new(AtomicU64::new(0));
    let mut events = stack
        .client
        .nats()
        .subscribe(stack.subjects.registry_events_all())
        .await?;
    let counter = alarms.clone();
    let watcher = tokio::spawn(async move {
        while let Some(msg) = events.next().await {
            if let Ok(e) = serde_json::from_slice::<NodeEvent>(&msg.payload)
                && e.node_id.starts_with("lt-")
                && matches!(e.event, NodeEventKind::Suspect | NodeEventKind::Offline)
            {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let startup = Instant::now();
    stack
        .start_nodes(args.nodes, args.max_agents, args.node_metrics.sim())
        .await?;
    report.figure("all_nodes_online_after_s", startup.elapsed().as_secs_f64());
    let duration = args.duration.unwrap_or(Duration::from_secs(60));
    let (ticks0, t0) = (cpu_ticks(pid)?, Instant::now());
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    let mut peak_rss = rss_mib(pid)?;
    while t0.elapsed() < duration {
        // Sampling cadence for RSS and the progress bar, not synchronisation.
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(rss_mib(pid)?);
        bar.set_position(t0.elapsed().as_secs());
    }
    bar.finish_and_clear();
    let cores = (cpu_ticks(pid)? - ticks0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    let false_alarms = alarms.load(Ordering::Relaxed);
    watcher.abort();
    report.figure("nodes", args.nodes);
    report.figure("heartbeats_per_sec", args.nodes);
    report.figure("registry_cpu_cores", (cores * 1000.0).round() / 1000.0);
    report.figure("registry_rss_mib_peak", (peak_rss * 10.0).round() / 10.0);
    report.figure("false_suspect_or_offline_events", false_alarms);
    report.check(
        "no false suspect or offline",
        false_alarms == 0,
        format!("{false_alarms} events"),
    );
    report.goal(
        "registry < 0.5 core",
        cores < 0.5,
        format!("{cores:.3} cores at {} heartbeats/s", args.nodes),
    );
    Ok(())
}
