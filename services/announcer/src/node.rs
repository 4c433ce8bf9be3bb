//! The announcer of one real node: announce, heartbeats, agents, goodbye.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::connection::State;
use chrono::Utc;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shoal_protocol::{AgentNotice, Heartbeat, ServiceKind, Subjects, SyncRequest, Validate};
use shoal_runtime::metrics::Metrics;
use shoal_runtime::metrics::serve::serve_http;
use shoal_runtime::{ConfigError, NatsError};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::agents::{AgentSet, Applied};
use crate::metrics::{Sample, Sampler};
use crate::pace::{CHANGE_HEARTBEAT_EVERY, Pace, Pacer};
use crate::{Config, Error, Identity, identity, wire};

/// Host name and address are checked for changes this often.
const IDENTITY_CHECK: Duration = Duration::from_secs(30);
/// At most one warning per this period about failed publishes.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Node {
    client: Client,
    subjects: Subjects,
    identity: Identity,
    seq: u64,
    agents: AgentSet,
    last_sample: Sample,
    last_warning: Option<Instant>,
    counted: Counted,
}

/// What the announcer counts (`shoal_announcer_…`).
struct Counted {
    heartbeats: Counter,
    announces: Counter,
    agents: Gauge,
    nats_errors: Counter,
}

impl Counted {
    fn register(metrics: &mut Metrics) -> Counted {
        Counted {
            heartbeats: metrics.counter("heartbeats_sent", "Heartbeats this node published"),
            announces: metrics.counter("announces_sent", "Announces this node published"),
            agents: metrics.gauge("agents", "Agents the coordinator has told this node to run"),
            nats_errors: metrics.nats_errors(),
        }
    }
}

impl Node {
    async fn announce(&mut self, why: &str) {
        match wire::announce(&self.client, &self.subjects, &self.identity.announce()).await {
            Ok(()) => {
                self.counted.announces.inc();
                info!(node_id = %self.identity.id, reason = why, "node announced")
            }
            Err(e) => self.warn_publish(&e),
        }
    }

    async fn heartbeat(&mut self) {
        self.seq += 1;
        let s = self.last_sample;
        let hb = Heartbeat {
            id: self.identity.id.clone(),
            seq: self.seq,
            cpu_usage: s.cpu_usage,
            memory_usage: s.memory_usage,
            disk_usage: s.disk_usage,
            load_average: s.load_average,
            active_agents: self.agents.count(),
            uptime_s: s.uptime_s,
            sent_at: Utc::now(),
            agents_digest: Some(self.agents.digest()),
        };
        self.counted.agents.set(i64::from(hb.active_agents));
        match wire::heartbeat(&self.client, &self.subjects, &hb).await {
            Ok(()) => {
                self.counted.heartbeats.inc();
            }
            Err(e) => self.warn_publish(&e),
        }
    }

    fn warn_publish(&mut self, e: &Error) {
        self.counted.nats_errors.inc();
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY)
        {
            self.last_warning = Some(Instant::now());
            warn!(node_id = %self.identity.id, error = %e, "publish failed");
        }
    }

    fn on_agent_notice(&mut self, payload: &[u8]) -> bool {
        let notice = match shoal_protocol::decode::<AgentNotice>(payload) {
            Ok(notice) => notice,
            Err(e) => {
                warn!(node_id = %self.identity.id, error = %e, "agent notice refused");
                return false;
            }
        };
        let id = &self.identity.id;
        match self.agents.apply(id, &notice) {
            Ok(applied) => {
                match (&notice, applied) {
                    (AgentNotice::Start(c) | AgentNotice::Stop(c), _) => info!(
                        node_id = %id,
                        agent_name = %c.agent_name,
                        action = notice.action(),
                        active_agents = self.agents.count(),
                        "agent notice applied"
                    ),
                    (AgentNotice::Sync(s), Applied::Changed { started, stopped }) => info!(
                        node_id = %id,
                        epoch = s.epoch,
                        started,
                        stopped,
                        active_agents = self.agents.count(),
                        "agents synced with the coordinator"
                    ),
                    (AgentNotice::Sync(s), _) => debug!(
                        node_id = %id,
                        epoch = s.epoch,
                        part = s.part,
                        parts = s.parts,
                        active_agents = self.agents.count(),
                        "agent sync received"
                    ),
                }
                applied.changed()
            }
            Err(ignored) => {
                warn!(node_id = %id, action = notice.action(), reason = %ignored, "agent notice ignored");
                false
            }
        }
    }

    /// Host name or address changed since the last announce (only those not fixed by
    /// configuration are re-detected).
    fn refresh_identity(&mut self, cfg: &Config) -> bool {
        let hostname = cfg.hostname.clone().unwrap_or_else(shoal_runtime::hostname);
        let ip_address = cfg.ip_address.clone().unwrap_or_else(identity::detect_ip);
        let changed = hostname != self.identity.hostname || ip_address != self.identity.ip_address;
        self.identity.hostname = hostname;
        self.identity.ip_address = ip_address;
        changed
    }
}

pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    let subjects = cfg.common.subjects()?;
    let identity = cfg.identity();
    identity
        .announce()
        .validate()
        .map_err(|source| ConfigError::Refused {
            what: "this node's identity",
            source,
        })?;
    if cfg.heartbeat_interval.is_zero() {
        return Err(ConfigError::invalid("--heartbeat-interval must be more than zero").into());
    }
    let id = identity.id.clone();
    let service = shoal_runtime::start_service(&client, ServiceKind::Announcer, &id).await?;
    let mut metrics = Metrics::new(ServiceKind::Announcer, &client);
    let counted = Counted::register(&mut metrics);
    let tasks = TaskTracker::new();
    // Over HTTP only: NATS permissions may confine a node to its own subjects.
    if let Some(addr) = cfg.common.metrics_listen {
        serve_http(Arc::new(metrics), addr, &tasks, &shutdown).await?;
    }
    let mut sync = subscribe(&client, subjects.registry_sync()).await?;
    let mut agent_notices = subscribe(&client, subjects.node_agents(&id)).await?;

    let mut sampler = Sampler::new(cfg.disk_path.clone());
    let mut node = Node {
        client: client.clone(),
        subjects,
        identity,
        seq: 0,
        agents: AgentSet::default(),
        last_sample: Sample::default(),
        last_warning: None,
        counted,
    };
    node.announce("start").await;
    info!(node_id = %id, interval = ?cfg.heartbeat_interval, "announcer ready");

    let mut ticker = tokio::time::interval(cfg.heartbeat_interval);
    // After a pause (SIGSTOP, a stalled host) resume the rhythm instead of bursting.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut identity_checked = Instant::now();
    let mut change_pacer = Pacer::new(CHANGE_HEARTBEAT_EVERY);
    let mut was_connected = true;
    // Each connection the client makes is counted: a new one past the first means it
    // reconnected, even so quickly that no tick saw it disconnected (a connection the
    // server dropped while the link was down, noticed only once the link is back).
    // Notices sent meanwhile are lost: announcing again gets the node a sync. The
    // first connection, made before or after the start, is no reconnection: the start
    // announce was queued for it.
    let mut connections_seen = shoal_runtime::connections();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                if client.connection_state() != State::Connected {
                    // Buffered heartbeats would arrive late in a burst: skip them.
                    if was_connected {
                        warn!(node_id = %id, "nats unreachable, heartbeats paused");
                    }
                    was_connected = false;
                    continue;
                }
                let connections = shoal_runtime::connections();
                let reconnected = connections > connections_seen.max(1);
                was_connected = true;
                connections_seen = connections;
                if reconnected {
                    node.announce("reconnected").await;
                }
                if identity_checked.elapsed() >= IDENTITY_CHECK {
                    identity_checked = Instant::now();
                    if node.refresh_identity(&cfg) {
                        node.announce("identity changed").await;
                    }
                }
                node.last_sample = sampler.sample().await;
                node.heartbeat().await;
            }
            Some(message) = sync.next() => {
                match shoal_protocol::decode::<SyncRequest>(&message.payload) {
                    Ok(request) if wire::sync_wants(&request, &id) => node.announce("registry sync").await,
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "sync request refused"),
                }
            }
            Some(message) = agent_notices.next() => {
                // A changed agent count goes out soon (the registry and coordinator
                // judge capacity and agreement from it), at most once per
                // CHANGE_HEARTBEAT_EVERY: a burst of notices costs one heartbeat.
                if node.on_agent_notice(&message.payload) {
                    match change_pacer.changed(tokio::time::Instant::now()) {
                        Pace::Now => node.heartbeat().await,
                        Pace::Later => {}
                    }
                }
            }
            _ = change_pacer.due(), if change_pacer.is_pending() => {
                change_pacer.sent(tokio::time::Instant::now());
                node.heartbeat().await;
            }
        }
    }

    if let Err(e) = wire::leave(&client, &node.subjects, &id, "shutdown").await {
        warn!(node_id = %id, error = %e, "goodbye not sent");
    }
    if let Err(e) = client.flush().await {
        warn!(node_id = %id, error = %e, "goodbye not flushed");
    }
    info!(node_id = %id, "node left");
    tasks.close();
    tasks.wait().await;
    Ok(shoal_runtime::stop_service(service).await?)
}

pub(crate) async fn subscribe(
    client: &Client,
    subject: String,
) -> Result<async_nats::Subscriber, NatsError> {
    client
        .subscribe(subject.clone())
        .await
        .map_err(|source| NatsError::subscribe(subject, source))
}
