//! The NATS side: feeds the [`View`] from the KV watches, heartbeats and assignment
//! events, and answers the four endpoints. Handlers return `Result<T, ShoalError>`;
//! `shoal_runtime::serve` encodes the reply once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use async_nats::{Client, Message};
use futures::StreamExt;
use shoal_protocol::{
    AssignmentEvents, AssignmentStatus, BalancerStats, CONFIG_BUCKET, Empty, Endpoint, Heartbeat,
    ListAssignmentsRequest, MEMBERS_BUCKET, SelectBatchReply, SelectBatchRequest, SelectOutcome,
    SelectReply, SelectRequest, ServiceKind, ShoalClient, ShoalError, Strategy, StrategyMessage,
    Subjects, decode,
};
use shoal_runtime::kv::{BucketEvent, decode_member, follow_bucket, open_or_create};
use shoal_runtime::metrics::{Metrics, timed};
use shoal_runtime::{Endpoints, NatsError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::view::View;
use crate::{Config, Error};
use shoal_protocol::STRATEGY_KEY;

pub(crate) struct Shared {
    view: Mutex<View>,
    /// Set once the first membership snapshot is in; until then `select` answers
    /// `unavailable` (retryable) rather than a misleading `no_capacity`.
    synced: AtomicBool,
    default_strategy: Strategy,
    metrics: crate::metrics::BalancerMetrics,
}

impl Shared {
    pub(crate) fn view(&self) -> MutexGuard<'_, View> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_strategy(&self, strategy: Strategy, why: &str) {
        if self.view().set_strategy(strategy) {
            info!(strategy = %strategy, source = why, "strategy changed");
        }
    }
}

