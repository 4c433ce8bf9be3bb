//! Shared setup for the coordinator's integration tests: real nats-server, real
//! coordinator processes, and membership records written in the registry's wire
//! format into `shoal_members` (or a real registry, where a test needs one).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use shoal_protocol::{
    AssignRequest, Assignment, ClientError, ErrorCode, LeaderReply, ListAssignmentsRequest,
    ListNodesRequest, MEMBERS_BUCKET, Node, NodeStatus, ShoalClient, Subjects,
};
use shoal_testkit::{ServiceProcess, binary, wait_for};

pub const LONG: Duration = Duration::from_secs(30);

/// A coordinator process with its instance id.
pub struct Coordinator {
    pub id: String,
    pub process: ServiceProcess,
}

/// Spawns a coordinator named `id` against `nats_url`.
pub fn coordinator(nats_url: &str, id: &str, extra: &[(&str, &str)]) -> Result<Coordinator> {
    let mut envs = vec![
        ("SHOAL_NATS_URL".to_string(), nats_url.to_string()),
        ("SHOAL_INSTANCE_ID".to_string(), id.to_string()),
        ("SHOAL_LOG_LEVEL".to_string(), "info".to_string()),
    ];
    envs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let process = ServiceProcess::spawn(id, &binary("shoal-coordinator")?, &[], &envs)?;
    Ok(Coordinator {
        id: id.to_string(),
        process,
    })
}

