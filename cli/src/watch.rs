//! `shoal watch`: the leader, agents (waiting ones stand out), nodes and recent
//! events, redrawn every second; with `--json`, JSON lines instead (a snapshot a
//! second, and each event as it comes).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::connection::State;
use futures::StreamExt;
use shoal_protocol::{AssignmentEvent, LeaderChanged, ListNodesRequest, NodeEvent, ShoalClient};
use tokio::signal::unix::{SignalKind, signal};

use crate::output::Table;

const KEEP: usize = 15;

/// How long one refresh may wait for an answer: a redraw a second, even when
/// something does not answer.
const ASK_FOR: Duration = Duration::from_millis(800);

pub async fn watch(
    client: &ShoalClient,
    refreshes: Option<u64>,
    as_json: bool,
) -> anyhow::Result<()> {
    // One listener for the whole run, polled while drawing too: Ctrl-C always ends
    // `watch`, whatever it is waiting for.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let client = client
        .clone()
        .with_timeout(ASK_FOR)
        .with_retry_for(Duration::ZERO);
    let nats = client.nats();
    let s = client.subjects();
    let mut events = futures::stream::select_all([
        nats.subscribe(s.registry_events_all()).await?,
        nats.subscribe(s.coordinator_events_all()).await?,
        nats.subscribe(s.coordinator_leader_changed()).await?,
    ]);
    let mut recent: VecDeque<String> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut drawn = 0u64;
    let mut disconnected_since = None;
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            Some(msg) = events.next() => {
                if as_json {
                    outln!("{}", event_line(&msg));
                } else {
                    recent.push_front(describe(&msg.payload));
                    recent.truncate(KEEP);
                }
            }
            _ = tick.tick() => {
                let connected = nats.connection_state() == State::Connected;
                let text = if as_json {
                    tokio::select! {
                        _ = interrupt.recv() => return Ok(()),
                        line = snapshot(&client, connected) => line.to_string(),
                    }
                } else if connected {
                    disconnected_since = None;
                    tokio::select! {
                        _ = interrupt.recv() => return Ok(()),
                        text = screen(&client, &recent) => text,
                    }
                } else {
                    let since = *disconnected_since.get_or_insert_with(chrono::Utc::now);
                    disconnected(since, &recent)
                };
                outln!("{text}");
                drawn += 1;
                if refreshes.is_some_and(|n| drawn >= n) {
                    return Ok(());
                }
            }
        }
    }
}

/// One JSON line of `watch --json` a second: the leader, the cluster's figures and
/// the nodes, each `null` with its error's code in `errors` when it did not answer.
async fn snapshot(client: &ShoalClient, connected: bool) -> serde_json::Value {
    let at = chrono::Utc::now();
    if !connected {
        return serde_json::json!({ "type": "snapshot", "at": at, "connected": false });
    }
    let nodes = ListNodesRequest::default();
    let (leader, stats, nodes) = tokio::join!(
        client.leader(),
        client.cluster_stats(),
        client.list_nodes(&nodes)
    );
    let mut errors = serde_json::Map::new();
    let mut keep = |what: &str, e: &shoal_protocol::ClientError| {
        errors.insert(what.to_string(), e.code().into());
    };
    let leader = leader.map_err(|e| keep("leader", &e)).ok();
    let stats = stats.map_err(|e| keep("stats", &e)).ok();
    let nodes = nodes.map_err(|e| keep("nodes", &e)).ok();
    serde_json::json!({
        "type": "snapshot",
        "at": at,
        "connected": true,
        "leader": leader.and_then(|r| r.leader),
        "stats": stats,
        "nodes": nodes.map(|l| l.nodes),
        "errors": errors,
    })
}

/// An event as one JSON line of `watch --json`: its subject and its body.
fn event_line(msg: &async_nats::Message) -> serde_json::Value {
    let body = serde_json::from_slice::<serde_json::Value>(&msg.payload)
        .unwrap_or_else(|_| String::from_utf8_lossy(&msg.payload).into());
    serde_json::json!({ "type": "event", "subject": msg.subject.as_str(), "event": body })
}

/// The screen while the connection to NATS is down: no stale node table, just
/// what is known.
fn disconnected(since: chrono::DateTime<chrono::Utc>, recent: &VecDeque<String>) -> String {
    format!(
        "\x1b[2J\x1b[H{}  DISCONNECTED from NATS since {} — reconnecting; Ctrl-C to quit\n\nlast events\n{}",
        chrono::Utc::now().format("%H:%M:%S"),
        since.format("%H:%M:%S"),
        events(recent)
    )
}

/// The recent events, newest first, one a line.
fn events(recent: &VecDeque<String>) -> String {
    if recent.is_empty() {
        return "  (none yet)".to_string();
    }
    recent
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe(payload: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<NodeEvent>(payload) {
        let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
        return format!(
            "{}  node {} {}{reason}",
            e.at.format("%H:%M:%S%.3f"),
            e.node_id,
            word(&e.event)
        );
    }
    if let Ok(e) = serde_json::from_slice::<AssignmentEvent>(payload) {
        let from = e
            .previous_node_id
            .map(|p| format!("{p} → "))
            .unwrap_or_default();
        let to = e.node_id.unwrap_or_else(|| "-".into());
        return format!(
            "{}  agent {} {} {from}{to} ({})",
            e.at.format("%H:%M:%S%.3f"),
            e.agent_name,
            e.event.as_str(),
            e.reason
        );
    }
    if let Ok(e) = serde_json::from_slice::<LeaderChanged>(payload) {
        let who = e
            .leader
            .map(|l| format!("{} (epoch {})", l.coordinator_id, l.epoch))
            .unwrap_or_else(|| "nobody".into());
        return format!("{}  leader is now {who}", e.at.format("%H:%M:%S%.3f"));
    }
    String::from_utf8_lossy(payload).into_owned()
}

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn screen(client: &ShoalClient, recent: &VecDeque<String>) -> String {
    let leader = match client.leader().await {
        Ok(r) => r.leader.map_or("none yet".to_string(), |l| {
            format!("{} (epoch {})", l.coordinator_id, l.epoch)
        }),
        Err(e) => format!("unknown ({})", e.code()),
    };
    let agents = match client.cluster_stats().await {
        Ok(s) if s.waiting_agents > 0 => format!(
            "agents: {} — {} WAITING for a node (`shoal assignments --status orphaned`)",
            s.total_assignments, s.waiting_agents
        ),
        Ok(s) => format!("agents: {} (all running)", s.total_assignments),
        Err(e) => format!("agents: unknown ({})", e.code()),
    };
    let nodes = match client.list_nodes(&ListNodesRequest::default()).await {
        Ok(list) => {
            let mut t = Table::new(vec!["NODE", "STATUS", "AGENTS", "CPU%", "LAST SEEN"]);
            for n in &list.nodes {
                t.row(vec![
                    n.id.clone(),
                    n.status.as_str().to_string(),
                    format!("{}/{}", n.active_agents, n.max_agents),
                    format!("{:.1}", n.cpu_usage),
                    n.last_seen.format("%H:%M:%S").to_string(),
                ]);
            }
            t.render()
        }
        Err(e) => format!("nodes unavailable: {e}"),
    };
    // Clear the screen and home the cursor, then draw.
    format!(
        "\x1b[2J\x1b[H{}  leader: {leader}\n{agents}\n\n{nodes}\n\nrecent events\n{}",
        chrono::Utc::now().format("%H:%M:%S"),
        events(recent)
    )
}
