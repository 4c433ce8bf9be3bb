//! Many simulated nodes in one process, with the wire behaviour of the announcer:
//! announce at start and on a registry's sync request, a heartbeat per node every
//! interval with a sequence number, leave on a graceful stop, agent counts from
//! `<prefix>.node.<id>.agents`.
//!
//! One task ticks over all nodes: the nodes are spread over slots of about 10 ms, so
//! 10,000 nodes at 1 s cost 100 timer wake-ups a second, not 10,000 timers, and their
//! heartbeats arrive evenly rather than in one burst. A node's first turn is its
//! announce: the cluster starts as a fleet booting within one interval would, each
//! node's first heartbeat one interval after its announce, however many there are. Metrics are synthetic but valid:
//! by default each node random-walks its own ([`SimMetrics::Varied`]); with
//! [`SimMetrics::Equal`] every node reports the same fixed values, so how evenly work
//! spreads can be measured without the metrics tilting it. As on a real node, the
//! metrics are sampled once per interval: the heartbeat sent at once when the agent
//! count changes repeats the last sample. Agents never change a simulated node's
//! CPU or memory.
//!
//! ```no_run
//! # async fn demo(client: async_nats::Client) -> Result<(), shoal_announcer::Error> {
//! use shoal_announcer::sim::{SimConfig, SimulatedCluster};
//! let cluster = SimulatedCluster::start(
//!     client,
//!     shoal_protocol::Subjects::default(),
//!     SimConfig { count: 10_000, ..SimConfig::default() },
//! )
//! .await?;
//! cluster.kill(3); // stops heartbeating without a goodbye
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::{Client, Subject};
use chrono::Utc;
use futures::StreamExt;
use shoal_protocol::{AgentNotice, Heartbeat, NodeRole, Subjects, SyncRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::agents::AgentSet;
use crate::pace::{CHANGE_HEARTBEAT_EVERY, Pace, Pacer};
use crate::{Error, Identity, wire};
use shoal_runtime::{ConfigError, NatsError};

mod usage;

pub use usage::SimMetrics;
use usage::Usage;

/// How often paced change-triggered heartbeats are checked for being due.
const PACED_TICK: Duration = Duration::from_millis(10);

/// Heartbeats of all nodes are spread over slots this long.
const SLOT: Duration = Duration::from_millis(10);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub count: usize,
    /// Node ids are `<id_prefix>-<index>`, index from `first_index`.
    pub id_prefix: String,
    pub first_index: usize,
    pub interval: Duration,
    pub role: NodeRole,
    pub services: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub max_agents: u32,
    pub version: String,
    /// What the nodes report as their usage.
    pub metrics: SimMetrics,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            count: 10,
            id_prefix: "sim".into(),
            first_index: 0,
            interval: Duration::from_secs(1),
            role: NodeRole::Worker,
            services: vec!["wrapper".into()],
            labels: BTreeMap::new(),
            max_agents: 10,
            version: shoal_runtime::VERSION.into(),
            metrics: SimMetrics::default(),
        }
    }
}

/// Where a simulated node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimState {
    /// Heartbeating and answering sync requests.
    Running,
    /// Silent, as a SIGSTOPped process: resumes with the next sequence number.
    Paused,
    /// Silent with no goodbye, as after kill -9.
    Killed,
    /// Said goodbye.
    Left,
}

struct SimNode {
    identity: Identity,
    heartbeat_subject: Subject,
    state: SimState,
    /// False until the node's first turn in the heartbeat loop has announced it.
    announced: bool,
    seq: u64,
    agents: AgentSet,
    usage: Usage,
    pacer: Pacer,
}

impl SimNode {
    /// A heartbeat with the last sampled metrics.
    fn heartbeat(&mut self) -> Heartbeat {
        self.seq += 1;
        let uptime = Utc::now() - self.identity.started_at;
        let u = &self.usage;
        Heartbeat {
            id: self.identity.id.clone(),
            seq: self.seq,
            cpu_usage: u.cpu.value,
            memory_usage: u.memory.value,
            disk_usage: u.disk.value,
            load_average: u.load.value,
            active_agents: self.agents.count(),
            uptime_s: u64::try_from(uptime.num_seconds()).unwrap_or(0),
            sent_at: Utc::now(),
            agents_digest: Some(self.agents.digest()),
        }
    }