pub fn service(
    nats_url: &str,
    bin: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<ServiceProcess> {
    let mut envs = vec![
        ("SHOAL_NATS_URL".to_string(), nats_url.to_string()),
        ("SHOAL_INSTANCE_ID".to_string(), name.to_string()),
    ];
    envs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ServiceProcess::spawn(name, &binary(bin)?, &[], &envs)
}

/// A real registry, and a balancer on least_agents (whose picks a test can predict).
pub fn registry_and_balancer(nats_url: &str) -> Vec<ServiceProcess> {
    vec![
        service(nats_url, "shoal-registry", "registry", &[]).unwrap(),
        balancer(nats_url),
    ]
}

/// A balancer on least_agents.
pub fn balancer(nats_url: &str) -> ServiceProcess {
    service(
        nats_url,
        "shoal-balancer",
        "balancer",
        &[("SHOAL_BALANCER_STRATEGY", "least_agents")],
    )
    .unwrap()
}

/// An online node as the registry would write it.
pub fn node(id: &str, max_agents: u32) -> Node {
    Node {
        max_agents,
        manual: true,
        ..Node::example(id)
    }
}

/// The membership bucket, opened or created exactly as the services do.
pub async fn members(client: &async_nats::Client) -> Result<kv::Store> {
    let js = jetstream::new(client.clone());
    shoal_runtime::kv::open_or_create(&js, MEMBERS_BUCKET, 1)
        .await
        .map_err(anyhow::Error::msg)
}

pub async fn put_node(store: &kv::Store, node: &Node) -> Result<()> {
    store
        .put(&node.id, serde_json::to_vec(node)?.into())
        .await
        .context("writing a membership record")?;
    Ok(())
}

pub fn shoal(client: &async_nats::Client) -> ShoalClient {
    ShoalClient::new(client.clone(), Subjects::default())
        .with_timeout(Duration::from_secs(2))
        .with_retry_for(Duration::from_secs(10))
}

/// `leader.get` asked of one replica directly.
pub async fn leader_of(shoal: &ShoalClient, id: &str) -> Result<LeaderReply, ClientError> {
    shoal
        .clone()
        .with_retry_for(Duration::ZERO)
        .with_timeout(Duration::from_millis(500))
        .leader_of(id)
        .await
}

/// Waits until exactly one of `ids` says it is leader and every answering replica
/// names it; returns its id.
pub async fn wait_leader(shoal: &ShoalClient, ids: &[&str], deadline: Duration) -> Result<String> {
    wait_for("exactly one coordinator to lead", deadline, || async {
        let mut leaders = Vec::new();
        let mut named = Vec::new();
        for id in ids {
            if let Ok(reply) = leader_of(shoal, id).await {
                if reply.is_leader {
                    leaders.push(id.to_string());
                }
                named.push(reply.leader.map(|l| l.coordinator_id));
            }
        }
        (leaders.len() == 1
            && named
                .iter()
                .all(|n| n.as_deref() == Some(leaders[0].as_str())))
        .then(|| leaders.remove(0))
    })
    .await
}

/// Assigns until acknowledged or `deadline` ([`ShoalClient::assign_acknowledged`]).
pub async fn assign_acked(
    shoal: &ShoalClient,
    req: &AssignRequest,
    deadline: Duration,
) -> Result<Assignment> {
    shoal
        .assign_acknowledged(req, deadline)
        .await
        .with_context(|| format!("assign {} not acknowledged", req.agent_name))
}

/// A real announcer for node `id` (extra `SHOAL_…` settings in `extra`).
pub fn announcer(nats_url: &str, id: &str, max_agents: u32) -> ServiceProcess {
    announcer_with(nats_url, id, max_agents, &[])
}

pub fn announcer_with(
    nats_url: &str,
    id: &str,
    max_agents: u32,
    extra: &[(&str, &str)],
) -> ServiceProcess {
    let max = max_agents.to_string();
    let mut envs = vec![("SHOAL_NODE_ID", id), ("SHOAL_NODE_MAX_AGENTS", &max)];
    envs.extend_from_slice(extra);
    service(
        nats_url,
        "shoal-announcer",
        &format!("announcer-{id}"),
        &envs,
    )
    .unwrap()
}

/// Waits until the registry lists `n` nodes online.
pub async fn wait_online(shoal: &ShoalClient, n: usize) {
    wait_for("nodes online in the registry", LONG, || async {
        let list = shoal
            .list_nodes(&ListNodesRequest {
                status: Some(NodeStatus::Online),
                ..Default::default()
            })
            .await
            .ok()?;
        (list.count == n).then_some(())
    })
    .await
    .unwrap();
}

/// How many agents the coordinator has on `node` (`usize::MAX` if it cannot say).
pub async fn on_node(shoal: &ShoalClient, node: &str) -> usize {
    shoal
        .list_assignments(&ListAssignmentsRequest {
            node_id: Some(node.into()),
            ..Default::default()
        })
        .await
        .map(|l| l.count)
        .unwrap_or(usize::MAX)
}

pub fn pinned(agent: &str, node: &str) -> AssignRequest {
    AssignRequest {
        agent_name: agent.into(),
        node_id: Some(node.into()),
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        ..AssignRequest::default()
    }
}

/// Every record in the assignment log, decoded as the coordinators decode it and
/// shown as JSON, with its sequence.
pub async fn log_records(client: &async_nats::Client) -> Result<Vec<(u64, serde_json::Value)>> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(shoal_protocol::LOG_STREAM).await?;
    let last = stream.get_info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .context("reading the log")?
    {
        let m = m?;
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        let record = shoal_coordinator::record::LogRecord::decode(&m.payload)?;
        out.push((seq, serde_json::to_value(&record)?));
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// How many `assigned` records each agent has in the log.
pub fn assigned_counts(records: &[(u64, serde_json::Value)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, r) in records {
        if r["type"] == "change" && r["action"] == "assigned" {
            *counts
                .entry(r["agent_name"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    counts
}

/// What the writers of [`Writers`] got back.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub acked: usize,
    pub not_leader: usize,
    /// No reply at all: a request the leader dropped.
    pub timeouts: usize,
    pub other: Vec<String>,
}

/// Clients assigning back to back, without retries, so every request's fate shows.
/// A request unanswered for 5 s counts as dropped: far longer than a slow answer on
/// a loaded machine.
pub struct Writers {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Outcomes>>,
    acked: Arc<AtomicUsize>,
}

impl Writers {
    pub fn start(shoal: &shoal_protocol::ShoalClient, n: usize, node: &str) -> Writers {
        // Each set of writers names its own agents.
        static SETS: AtomicUsize = AtomicUsize::new(0);
        let set = SETS.fetch_add(1, Ordering::Relaxed);
        let stop = tokio_util::sync::CancellationToken::new();
        let acked = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|w| {
                let (stop, node, acked) = (stop.clone(), node.to_string(), acked.clone());
                let c = shoal
                    .clone()
                    .with_retry_for(Duration::ZERO)
                    .with_timeout(Duration::from_secs(5));
                tokio::spawn(async move {
                    let mut out = Outcomes::default();
                    let mut i = 0;
                    while !stop.is_cancelled() {
                        i += 1;
                        match c.assign(&pinned(&format!("s{set}-w{w}-{i}"), &node)).await {
                            Ok(_) => {
                                out.acked += 1;
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(ClientError::Timeout { .. }) => out.timeouts += 1,
                            Err(e) if e.service_code() == Some(ErrorCode::NotLeader) => {
                                out.not_leader += 1
                            }
                            // Between terms nobody serves the write subjects.
                            Err(ClientError::NoResponders { .. }) => {}
                            Err(e) => out.other.push(e.to_string()),
                        }
                    }
                    out
                })
            })
            .collect();
        Writers { stop, tasks, acked }
    }

    /// Waits for `n` more acknowledged writes than now.
    pub async fn wait_acked(&self, n: usize) {
        let target = self.acked.load(Ordering::Relaxed) + n;
        wait_for("writes to be acknowledged", LONG, || async {
            (self.acked.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await
        .unwrap();
    }

    pub async fn finish(self) -> Outcomes {
        self.stop.cancel();
        let mut all = Outcomes::default();
        for task in self.tasks {
            let out = task.await.unwrap();
            all.acked += out.acked;
            all.not_leader += out.not_leader;
            all.timeouts += out.timeouts;
            all.other.extend(out.other);
        }
        all
    }
}
