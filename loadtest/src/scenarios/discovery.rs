//! `discovery`: time from a node's first announce to (a) the registry's `joined`
//! event and (b) the balancer selecting it, for nodes one by one and then for
//! --announce-storm nodes at once ([`super::discovery_storm`]). Oxide's UDP broadcast
//! took ~90 s; the goal here is p99 < 100 ms.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use shoal_protocol::{
    Announce, Heartbeat, Leave, NodeEvent, NodeEventKind, NodeRole, SelectRequest,
};

use crate::args::Args;
use crate::measure::{Limit, Recorder};
use crate::report::Report;
use crate::stack::{Spawn, Stack};

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let stack = Stack::with_nodes(args, Spawn::NO_COORDINATOR).await?;
    let probes = match args.limit() {
        Limit::Requests(n) => n.min(1_000),
        Limit::Duration(_) => 200,
    };
    let prefix = super::run_prefix("disc");
    let nats = stack.client.nats().clone();
    let subjects = stack.subjects.clone();
    let (mut listed, mut selectable) = (Recorder::new(), Recorder::new());
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(probes);
    for i in 0..probes {
        let id = format!("{prefix}{i}");
        let mut events = nats.subscribe(subjects.registry_event(&id)).await?;
        nats.flush().await?;
        let sent = Instant::now();
        nats.publish(
            subjects.node_announce(&id),
            Bytes::from(serde_json::to_vec(&announce(&id))?),
        )
        .await?;
        nats.publish(
            subjects.node_heartbeat(&id),
            Bytes::from(serde_json::to_vec(&heartbeat(&id))?),
        )
        .await?;
        let joined = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(msg) = events.next().await {
                if serde_json::from_slice::<NodeEvent>(&msg.payload)
                    .is_ok_and(|e| e.event == NodeEventKind::Joined)
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let result = if joined {
            Ok(())
        } else {
            Err("no joined event within 5s".to_string())
        };
        listed.record(sent.elapsed(), &result);
        let request = by_label(&id);
        let deadline = sent + Duration::from_secs(5);
        let result = loop {
            if stack
                .client
                .select(&request)
                .await
                .is_ok_and(|r| r.node_id == id)
            {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err("not selectable within 5s".to_string());
            }
            tokio::task::yield_now().await;
        };
        selectable.record(sent.elapsed(), &result);
        nats.publish(
            subjects.node_leave(&id),
            Bytes::from(serde_json::to_vec(&leave(&id))?),
        )
        .await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let listed = listed.measurement("announce → registry joined event", elapsed);
    let selectable = selectable.measurement("announce → balancer selects it", elapsed);
    report.goal(
        "discovery p99 < 100 ms",
        selectable.p99_us < 100_000 && selectable.ok == probes,
        format!(
            "selectable p99 {} µs over {} probes",
            selectable.p99_us, selectable.ok
        ),
    );
    report.measurements.push(listed);
    report.measurements.push(selectable);
    if args.announce_storm > 0 {
        super::discovery_storm::run(&stack, args.announce_storm, report).await?;
    }
    Ok(())
}

/// A probe node's announce: one slot, labelled with its own id, so a selection by
/// that label ([`by_label`]) picks it alone.
pub(super) fn announce(id: &str) -> Announce {
    Announce {
        id: id.to_string(),
        hostname: id.to_string(),
        ip_address: "127.0.0.1".into(),
        port: 0,
        role: NodeRole::Worker,
        services: vec!["probe".into()],
        labels: BTreeMap::from([("probe".to_string(), id.to_string())]),
        max_agents: 1,
        version: "loadtest".into(),
        features: vec![],
        started_at: Utc::now(),
        heartbeat_interval: None,
    }
}

pub(super) fn heartbeat(id: &str) -> Heartbeat {
    Heartbeat {
        id: id.to_string(),
        seq: 1,
        cpu_usage: 1.0,
        memory_usage: 1.0,
        disk_usage: 1.0,
        load_average: 0.0,
        active_agents: 0,
        uptime_s: 0,
        sent_at: Utc::now(),
        agents_digest: None,
    }
}

pub(super) fn by_label(id: &str) -> SelectRequest {
    SelectRequest {
        labels: BTreeMap::from([("probe".to_string(), id.to_string())]),
        ..Default::default()
    }
}

pub(super) fn leave(id: &str) -> Leave {
    Leave {
        id: id.to_string(),
        reason: Some("probe done".into()),
        sent_at: Utc::now(),
    }
}