    /// A heartbeat ready to publish (its subject and bytes).
    fn encoded_heartbeat(&mut self) -> Option<(Subject, bytes::Bytes)> {
        match wire::encode_heartbeat(&self.heartbeat()) {
            Ok(payload) => Some((self.heartbeat_subject.clone(), payload)),
            Err(e) => {
                warn!(node_id = %self.identity.id, error = %e, "simulated heartbeat not sent");
                None
            }
        }
    }
}

struct Shared {
    client: Client,
    subjects: Subjects,
    nodes: Mutex<Vec<SimNode>>,
    index: HashMap<String, usize>,
    /// Nodes with a change-triggered heartbeat due (see [`crate::pace`]).
    paced: Mutex<Vec<usize>>,
}

impl Shared {
    fn paced(&self) -> MutexGuard<'_, Vec<usize>> {
        self.paced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nodes(&self) -> MutexGuard<'_, Vec<SimNode>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn announce_where(&self, wanted: impl Fn(usize, &SimNode) -> bool) {
        let announces: Vec<_> = self
            .nodes()
            .iter()
            .enumerate()
            .filter(|(i, n)| n.state == SimState::Running && wanted(*i, n))
            .map(|(_, n)| n.identity.announce())
            .collect();
        for a in announces {
            if let Err(e) = wire::announce(&self.client, &self.subjects, &a).await {
                warn!(node_id = %a.id, error = %e, "simulated announce failed");
            }
        }
    }
}