pub(crate) async fn run(
    cfg: Config,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let instance_id = cfg.common.instance_id()?;
    let subjects = cfg.common.subjects()?;
    let mut metrics = Metrics::new(ServiceKind::Balancer, &client);
    let shared = Arc::new(Shared {
        view: Mutex::new(View::new(cfg.settings())),
        synced: AtomicBool::new(false),
        default_strategy: cfg.default_strategy,
        metrics: crate::metrics::BalancerMetrics::register(&mut metrics),
    });
    crate::metrics::register_view(&mut metrics, &shared);

    let js = jetstream::new(client.clone());
    let Some(members) =
        shoal_runtime::retry::until_ok(&shutdown, "opening the members bucket", || {
            open_or_create(&js, MEMBERS_BUCKET, cfg.jetstream.kv_replicas)
        })
        .await
    else {
        return Ok(());
    };
    let Some(config) =
        shoal_runtime::retry::until_ok(&shutdown, "opening the config bucket", || {
            open_or_create(&js, CONFIG_BUCKET, cfg.jetstream.kv_replicas)
        })
        .await
    else {
        return Ok(());
    };
    // Read the strategy before answering anything, so a restarted replica never
    // serves the default in place of the cluster's choice.
    match config.get(STRATEGY_KEY).await {
        Ok(Some(value)) => match decode::<StrategyMessage>(&value) {
            Ok(m) => shared.set_strategy(m.strategy, "config"),
            Err(e) => {
                warn!(error = %e.message, "stored strategy is not valid; keeping the default")
            }
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "strategy not read at start; the watch will deliver it"),
    }

    let subscribe = |subject: String| async {
        client
            .subscribe(subject.clone())
            .await
            .map_err(|source| NatsError::subscribe(subject, source))
    };
    // Heartbeats as published, and as mapped into partitions where the server does.
    let heartbeats = futures::stream::select(
        subscribe(subjects.node_heartbeat_all()).await?,
        subscribe(subjects.node_heartbeat_partitioned_all()).await?,
    );
    let placements = subscribe(subjects.coordinator_placements()).await?;

    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(watch_members(members, shared.clone(), shutdown.clone()));
    tasks.spawn(watch_strategy(
        config.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(follow_heartbeats(
        heartbeats,
        subjects.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(follow_assignments(
        placements,
        shared.clone(),
        shutdown.clone(),
    ));
    // A balancer on a nats-server cut off from the rest answers nobody: it moves.
    tasks.spawn(shoal_runtime::reach::keep_to_majority(
        client.clone(),
        shoal_protocol::kv_stream(MEMBERS_BUCKET),
        shutdown.clone(),
    ));
    tasks.spawn(load_assignments(
        ShoalClient::new(client.clone(), subjects.clone()).with_retry_for(Duration::ZERO),
        shared.clone(),
    ));
    let service =
        shoal_runtime::start_service(&client, ServiceKind::Balancer, &instance_id).await?;
    let endpoints = Endpoints::new(&service, &subjects, &instance_id, &tasks);
    let s = &shared;
    endpoints
        .serve(
            Endpoint::BalancerSelect,
            &shutdown,
            from_view(s, handle_select),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::BalancerSelectBatch,
            &shutdown,
            from_view(s, handle_select_batch),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::BalancerStrategyGet,
            &shutdown,
            from_view(s, handle_get),
        )
        .await?;
    endpoints
        .serve(Endpoint::BalancerStrategySet, &shutdown, {
            let (shared, config) = (shared.clone(), config.clone());
            move |m| {
                let (shared, config) = (shared.clone(), config.clone());
                async move { handle_set(&shared, &config, &m).await }
            }
        })
        .await?;
    endpoints
        .serve(
            Endpoint::BalancerStats,
            &shutdown,
            from_view(s, handle_stats),
        )
        .await?;
    endpoints
        .serve_metrics(metrics, cfg.common.metrics_listen, &shutdown)
        .await?;
    info!(instance_id = %instance_id, strategy = %shared.view().strategy(), "balancer ready");

    shutdown.cancelled().await;
    tasks.close();
    tasks.wait().await;
    shoal_runtime::stop_service(service).await?;
    Ok(())
}

/// A handler answered from the view.
fn from_view<T: 'static>(
    shared: &Arc<Shared>,
    handler: fn(&Shared, &Message) -> Result<T, ShoalError>,
) -> impl Fn(Message) -> std::future::Ready<Result<T, ShoalError>> + Send + 'static {
    let shared = shared.clone();
    move |m| std::future::ready(handler(&shared, &m))
}

fn handle_select(shared: &Shared, msg: &Message) -> Result<SelectReply, ShoalError> {
    timed(&shared.metrics.select_seconds[0], || select(shared, msg))
}

fn select(shared: &Shared, msg: &Message) -> Result<SelectReply, ShoalError> {
    let req: SelectRequest = decode(&msg.payload)?;
    if !shared.synced.load(Ordering::Acquire) {
        return Err(ShoalError::unavailable(
            "the balancer is still loading membership: retry shortly",
        ));
    }
    shared.view().select(&req, Instant::now())
}

fn handle_select_batch(shared: &Shared, msg: &Message) -> Result<SelectBatchReply, ShoalError> {
    timed(&shared.metrics.select_seconds[1], || {
        select_batch(shared, msg)
    })
}

/// Picks in order under one lock: each pick counts against its node for the next.
fn select_batch(shared: &Shared, msg: &Message) -> Result<SelectBatchReply, ShoalError> {
    // Selections carry labels, so a batch may pass the 64 KiB request limit; it is
    // bounded by its entry count and by the server's max payload instead.
    let req: SelectBatchRequest =
        shoal_protocol::decode::decode_with_limit(&msg.payload, usize::MAX)?;
    if !shared.synced.load(Ordering::Acquire) {
        return Err(ShoalError::unavailable(
            "the balancer is still loading membership: retry shortly",
        ));
    }
    let now = Instant::now();
    let mut view = shared.view();
    let results = req
        .selections
        .iter()
        .map(|selection| SelectOutcome::new(view.select(selection, now)))
        .collect();
    Ok(SelectBatchReply { results })
}

fn handle_get(shared: &Shared, msg: &Message) -> Result<StrategyMessage, ShoalError> {
    decode::<Empty>(&msg.payload)?;
    Ok(StrategyMessage {
        strategy: shared.view().strategy(),
    })
}

async fn handle_set(
    shared: &Shared,
    config: &kv::Store,
    msg: &Message,
) -> Result<StrategyMessage, ShoalError> {
    let req: StrategyMessage = decode(&msg.payload)?;
    let value = serde_json::to_vec(&req)
        .map_err(|e| ShoalError::internal(format!("strategy could not be encoded: {e}")))?;
    // Persist first: the watch then carries the choice to every replica, and it
    // survives restarts of the balancers and of nats-server.
    config.put(STRATEGY_KEY, value.into()).await.map_err(|e| {
        shared.metrics.nats_errors.inc();
        ShoalError::unavailable(format!("strategy not saved to {CONFIG_BUCKET}: {e}"))
    })?;
    shared.set_strategy(req.strategy, "strategy.set");
    Ok(req)
}

fn handle_stats(shared: &Shared, msg: &Message) -> Result<BalancerStats, ShoalError> {
    decode::<Empty>(&msg.payload)?;
    let mut view = shared.view();
    // Picks the coordinator never confirmed no longer count, selections or not.
    view.expire(Instant::now());
    Ok(view.stats())
}

/// Keeps the view in line with `shoal_members`; `select` answers once the bucket's
/// contents are in.
async fn watch_members(members: kv::Store, shared: Arc<Shared>, shutdown: CancellationToken) {
    follow_bucket(&members, &shutdown, |event| match event {
        BucketEvent::Entry(entry) => apply_member(&shared, entry),
        BucketEvent::Loaded => {
            shared.synced.store(true, Ordering::Release);
            let view = shared.view();
            info!(
                nodes = view.len(),
                eligible = view.eligible(),
                "membership loaded"
            );
        }
    })
    .await;
}

fn apply_member(shared: &Shared, entry: &kv::Entry) {
    match entry.operation {
        kv::Operation::Put => {
            if let Some(node) = decode_member(&entry.key, &entry.value) {
                shared.view().upsert(node, Instant::now());
            }
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            if shared.view().remove(&entry.key) {
                debug!(node_id = %entry.key, "node removed");
            }
        }
    }
}

/// Follows the cluster strategy in `shoal_config`.
async fn watch_strategy(config: kv::Store, shared: Arc<Shared>, shutdown: CancellationToken) {
    follow_bucket(&config, &shutdown, |event| {
        let BucketEvent::Entry(entry) = event else {
            return;
        };
        if entry.key != STRATEGY_KEY {
            return;
        }
        match entry.operation {
            kv::Operation::Put => match decode::<StrategyMessage>(&entry.value) {
                Ok(m) => shared.set_strategy(m.strategy, "config"),
                Err(e) => warn!(error = %e.message, "stored strategy is not valid; ignored"),
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                shared.set_strategy(shared.default_strategy, "config deleted")
            }
        }
    })
    .await;
}

async fn follow_heartbeats(
    mut heartbeats: impl futures::Stream<Item = async_nats::Message> + Unpin,
    subjects: Subjects,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = heartbeats.next() => match msg { Some(msg) => msg, None => return },
        };
        let Some((id, _)) = subjects.parse_node_subject(&msg.subject) else {
            continue;
        };
        match decode::<Heartbeat>(&msg.payload) {
            // A node speaks only for itself: its subject names it.
            Ok(hb) if hb.id == id => {
                shared.view().apply_heartbeat(&hb, Instant::now());
            }
            Ok(hb) => {
                debug!(subject = %msg.subject, node_id = %hb.id, "heartbeat for another node; ignored")
            }
            Err(e) => debug!(subject = %msg.subject, error = %e.message, "bad heartbeat; ignored"),
        }
    }
}

