//! The replica's shared state and the I/O around it: carrying out planned writes
//! (compare-and-set), publishing the events of the writes that won, the tick that
//! drives time-based transitions, and following the bucket.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::connection::State;
use async_nats::jetstream::{self, kv};
use chrono::Utc;
use shoal_protocol::{Node, NodeEvent, NodeStatus, ShoalError, Subjects, SyncRequest};
use shoal_runtime::kv::{BucketEvent, decode_member};
use shoal_runtime::{JetStreamError, RateLog};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backlog::Backlog;
use crate::member::{Change, Outcome, Plan};
use crate::membership::Membership;
use crate::metrics::RegistryMetrics;
use crate::store::{self, CasError};

/// Bucket writes in flight at once (a burst of joins queues behind these).
const MAX_WRITES_IN_FLIGHT: usize = 256;
/// Ids per sync request, well under any payload limit.
const SYNC_BATCH: usize = 500;
/// Attempts of a request's compare-and-set before giving up.
const REQUEST_ATTEMPTS: usize = 8;

pub struct Engine {
    state: Mutex<Membership>,
    pub store: kv::Store,
    /// For the reachability probe, on the members bucket's stream.
    js: jetstream::Context,
    stream: String,
    pub client: Client,
    pub subjects: Subjects,
    permits: Semaphore,
    pub metrics: RegistryMetrics,
    reject_log: RateLog,
    write_log: RateLog,
    drop_log: RateLog,
    /// How far behind the heartbeat readers are.
    pub backlog: Backlog,
    backlog_log: RateLog,
}

