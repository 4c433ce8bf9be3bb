//! `discovery`, second part: --announce-storm nodes announce all at once, and each is
//! timed from its own announce to the registry's `joined` event and to the balancer
//! selecting it. One poller asks the balancer with `select.batch` (a selection per
//! node not yet seen, by its own label) as fast as the answers come, so a figure is
//! late by at most one batch's round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use shoal_protocol::{MAX_SELECT_BATCH, NodeEvent, NodeEventKind, SelectBatchRequest};

use super::discovery::{announce, by_label, heartbeat, leave};

use crate::measure::Recorder;
use crate::report::Report;
use crate::stack::Stack;

/// How long a node may take before it counts as not discovered.
const GIVE_UP: Duration = Duration::from_secs(10);

pub async fn run(stack: &Stack, count: usize, report: &mut Report) -> anyhow::Result<()> {
    let prefix = super::run_prefix("storm");
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let nats = stack.client.nats().clone();
    let subjects = &stack.subjects;
    let joined: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut events = nats.subscribe(subjects.registry_events_all()).await?;
    nats.flush().await?;
    let sink = joined.clone();
    let watcher = tokio::spawn(async move {
        while let Some(msg) = events.next().await {
            if let Ok(e) = serde_json::from_slice::<NodeEvent>(&msg.payload)
                && e.event == NodeEventKind::Joined
            {
                let mut seen = sink.lock().unwrap_or_else(|p| p.into_inner());
                seen.entry(e.node_id).or_insert_with(Instant::now);
            }
        }
    });
    let mut messages = Vec::with_capacity(count);
    for id in &ids {
        messages.push((
            Bytes::from(serde_json::to_vec(&announce(id))?),
            Bytes::from(serde_json::to_vec(&heartbeat(id))?),
        ));
    }
    eprintln!("{count} nodes announcing at once…");
    let mut sent = Vec::with_capacity(count);
    for (id, (a, h)) in ids.iter().zip(messages) {
        sent.push(Instant::now());
        nats.publish(subjects.node_announce(id), a).await?;
        nats.publish(subjects.node_heartbeat(id), h).await?;
    }
    nats.flush().await?;
    let storm_started = sent[0];

    let mut selectable = vec![None; count];
    let mut pending: Vec<usize> = (0..count).collect();
    let mut polls = 0u64;
    while !pending.is_empty() && storm_started.elapsed() < GIVE_UP {
        let mut still = Vec::with_capacity(pending.len());
        for chunk in pending.chunks(MAX_SELECT_BATCH) {
            let request = SelectBatchRequest {
                selections: chunk.iter().map(|&i| by_label(&ids[i])).collect(),
            };
            polls += 1;
            let reply = stack.client.select_batch(&request).await;
            let at = Instant::now();
            match reply {
                Ok(reply) => {
                    for (&i, outcome) in chunk.iter().zip(reply.results) {
                        if outcome.node_id.as_deref() == Some(ids[i].as_str()) {
                            selectable[i] = Some(at - sent[i]);
                        } else {
                            still.push(i);
                        }
                    }
                }
                Err(_) => still.extend_from_slice(chunk),
            }
        }
        pending = still;
    }
    let elapsed = storm_started.elapsed();
    // Every node's own joined time, once the events have had the same deadline.
    let joined_times = {
        let seen = joined.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .zip(&sent)
            .map(|(id, s)| seen.get(id).map(|at| at.saturating_duration_since(*s)))
            .collect::<Vec<_>>()
    };
    watcher.abort();
    for id in &ids {
        nats.publish(
            subjects.node_leave(id),
            Bytes::from(serde_json::to_vec(&leave(id))?),
        )
        .await?;
    }
    nats.flush().await?;

    let (mut listed, mut picked) = (Recorder::new(), Recorder::new());
    for t in &joined_times {
        match t {
            Some(t) => listed.record(*t, &Ok(())),
            None => listed.record(GIVE_UP, &Err("no joined event".to_string())),
        }
    }
    for t in &selectable {
        match t {
            Some(t) => picked.record(*t, &Ok(())),
            None => picked.record(GIVE_UP, &Err("never selected".to_string())),
        }
    }
    let listed = listed.measurement(
        &format!("{count} at once: announce → registry joined event"),
        elapsed,
    );
    let picked = picked.measurement(
        &format!("{count} at once: announce → balancer selects it"),
        elapsed,
    );
    report.figure("storm_select_batches", polls);
    report.goal(
        &format!("discovery p99 ≤ 100 ms with {count} nodes announcing at once"),
        picked.p99_us <= 100_000 && picked.ok == count as u64,
        format!(
            "selectable p99 {} µs, {} of {count} selected",
            picked.p99_us, picked.ok
        ),
    );
    report.measurements.push(listed);
    report.measurements.push(picked);
    Ok(())
}