async fn follow_assignments(
    mut events: async_nats::Subscriber,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = events.next() => match msg { Some(msg) => msg, None => return },
        };
        match decode::<AssignmentEvents>(&msg.payload) {
            Ok(feed) => {
                let (mut view, now) = (shared.view(), Instant::now());
                for ev in &feed.events {
                    view.apply_assignment(ev, now);
                }
            }
            Err(e) => {
                debug!(subject = %msg.subject, error = %e.message, "bad assignment event; ignored")
            }
        }
    }
}

/// Seeds placements from the coordinator, if one answers; events keep them current
/// afterwards. Without a coordinator, heartbeats carry the agent counts.
async fn load_assignments(client: ShoalClient, shared: Arc<Shared>) {
    // Page by page: on a large cluster the whole list is more than one message.
    match client
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await
    {
        Ok(all) => {
            let placed = all
                .iter()
                .filter(|a| a.status != AssignmentStatus::Orphaned)
                .map(|a| (a.agent_name.as_str(), a.node_id.as_str()));
            shared.view().load_assignments(placed);
            info!(
                assignments = all.len(),
                "placements loaded from the coordinator"
            );
        }
        Err(e) => {
            info!(error = %e, "no placements from the coordinator yet; counting from heartbeats and events")
        }
    }
}