/// Simulated nodes sharing one NATS connection and one ticking task.
pub struct SimulatedCluster {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SimulatedCluster {
    /// Subscribes to sync requests and agent notices, and starts the loop that
    /// announces every node within the first interval and then heartbeats.
    pub async fn start(
        client: Client,
        subjects: Subjects,
        cfg: SimConfig,
    ) -> Result<SimulatedCluster, Error> {
        if cfg.interval.is_zero() {
            return Err(ConfigError::invalid(
                "simulated heartbeat interval must be more than zero",
            )
            .into());
        }
        if let SimMetrics::Equal { cpu, memory } = cfg.metrics
            && ![cpu, memory]
                .iter()
                .all(|v| v.is_finite() && (0.0..=100.0).contains(v))
        {
            return Err(ConfigError::invalid(format!(
                "simulated cpu {cpu} and memory {memory} must be percentages from 0 to 100"
            ))
            .into());
        }
        let started_at = Utc::now();
        let mut rng = rand::rng();
        let nodes: Vec<SimNode> = (0..cfg.count)
            .map(|i| {
                let id = format!("{}-{}", cfg.id_prefix, cfg.first_index + i);
                SimNode {
                    heartbeat_subject: Subject::from(subjects.node_heartbeat(&id)),
                    identity: Identity {
                        hostname: format!("{id}.sim"),
                        ip_address: format!(
                            "10.{}.{}.{}",
                            (i >> 16) & 255,
                            (i >> 8) & 255,
                            i & 255
                        ),
                        id,
                        port: 8151,
                        role: cfg.role,
                        services: cfg.services.clone(),
                        labels: cfg.labels.clone(),
                        max_agents: cfg.max_agents,
                        version: cfg.version.clone(),
                        features: Vec::new(),
                        started_at,
                    },
                    state: SimState::Running,
                    announced: false,
                    seq: 0,
                    agents: AgentSet::default(),
                    usage: Usage::new(cfg.metrics, &mut rng),
                    pacer: Pacer::new(CHANGE_HEARTBEAT_EVERY),
                }
            })
            .collect();
        for n in &nodes {
            use shoal_protocol::Validate;
            n.identity
                .announce()
                .validate()
                .map_err(|source| ConfigError::Refused {
                    what: "a simulated node's identity",
                    source,
                })?;
        }
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.identity.id.clone(), i))
            .collect();
        let shared = Arc::new(Shared {
            client: client.clone(),
            subjects: subjects.clone(),
            nodes: Mutex::new(nodes),
            index,
            paced: Mutex::new(Vec::new()),
        });
        let sync = crate::node::subscribe(&client, subjects.registry_sync()).await?;
        let notices = crate::node::subscribe(&client, subjects.node_agents("*")).await?;
        let cancel = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(sync_loop(shared.clone(), sync, cancel.clone())),
            tokio::spawn(agents_loop(shared.clone(), notices, cancel.clone())),
            tokio::spawn(paced_loop(shared.clone(), cancel.clone())),
        ];
        let mut cluster = SimulatedCluster {
            shared,
            cancel,
            tasks,
        };
        cluster.tasks.push(tokio::spawn(heartbeat_loop(
            cluster.shared.clone(),
            cfg.interval,
            cluster.cancel.clone(),
        )));
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.shared.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> String {
        self.shared.nodes()[i].identity.id.clone()
    }

    pub fn ids(&self) -> Vec<String> {
        self.shared
            .nodes()
            .iter()
            .map(|n| n.identity.id.clone())
            .collect()
    }

    pub fn state(&self, i: usize) -> SimState {
        self.shared.nodes()[i].state
    }

    /// Agents node `i` has been told to run.
    pub fn active_agents(&self, i: usize) -> u32 {
        self.shared.nodes()[i].agents.count()
    }

    /// The names of the agents node `i` runs.
    pub fn agents(&self, i: usize) -> Vec<String> {
        self.shared.nodes()[i]
            .agents
            .names()
            .map(str::to_string)
            .collect()
    }

    /// Node `i` stops heartbeating without a goodbye (kill -9).
    pub fn kill(&self, i: usize) {
        self.shared.nodes()[i].state = SimState::Killed;
    }

    /// Node `i` goes silent (SIGSTOP) until [`Self::resume`].
    pub fn pause(&self, i: usize) {
        let mut nodes = self.shared.nodes();
        if nodes[i].state == SimState::Running {
            nodes[i].state = SimState::Paused;
        }
    }

    pub fn resume(&self, i: usize) {
        let mut nodes = self.shared.nodes();
        if nodes[i].state == SimState::Paused {
            nodes[i].state = SimState::Running;
        }
    }

    /// Node `i` says goodbye and goes silent (a graceful stop).
    pub async fn stop(&self, i: usize) -> Result<(), Error> {
        let id = {
            let mut nodes = self.shared.nodes();
            nodes[i].state = SimState::Left;
            nodes[i].identity.id.clone()
        };
        wire::leave(&self.shared.client, &self.shared.subjects, &id, "shutdown").await
    }

    /// Node `i` starts again as a new process would: new start time, sequence from 1,
    /// no agents, announced at once.
    pub async fn restart(&self, i: usize) -> Result<(), Error> {
        let announce = {
            let mut nodes = self.shared.nodes();
            let node = &mut nodes[i];
            node.state = SimState::Running;
            node.announced = true;
            node.seq = 0;
            node.agents = AgentSet::default();
            node.identity.started_at = Utc::now();
            node.identity.announce()
        };
        wire::announce(&self.shared.client, &self.shared.subjects, &announce).await
    }

    /// Every running node says goodbye; the cluster stops.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.cancel.cancel();
        let running: Vec<String> = self
            .shared
            .nodes()
            .iter()
            .filter(|n| n.state == SimState::Running)
            .map(|n| n.identity.id.clone())
            .collect();
        for id in running {
            wire::leave(&self.shared.client, &self.shared.subjects, &id, "shutdown").await?;
        }
        self.shared
            .client
            .flush()
            .await
            .map_err(|e| NatsError::Flush(e).into())
    }
}

