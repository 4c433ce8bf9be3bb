//! `heartbeats`: --nodes simulated nodes join at once (each announces within the
//! first second) and heartbeat every second for --duration, into --registries
//! replicas sharing --heartbeat-partitions. Reported: how soon all are online; every
//! process's CPU (share of one core, the simulator's apart, as it shares the
//! machine); each registry's CPU and RSS from /proc; from the registries' own
//! metrics, the heartbeats they accepted, the messages their NATS clients dropped and
//! their membership writes' latency. Every suspect or offline event for a node that
//! never stopped is a false alarm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_protocol::{NodeEvent, NodeEventKind, ServiceKind};
use shoal_testkit::metric_sum;

use crate::args::Args;
use crate::cost::{Cost, cpu_ticks};
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
    let pids: Vec<u32> = stack.registries().map(|p| p.pid()).collect();
    if pids.is_empty() {
        anyhow::bail!(
            "the heartbeats scenario reads the registry's CPU from /proc: run it with --spawn"
        );
    }
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
    let online_after = startup.elapsed();
    report.figure("all_nodes_online_after_s", online_after.as_secs_f64());
    let duration = args.duration.unwrap_or(Duration::from_secs(60));
    let before = registry_counters(&stack).await;
    let cost = Cost::start(&stack).await;
    let ticks0 = pids
        .iter()
        .map(|&p| cpu_ticks(p))
        .collect::<Result<Vec<_>, _>>()?;
    let t0 = Instant::now();
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    let mut peak_rss = 0f64;
    loop {
        for &pid in &pids {
            peak_rss = peak_rss.max(rss_mib(pid)?);
        }
        if t0.elapsed() >= duration {
            break;
        }
        // Sampling cadence for RSS and the progress bar, not synchronisation.
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.set_position(t0.elapsed().as_secs());
    }
    bar.finish_and_clear();
    let elapsed = t0.elapsed();
    let mut each = Vec::new();
    for (&pid, ticks0) in pids.iter().zip(ticks0) {
        each.push((cpu_ticks(pid)? - ticks0) as f64 / 100.0 / elapsed.as_secs_f64());
    }
    let cores = each.iter().copied().fold(0.0, f64::max);
    if let Some(cost) = cost {
        cost.report_cores(report, "steady", elapsed);
    }
    let after = registry_counters(&stack).await;
    let false_alarms = alarms.load(Ordering::Relaxed);
    watcher.abort();
    report.figure("nodes", args.nodes);
    let accepted = (after.heartbeats - before.heartbeats) / elapsed.as_secs_f64();
    report.figure("heartbeats_accepted_per_sec", accepted.round());
    report.figure("registry_slow_consumer_drops", after.dropped);
    if after.writes > 0.0 {
        report.figure(
            "membership_write_mean_ms",
            (after.write_seconds / after.writes * 1e4).round() / 10.0,
        );
    }
    report.figure("registries", pids.len());
    report.figure("heartbeat_partitions", args.heartbeat_partitions);
    report.figure(
        "registry_cpu_cores_each",
        each.iter()
            .map(|c| (c * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>(),
    );
    report.figure("registry_cpu_cores", (cores * 1000.0).round() / 1000.0);
    report.figure("registry_rss_mib_peak", (peak_rss * 10.0).round() / 10.0);
    report.figure("false_suspect_or_offline_events", false_alarms);
    report.check(
        "no false suspect or offline",
        false_alarms == 0,
        format!("{false_alarms} events"),
    );
    report.goal(
        "all online within 10 s of the join storm",
        online_after.as_secs_f64() <= 10.0,
        format!(
            "{:.2} s for {} nodes",
            online_after.as_secs_f64(),
            args.nodes
        ),
    );
    report.goal(
        "each registry < 1 core",
        cores < 1.0,
        format!(
            "{cores:.3} cores at most, {} replicas at {} heartbeats/s",
            pids.len(),
            args.nodes
        ),
    );
    report.goal(
        "each registry's RSS < 500 MiB",
        peak_rss < 500.0,
        format!("{peak_rss:.1} MiB peak"),
    );
    Ok(())
}

/// What the registry's own metrics say, summed over its counters' samples.
#[derive(Default)]
struct RegistryCounters {
    heartbeats: f64,
    dropped: f64,
    writes: f64,
    write_seconds: f64,
}

/// Reads the spawned registries' counters over NATS, summed (zeros where one does
/// not answer).
async fn registry_counters(stack: &Stack) -> RegistryCounters {
    let mut text = String::new();
    for replica in stack.registries() {
        if let Ok(one) = stack
            .client
            .metrics(ServiceKind::Registry, replica.name())
            .await
        {
            text.push_str(&one);
        }
    }
    let value = |name: &str| metric_sum(&text, name);
    RegistryCounters {
        heartbeats: value("shoal_registry_heartbeats_received_total"),
        dropped: value("shoal_registry_nats_slow_consumer_drops_total"),
        writes: value("shoal_registry_membership_write_duration_seconds_count"),
        write_seconds: value("shoal_registry_membership_write_duration_seconds_sum"),
    }
}