impl Engine {
    pub fn new(
        membership: Membership,
        store: kv::Store,
        client: Client,
        subjects: Subjects,
        metrics: RegistryMetrics,
    ) -> Engine {
        Engine {
            state: Mutex::new(membership),
            store,
            js: jetstream::new(client.clone()),
            stream: shoal_protocol::kv_stream(shoal_protocol::MEMBERS_BUCKET),
            client,
            subjects,
            permits: Semaphore::new(MAX_WRITES_IN_FLIGHT),
            metrics,
            reject_log: RateLog::new(Duration::from_secs(5)),
            write_log: RateLog::new(Duration::from_secs(5)),
            drop_log: RateLog::new(Duration::from_secs(5)),
            backlog: Backlog::default(),
            backlog_log: RateLog::new(Duration::from_secs(5)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Membership> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn rejected(&self) -> u64 {
        self.metrics.rejected.get()
    }

    /// Counts a refused node message and logs it at a bounded rate.
    pub fn reject(&self, subject: &str, why: &str) {
        self.metrics.rejected.inc();
        if let Some(suppressed) = self.reject_log.admit() {
            warn!(
                subject,
                reason = why,
                suppressed,
                total = self.rejected(),
                "node message rejected"
            );
        }
    }

    /// Plans one member now and starts its write if one is due.
    pub fn kick(self: &Arc<Self>, id: &str) {
        let plan = self.lock().plan(id, Instant::now(), Utc::now());
        if let Some(plan) = plan {
            self.spawn_write(plan);
        }
    }

    fn spawn_write(self: &Arc<Self>, plan: Plan) {
        self.metrics.writes_pending.inc();
        let engine = self.clone();
        // Boxed: a write may kick the member again, which spawns another write.
        let write: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(async move { engine.write(plan).await });
        tokio::spawn(write);
    }

    async fn write(self: Arc<Self>, plan: Plan) {
        let (outcome, error) = {
            let _permit = self.permits.acquire().await;
            let started = Instant::now();
            let done = store::execute(&self.store, &plan).await;
            self.metrics
                .write_seconds
                .observe(started.elapsed().as_secs_f64());
            done
        };
        self.metrics.writes_pending.dec();
        if let Some(e) = error {
            self.metrics.nats_errors.inc();
            if let Some(suppressed) = self.write_log.admit() {
                warn!(node_id = %plan.id, error = %e, suppressed, "membership write failed, will retry");
            }
        }
        let won = matches!(outcome, Outcome::Written(_) | Outcome::Deleted);
        if matches!(outcome, Outcome::Conflict(_)) {
            debug!(node_id = %plan.id, "another replica wrote first");
        }
        let (again, heard_at) = {
            let mut state = self.lock();
            (
                state.finish(&plan, outcome, Instant::now()),
                state.heard_at(&plan.id),
            )
        };
        if won && let Some(change) = &plan.change {
            // Only the replica whose write won counts a verdict: each once.
            if let Some(heard_at) = heard_at {
                self.metrics.detected(change.kind, heard_at.elapsed());
            }
            let node = (change.kind != shoal_protocol::NodeEventKind::Pruned).then_some(&plan.node);
            self.publish_event(&plan.id, change, plan.node.status, node)
                .await;
        }
        if again {
            self.kick(&plan.id);
        }
    }

    /// Publishes `shoal.registry.events.<id>`; only the replica whose write won does.
    pub async fn publish_event(
        &self,
        id: &str,
        change: &Change,
        status: NodeStatus,
        node: Option<&Node>,
    ) {
        let event = NodeEvent {
            event: change.kind,
            node_id: id.to_string(),
            status,
            previous_status: change.previous,
            reason: change.reason.clone(),
            node: node.cloned(),
            at: Utc::now(),
        };
        info!(
            node_id = %id,
            event = ?change.kind,
            status = status.as_str(),
            previous = change.previous.map(NodeStatus::as_str),
            reason = change.reason.as_deref().unwrap_or(""),
            "node event"
        );
        let payload = match serde_json::to_vec(&event) {
            Ok(p) => p,
            Err(e) => {
                warn!(node_id = %id, error = %e, "event not encoded");
                return;
            }
        };
        if let Err(e) = self
            .client
            .publish(self.subjects.registry_event(id), payload.into())
            .await
        {
            self.metrics.nats_errors.inc();
            warn!(node_id = %id, error = %e, "event not published");
        }
    }

    /// A request's change to one node: `change` computes the new record from the
    /// current one (`None`: nothing to do), written with compare-and-set and retried
    /// on the fresh value when another writer got there first.
    pub async fn mutate<F>(&self, id: &str, change: F) -> Result<Node, ShoalError>
    where
        F: Fn(Option<&Node>) -> Result<Option<(Node, Change)>, ShoalError>,
    {
        for _ in 0..REQUEST_ATTEMPTS {
            let current = self.lock().stored(id);
            let (revision, node) = match current {
                Some(s) => (Some(s.revision), Some(s.node)),
                None => (None, None),
            };
            let Some((new, what)) = change(node.as_ref())? else {
                let served = self.lock().served(id);
                return served.or(node).ok_or_else(|| ShoalError::no_node(id));
            };
            match store::put(&self.store, id, &new, revision).await {
                Ok(rev) => {
                    self.lock().written(id, new.clone(), rev, Instant::now());
                    self.publish_event(id, &what, new.status, Some(&new)).await;
                    return Ok(self.lock().served(id).unwrap_or(new));
                }
                Err(CasError::Conflict) => self.reread(id).await?,
                Err(CasError::Other(e)) => return Err(self.unavailable(&e)),
            }
        }
        Err(ShoalError::unavailable(format!(
            "node {id:?} kept changing under this request; retry"
        )))
    }

    /// Deletes one node (manual unregistration), publishing `left`.
    pub async fn remove(&self, id: &str) -> Result<Node, ShoalError> {
        for _ in 0..REQUEST_ATTEMPTS {
            let stored = self
                .lock()
                .stored(id)
                .ok_or_else(|| ShoalError::no_node(id))?;
            match store::delete(&self.store, id, stored.revision).await {
                Ok(()) => {
                    self.lock().deleted(id, Instant::now());
                    let mut node = stored.node;
                    let previous = node.status;
                    crate::model::set_status(&mut node, NodeStatus::Left);
                    let change = Change {
                        kind: shoal_protocol::NodeEventKind::Left,
                        previous: Some(previous),
                        reason: Some("unregistered".into()),
                    };
                    self.publish_event(id, &change, NodeStatus::Left, Some(&node))
                        .await;
                    return Ok(node);
                }
                Err(CasError::Conflict) => self.reread(id).await?,
                Err(CasError::Other(e)) => return Err(self.unavailable(&e)),
            }
        }
        Err(ShoalError::unavailable(format!(
            "node {id:?} kept changing under this request; retry"
        )))
    }

    async fn reread(&self, id: &str) -> Result<(), ShoalError> {
        match store::read(&self.store, id).await {
            Ok(Some((revision, node))) => {
                self.lock().apply_entry(id, revision, node, Instant::now());
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// Keeps this replica's view equal to the bucket, so it sees the others' writes;
    /// `loaded` is told once the bucket's contents at the start are in.
    pub async fn follow(
        self: Arc<Self>,
        loaded: tokio::sync::oneshot::Sender<()>,
        shutdown: CancellationToken,
    ) {
        let mut loaded = Some(loaded);
        shoal_runtime::kv::follow_bucket(&self.store, &shutdown, |event| match event {
            BucketEvent::Entry(entry) => {
                let node = match entry.operation {
                    kv::Operation::Put => decode_member(&entry.key, &entry.value),
                    kv::Operation::Delete | kv::Operation::Purge => None,
                };
                self.lock()
                    .apply_entry(&entry.key, entry.revision, node, Instant::now());
            }
            BucketEvent::Loaded => {
                if let Some(loaded) = loaded.take() {
                    let _ = loaded.send(());
                }
            }
        })
        .await;
    }

    /// Drives time-based transitions, snapshots and retries, and asks unknown
    /// heartbeating nodes to announce.
    pub async fn tick(self: Arc<Self>, shutdown: CancellationToken) {
        let th = *self.lock().thresholds();
        let mut ticker = tokio::time::interval(th.tick());
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut outage = false;
        let mut last_unknown_sweep = Instant::now();
        let mut drops = shoal_runtime::slow_consumer_drops();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if self.client.connection_state() != State::Connected {
                if !outage {
                    warn!("nats unreachable: liveness judgement paused");
                }
                outage = true;
                continue;
            }
            if outage {
                // Connected again, but judged again only once the cluster's majority
                // answers through this connection.
                if self.reaches_majority().await.is_err() {
                    continue;
                }
                outage = false;
                // Nodes need time to reconnect too before their silence means anything.
                self.lock().grace_all(Instant::now() + th.suspect_after);
                info!("the cluster is reachable again: liveness judged afresh");
            }
            let now = Instant::now();
            // Messages this replica's client dropped may have been heartbeats: until it
            // hears without dropping, silence is no evidence. Counted afresh, it keeps
            // an overload from turning into false suspects, whose writes would load it
            // further.
            let dropped = shoal_runtime::slow_consumer_drops();
            if dropped > drops {
                if let Some(suppressed) = self.drop_log.admit() {
                    warn!(
                        dropped = dropped - drops,
                        suppressed, "nats messages dropped: silence is judged afresh"
                    );
                }
                drops = dropped;
                self.lock().grace_all(now);
            }
            // Heartbeats queued unread are not silence: judged once they are read.
            let behind = self.backlog.behind(now);
            if behind > th.interval / 2 {
                self.metrics.judgement_postponed.inc();
                if let Some(suppressed) = self.backlog_log.admit() {
                    warn!(
                        behind_ms = behind.as_millis() as u64,
                        suppressed, "heartbeats queued unread: judgement postponed"
                    );
                }
                continue;
            }
            // Before silence condemns anyone, this replica makes sure it is not the
            // one cut off: its link silently dead, or its server in the minority.
            let falling = self.lock().falling_silent(now);
            if falling > 0
                && let Err(e) = self.reaches_majority().await
            {
                warn!(error = %e, nodes = falling, "the cluster's majority is out of reach: liveness judgement paused");
                outage = true;
                continue;
            }
            // Unknown nodes are asked at most every 2 s each: looking for them once a
            // second (not every tick) spares a pass over every member.
            let look_for_unknown = now.duration_since(last_unknown_sweep) >= Duration::from_secs(1);
            let (plans, wanted) = {
                let mut state = self.lock();
                let wanted = if look_for_unknown {
                    last_unknown_sweep = now;
                    state.wanted_announces(now)
                } else {
                    Vec::new()
                };
                (state.due(now, Utc::now()), wanted)
            };
            for plan in plans {
                self.spawn_write(plan);
            }
            for ids in wanted.chunks(SYNC_BATCH) {
                self.ask_to_announce(ids.to_vec()).await;
            }
        }
    }

    /// Whether this replica reaches the cluster's majority through its server.
    async fn reaches_majority(&self) -> Result<(), shoal_runtime::reach::Unreached> {
        shoal_runtime::reach::probe(&self.js, &self.stream).await
    }

    /// Publishes a sync request: the named nodes (all, if none) announce again.
    pub async fn ask_to_announce(&self, ids: Vec<String>) {
        debug!(count = ids.len(), "asking nodes to announce");
        let payload = match serde_json::to_vec(&SyncRequest { ids }) {
            Ok(payload) => payload,
            Err(e) => {
                warn!(error = %e, "sync request not encoded");
                return;
            }
        };
        if let Err(e) = self
            .client
            .publish(self.subjects.registry_sync(), payload.into())
            .await
        {
            self.metrics.nats_errors.inc();
            warn!(error = %e, "sync request not published");
        }
    }

    /// A request's bucket operation failed: counted, and answered `unavailable`.
    fn unavailable(&self, e: &JetStreamError) -> ShoalError {
        self.metrics.nats_errors.inc();
        ShoalError::unavailable(format!("membership bucket: {e}"))
    }
}
