//! shoal-coordinator: leader-elected assignment of agents to nodes.
//!
//! - [`lease`]: the leader lease (KV `shoal_leader`, CAS renewals, handoff);
//! - [`log`], [`append`], [`pipeline`], [`notifier`]: the fenced assignment log every
//!   replica tails and only the leader appends to, and what follows each append;
//! - [`state`], [`members`], [`failover`], [`constraints`], [`guard`],
//!   [`digest_check`]: pure decisions;
//! - [`members_feed`]: keeps [`members`] equal to the registry's bucket (I/O);
//! - [`leader`]: a leader's term, with [`writes`] (its requests), [`reconcile`] (its
//!   moves), [`grouped`] (placements following group rules) and [`node_watch`]
//!   (announces and heartbeats it answers with syncs), [`rebalance`] (its moves that
//!   even the cluster, planned by [`rebalance_plan`], set by [`rebalance_settings`]);
//! - [`handlers`]: the endpoints;
//! - [`history`], [`history_consumer`]: the Postgres ledger;
//! - [`metrics`]: what it counts, served as Prometheus metrics.

pub mod append;
pub mod changes;
pub mod commands;
pub mod compaction;
pub mod config;
pub mod constraints;
pub mod context;
pub mod digest_check;
pub mod error;
pub mod failover;
pub mod grouped;
pub mod guard;
pub mod handlers;
pub mod history;
pub mod history_consumer;
pub mod leader;
pub mod lease;
pub mod liveness;
pub mod log;
pub mod members;
pub mod members_feed;
pub mod metrics;
pub mod move_kind;
pub mod node_watch;
pub mod notifier;
pub mod picker;
pub mod pipeline;
pub mod rebalance;
pub mod rebalance_plan;
pub mod rebalance_settings;
pub mod reconcile;
pub mod record;
pub mod snapshot;
pub mod state;
pub mod term;
pub mod token_bucket;
pub mod writes;

#[cfg(test)]
mod term_tests;

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use shoal_protocol::{CONFIG_BUCKET, ServiceKind, ShoalClient};
use shoal_runtime::Endpoints;
use shoal_runtime::metrics::Metrics;
use shoal_runtime::retry::until_ok;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;
pub use error::Error;

use context::Ctx;
use history::HistoryStore;
use metrics::CoordinatorMetrics;
use picker::Picker;
use rebalance_settings::RebalanceConfig;

/// Runs the coordinator until `shutdown` is cancelled.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    cfg.validate()?;
    let background = shutdown.child_token();
    let mut metrics = Metrics::new(ServiceKind::Coordinator, &client);
    let counted = CoordinatorMetrics::register(&mut metrics, cfg.database_url.is_some());
    let opened = open(cfg, client, Picker::spawn, counted, &shutdown, &background).await?;
    let Some((ctx, lease_task)) = opened else {
        return Ok(());
    };
    metrics::register_leadership(&mut metrics, &ctx);
    let (me, lease) = (ctx.me.clone(), ctx.lease.clone());
    let sys = shoal_runtime::advisory::system_client(
        &ctx.cfg.sys,
        &ctx.cfg.common.nats,
        ServiceKind::Coordinator,
        &me,
    )
    .await
    .map_err(Error::SystemAccount)?;
    let service = shoal_runtime::start_service(&ctx.client, ServiceKind::Coordinator, &me).await?;
    let reads = TaskTracker::new();
    handlers::serve_reads(&ctx, &service, &shutdown, &reads).await?;
    Endpoints::new(&service, &ctx.subjects, &me, &reads)
        .serve_metrics(metrics, ctx.cfg.common.metrics_listen, &shutdown)
        .await?;
    let terms = tokio::spawn(term::run_terms(ctx.clone(), shutdown.clone()));
    reads.spawn(liveness::run(
        ctx.client.clone(),
        ctx.peers.clone(),
        ctx.lease.clone(),
        me.clone(),
        ctx.cfg.takeover_after,
        shutdown.clone(),
    ));
    match sys {
        Some(sys) => {
            reads.spawn(liveness::follow_advisories(
                sys,
                ctx.lease.clone(),
                me.clone(),
                shutdown.clone(),
            ));
        }
        None => info!("no system account credentials: a lost leader is noticed by probes alone"),
    }
    info!(instance_id = %me, "coordinator ready");

    shutdown.cancelled().await;
    // The lease goes first, so a follower starts its term while this one refuses
    // writes, finishes its appends (any that land after the next term began are
    // refused, and their clients told `not_leader`) and, once the follower serves,
    // lets go of the write subjects.
    lease.stop().await;
    let _ = terms.await;
    reads.close();
    reads.wait().await;
    background.cancel();
    // The lease task (and the picker's) ends once every handle to it is gone.
    drop(ctx);
    drop(lease);
    let _ = tokio::time::timeout(Duration::from_secs(1), lease_task).await;
    shoal_runtime::stop_service(service).await?;
    Ok(())
}