impl Drop for SimulatedCluster {
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, interval: Duration, cancel: CancellationToken) {
    let count = shared.index.len().max(1);
    let slots =
        u32::try_from((interval.as_nanos() / SLOT.as_nanos()).clamp(1, count as u128)).unwrap_or(1);
    let mut ticker = tokio::time::interval(interval / slots);
    let mut slot: u32 = 0;
    let mut batch = Vec::new();
    // As the announcer does: a new connection means notices may have been lost.
    let mut connection = shared.client.server_info().client_id;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now_connection = shared.client.server_info().client_id;
        if now_connection != connection {
            connection = now_connection;
            shared.announce_where(|_, _| true).await;
        }
        {
            let mut rng = rand::rng();
            let mut nodes = shared.nodes();
            for node in nodes
                .iter_mut()
                .skip(slot as usize)
                .step_by(slots as usize)
                .filter(|n| n.state == SimState::Running)
            {
                if !node.announced {
                    node.announced = true;
                    let announce = node.identity.announce();
                    match wire::encode_announce(&announce) {
                        Ok(payload) => batch.push((
                            Subject::from(shared.subjects.node_announce(&announce.id)),
                            payload,
                        )),
                        Err(e) => {
                            warn!(node_id = %announce.id, error = %e, "simulated announce not sent")
                        }
                    }
                    continue;
                }
                node.usage.step(&mut rng);
                match wire::encode_heartbeat(&node.heartbeat()) {
                    Ok(payload) => batch.push((node.heartbeat_subject.clone(), payload)),
                    Err(e) => {
                        warn!(node_id = %node.identity.id, error = %e, "simulated heartbeat not sent")
                    }
                }
            }
        }
        for (subject, payload) in batch.drain(..) {
            if let Err(e) = shared.client.publish(subject, payload).await {
                debug!(error = %e, "simulated heartbeat not published");
            }
        }
        slot = (slot + 1) % slots;
    }
}

async fn sync_loop(
    shared: Arc<Shared>,
    mut sync: async_nats::Subscriber,
    cancel: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => return,
            message = sync.next() => match message { Some(m) => m, None => return },
        };
        match shoal_protocol::decode::<SyncRequest>(&message.payload) {
            Ok(request) => {
                shared
                    .announce_where(|_, n| wire::sync_wants(&request, &n.identity.id))
                    .await
            }
            Err(e) => debug!(error = %e, "sync request refused"),
        }
    }
}

/// Sends the change-triggered heartbeats that have come due.
async fn paced_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PACED_TICK);
    let mut due = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        {
            let mut paced = shared.paced();
            if paced.is_empty() {
                continue;
            }
            let mut nodes = shared.nodes();
            paced.retain(|&i| {
                let node = &mut nodes[i];
                if node.pacer.due_at().is_some_and(|at| at > now) {
                    return true;
                }
                node.pacer.sent(now);
                if node.state == SimState::Running
                    && let Some(hb) = node.encoded_heartbeat()
                {
                    due.push(hb);
                }
                false
            });
        }
        for (subject, payload) in due.drain(..) {
            if let Err(e) = shared.client.publish(subject, payload).await {
                debug!(error = %e, "simulated heartbeat not published");
            }
        }
    }
}

async fn agents_loop(
    shared: Arc<Shared>,
    mut notices: async_nats::Subscriber,
    cancel: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => return,
            message = notices.next() => match message { Some(m) => m, None => return },
        };
        let Some((id, _)) = shared.subjects.parse_node_subject(&message.subject) else {
            continue;
        };
        let Some(&i) = shared.index.get(id) else {
            continue;
        };
        let notice = match shoal_protocol::decode::<AgentNotice>(&message.payload) {
            Ok(notice) => notice,
            Err(e) => {
                warn!(node_id = %id, error = %e, "agent notice refused");
                continue;
            }
        };
        // As the announcer does, a changed agent count goes out in a heartbeat soon:
        // at once, or with the node's next paced heartbeat.
        // (The paced list is taken only after the nodes are let go: the paced loop
        // takes them in the other order.)
        let mut newly_paced = false;
        let heartbeat = {
            let mut nodes = shared.nodes();
            let node = &mut nodes[i];
            if matches!(node.state, SimState::Killed | SimState::Left) {
                continue;
            }
            match node.agents.apply(id, &notice) {
                Ok(applied) if applied.changed() && node.state == SimState::Running => {
                    let was_pending = node.pacer.is_pending();
                    match node.pacer.changed(tokio::time::Instant::now()) {
                        Pace::Now => node.encoded_heartbeat(),
                        Pace::Later => {
                            newly_paced = !was_pending;
                            None
                        }
                    }
                }
                Ok(_) => None,
                Err(ignored) => {
                    warn!(node_id = %id, reason = %ignored, "agent notice ignored");
                    None
                }
            }
        };
        if newly_paced {
            shared.paced().push(i);
        }
        if let Some((subject, payload)) = heartbeat
            && let Err(e) = shared.client.publish(subject, payload).await
        {
            debug!(error = %e, "simulated heartbeat not published");
        }
    }
}
