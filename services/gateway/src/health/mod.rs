//! `/api/cluster/health`: what the gateway can tell of the control plane, asked
//! afresh on every request — the replicas of every service (`$SRV.PING`, gathered
//! for a moment), the coordinator leader (`leader.get`), JetStream (the account's
//! info) and the history's lag (the history consumer) — against a memory of the
//! replicas seen before, kept up to date by a background round every second, so a
//! replica that crashed shows as down, not just absent.

mod jetstream;
mod replicas;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use shoal_announcer::metrics::{Sample, Sampler};
use shoal_protocol::{AssignmentStatus, ServiceKind, ShoalClient};
use tokio_util::sync::CancellationToken;

use crate::types::Leader;
use replicas::Memory;
use report::{Health, HealthStatus, ReplicaStatus};

/// The services health requires a live replica of.
pub const SERVICES: [ServiceKind; 3] = [
    ServiceKind::Registry,
    ServiceKind::Balancer,
    ServiceKind::Coordinator,
];

/// How often the background round pings every service and samples the host.
const ROUND_EVERY: Duration = Duration::from_secs(1);

/// How health is checked.
#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// How long a check waits for answers (pings, leader, JetStream).
    pub window: Duration,
    /// How long a replica that stopped answering is listed as down before it is
    /// forgotten.
    pub forget_after: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            window: Duration::from_millis(500),
            forget_after: Duration::from_secs(300),
        }
    }
}

pub struct HealthMonitor {
    client: ShoalClient,
    settings: HealthSettings,
    instance_id: String,
    hostname: String,
    memory: Mutex<Memory>,
    host: Mutex<Sample>,
}

impl HealthMonitor {
    pub fn new(client: ShoalClient, instance_id: String, settings: HealthSettings) -> Self {
        HealthMonitor {
            client: client
                .with_timeout(settings.window)
                .with_retry_for(Duration::ZERO),
            settings,
            instance_id,
            hostname: shoal_runtime::hostname(),
            memory: Mutex::new(Memory::default()),
            host: Mutex::new(Sample::default()),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding the lock leaves the memory as consistent as any
        // other moment: keep using it.
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pings every service and records who answered. With `full`, waits the whole
    /// window (to meet replicas not seen before); otherwise stops once every
    /// replica remembered as up has answered.
    async fn ping_all(&self, full: bool) -> BTreeMap<String, Vec<report::Replica>> {
        let nats = self.client.nats();
        let rounds = SERVICES.map(|service| {
            let expected = if full {
                Default::default()
            } else {
                self.memory().expected(service)
            };
            async move {
                let answered = replicas::ping(nats, service, &expected, self.settings.window).await;
                (service, answered)
            }
        });
        let answers = futures::future::join_all(rounds).await;
        let now = Utc::now();
        let mut memory = self.memory();
        answers
            .into_iter()
            .map(|(service, answered)| {
                let listed = memory.record(service, &answered, now, self.settings.forget_after);
                (service.token().to_string(), listed)
            })
            .collect()
    }

    /// Every second until `shutdown`: a full ping round (so replicas are known
    /// before anyone asks) and a sample of the host.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut sampler = Sampler::new("/".into());
        let mut ticker = tokio::time::interval(ROUND_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let (_, sample) = tokio::join!(self.ping_all(true), sampler.sample());
            *self
                .host
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = sample;
        }
    }

    /// A fresh check of everything.
    pub async fn check(&self) -> Health {
        let js = async_nats::jetstream::new(self.client.nats().clone());
        let window = self.settings.window;
        let (replicas, leader, stats, jetstream, history_lag_s) = tokio::join!(
            self.ping_all(false),
            self.client.leader(),
            self.client.cluster_stats(),
            jetstream::account(&js, window),
            jetstream::history_lag(&js, Utc::now(), window),
        );
        let mut problems = Vec::new();
        let mut degraded = false;
        let mut services = Vec::new();
        for (service, listed) in &replicas {
            if listed.iter().any(|r| r.status == ReplicaStatus::Up) {
                services.push(service.clone());
            } else {
                problems.push(format!("{service}: no live replica"));
            }
            for r in listed.iter().filter(|r| r.status == ReplicaStatus::Down) {
                degraded = true;
                problems.push(format!(
                    "{service}: replica {} is down (last seen {})",
                    r.instance_id,
                    r.last_seen
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ));
            }
        }
        let leader = match leader {
            Ok(reply) => {
                if reply.leader.is_none() {
                    problems.push("leader: no coordinator holds the leader lease".into());
                }
                reply.leader.map(Leader::from)
            }
            Err(e) => {
                problems.push(format!("leader: no coordinator answered: {e}"));
                None
            }
        };
        if let Some(error) = jetstream.error.as_deref() {
            problems.push(format!("jetstream: unreachable: {error}"));
        }
        let unhealthy = services.len() < SERVICES.len() || leader.is_none() || !jetstream.reachable;
        let status = if unhealthy {
            HealthStatus::Unhealthy
        } else if degraded {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        let host = *self
            .host
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Health {
            status,
            node_id: self.instance_id.clone(),
            hostname: self.hostname.clone(),
            services,
            cpu_percent: host.cpu_usage,
            memory_percent: host.memory_usage,
            active_tasks: stats.ok().map(|s| {
                s.agents_by_status
                    .get(&AssignmentStatus::Running)
                    .copied()
                    .unwrap_or(0) as u64
            }),
            version: shoal_runtime::VERSION.to_string(),
            replicas,
            leader,
            jetstream,
            history_lag_s,
            problems,
            checked_at: Utc::now(),
        }
    }
}