/// Opens the log, the buckets and the history, and starts what a replica runs
/// whether or not it leads: the log's tail, the membership feed, the lease task
/// (returned) and the picker (`picker`, given the client for the balancer). None
/// if `shutdown` came first; the tasks stop with `background`.
pub(crate) async fn open(
    cfg: Config,
    client: Client,
    picker: impl FnOnce(ShoalClient) -> Picker,
    metrics: CoordinatorMetrics,
    shutdown: &CancellationToken,
    background: &CancellationToken,
) -> Result<Option<(Arc<Ctx>, JoinHandle<()>)>, Error> {
    let me = cfg.common.instance_id()?;
    let subjects = cfg.common.subjects()?;
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(cfg.jetstream_timeout);

    // JetStream may still be starting (or recovering): keep trying.
    let Some(stream) = until_ok(shutdown, "opening the assignment log", || {
        log::open_stream(&js, &subjects, cfg.jetstream.kv_replicas)
    })
    .await
    else {
        return Ok(None);
    };
    let Some(snapshots) = until_ok(shutdown, "opening the snapshot bucket", || {
        snapshot::open_bucket(&js, cfg.jetstream.kv_replicas)
    })
    .await
    else {
        return Ok(None);
    };
    let compaction = if stream.cached_info().config.deny_purge {
        warn!(
            stream = shoal_protocol::LOG_STREAM,
            "the assignment log was created with deny_purge (by an older Shoal), which NATS cannot lift: it is not compacted"
        );
        false
    } else {
        !cfg.snapshot_interval.is_zero()
    };
    let Some(config) = until_ok(shutdown, "opening the config bucket", || {
        shoal_runtime::kv::open_or_create(&js, CONFIG_BUCKET, cfg.jetstream.kv_replicas)
    })
    .await
    else {
        return Ok(None);
    };
    let rebalance = RebalanceConfig::follow(config, background.clone());
    let Some(lease_kv) = until_ok(shutdown, "opening the lease bucket", || {
        lease::open_bucket(&js, cfg.lease_ttl, cfg.jetstream.kv_replicas)
    })
    .await
    else {
        return Ok(None);
    };

    let history = match &cfg.database_url {
        Some(url) => {
            let store = Arc::new(HistoryStore::new(url, metrics.postgres_errors.clone())?);
            history_consumer::spawn(
                store.clone(),
                stream.clone(),
                subjects.clone(),
                cfg.history_batch,
                &metrics,
                background.clone(),
            );
            Some(store)
        }
        None => {
            info!("no --database-url: assignment history is not written");
            None
        }
    };
    let replica = log::spawn_tail(
        stream.clone(),
        subjects.clone(),
        Some(snapshots.clone()),
        background.clone(),
    );
    let members = members_feed::spawn(
        js.clone(),
        client.clone(),
        subjects.clone(),
        background.clone(),
    );
    let (lease, lease_task) = lease::spawn(
        lease_kv,
        client.clone(),
        subjects.clone(),
        me.clone(),
        cfg.lease_ttl,
    );
    let peers = ShoalClient::new(client.clone(), subjects.clone())
        .with_timeout(cfg.peer_timeout)
        .with_retry_for(cfg.peer_timeout);
    let ctx = Ctx {
        cfg,
        me,
        client,
        js,
        subjects,
        picker: picker(peers.clone()),
        peers,
        stream,
        replica,
        members,
        rebalance,
        lease,
        history,
        snapshots,
        compaction,
        metrics: Arc::new(metrics),
    };
    Ok(Some((Arc::new(ctx), lease_task)))
}
