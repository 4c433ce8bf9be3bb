//! shoal-registry: keeps cluster membership and node health.
//!
//! Every replica hears every announce and goodbye (plain subscriptions), and the
//! heartbeats of every node or, with `--heartbeat-partitions` above one, of its share
//! of the partitions ([`partitions`]); it keeps last-seen times in memory and judges
//! the nodes whose heartbeats it hears; membership lives in the KV bucket `shoal_members` (key = node id,
//! value = `shoal_protocol::Node`), written only on change — join, status change,
//! metadata or capacity change, and a metrics snapshot every `--metrics-snapshot` —
//! with compare-and-set on the revision, so when replicas detect the same transition
//! exactly one write wins and only its replica publishes the event. Requests are
//! answered from memory, loaded from the bucket before serving and kept equal to it
//! by a watch. See [`member`] for the status machine.

mod advisory;
mod backlog;
mod config;
mod engine;
mod handlers;
mod ingest;
pub mod member;
pub mod membership;
mod metrics;
pub mod model;
mod partitions;
mod store;

#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod pace_tests;
#[cfg(test)]
mod partition_tests;

use std::future::Ready;
use std::sync::Arc;

use async_nats::jetstream;
use async_nats::{Client, Message};
use shoal_protocol::{Endpoint, ServiceKind, ShoalError};
use shoal_runtime::metrics::{Metrics, MetricsError};
use shoal_runtime::{ConfigError, ConnectError, Endpoints, JetStreamError, NatsError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::Config;
use engine::Engine;
use membership::Membership;

/// Errors that stop the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("connecting to NATS in the system account: {0}")]
    SystemAccount(#[source] ConnectError),
    #[error("stopped before the membership bucket was read")]
    Stopped,
}

/// Runs the registry until `shutdown` is cancelled.
pub async fn run(cfg: Config, client: Client, shutdown: CancellationToken) -> Result<(), Error> {
    let th = cfg.thresholds()?;
    let instance_id = cfg.common.instance_id()?;
    let subjects = cfg.common.subjects()?;
    let js = jetstream::new(client.clone());
    let store = store::open_with_retry(&js, cfg.jetstream.kv_replicas, &shutdown).await?;

    let partitions = cfg.heartbeat_partitions;
    let replicas_bucket = if partitions > 1 {
        Some(partitions::open_bucket(&js, cfg.jetstream.kv_replicas).await?)
    } else {
        None
    };
    // Subscribed before the bucket is read, so nothing said meanwhile is lost. The
    // unmapped subject is heard whether or not heartbeats are partitioned: a server
    // without the mapping still delivers there. The partitions' subjects are heard
    // here when this replica judges them all, else as it owns them.
    let mut heartbeats = vec![subscribe(&client, subjects.node_heartbeat_all()).await?];
    if partitions == 1 {
        heartbeats.push(subscribe(&client, subjects.node_heartbeat_partitioned_all()).await?);
    }
    let announces = subscribe(&client, subjects.node_announce_all()).await?;
    let leaves = subscribe(&client, subjects.node_leave_all()).await?;

    let mut metrics = Metrics::new(ServiceKind::Registry, &client);
    let engine = Arc::new(Engine::new(
        if partitions > 1 {
            Membership::partitioned(th, partitions)
        } else {
            Membership::new(th)
        },
        store,
        client.clone(),
        subjects.clone(),
        metrics::RegistryMetrics::register(&mut metrics),
    ));
    metrics::register_membership(&mut metrics, &engine);
    let tasks = TaskTracker::new();
    // The bucket is read before serving: requests are answered from memory.
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    tasks.spawn(engine.clone().follow(loaded_tx, shutdown.clone()));
    tokio::select! {
        _ = shutdown.cancelled() => {
            tasks.close();
            tasks.wait().await;
            return Err(Error::Stopped);
        }
        _ = loaded_rx => {}
    }
    let loaded = engine.lock().count();
    info!(nodes = loaded, "membership loaded");

    let sys = shoal_runtime::advisory::system_client(
        &cfg.sys,
        &cfg.common.nats,
        ServiceKind::Registry,
        &instance_id,
    )
    .await
    .map_err(Error::SystemAccount)?;
    let sys = match sys {
        Some(sys) => Some(sys),
        None => {
            info!(
                "no system account credentials: node failures are detected from missed heartbeats alone"
            );
            None
        }
    };

    let service =
        shoal_runtime::start_service(&client, ServiceKind::Registry, &instance_id).await?;
    let endpoints = Endpoints::new(&service, &subjects, &instance_id, &tasks);
    let e = &engine;
    endpoints
        .serve(
            Endpoint::RegistryNodesList,
            &shutdown,
            from_memory(e, handlers::list),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::RegistryNodesGet,
            &shutdown,
            from_memory(e, handlers::get),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::RegistryStats,
            &shutdown,
            from_memory(e, handlers::stats),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::RegistryNodesRegister,
            &shutdown,
            writing(e, |e, m| async move { handlers::register(&e, &m).await }),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::RegistryNodesUnregister,
            &shutdown,
            writing(e, |e, m| async move { handlers::unregister(&e, &m).await }),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::RegistryNodesDrain,
            &shutdown,
            writing(e, |e, m| async move { handlers::drain(&e, &m).await }),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::RegistryNodesUndrain,
            &shutdown,
            writing(e, |e, m| async move { handlers::undrain(&e, &m).await }),
        )
        .await?;
    endpoints
        .serve_metrics(metrics, cfg.common.metrics_listen, &shutdown)
        .await?;

    for sub in heartbeats {
        tasks.spawn(ingest::heartbeats(
            engine.clone(),
            sub,
            partitions,
            shutdown.clone(),
        ));
    }
    match replicas_bucket {
        Some(bucket) => {
            tasks.spawn(partitions::share(
                engine.clone(),
                bucket,
                instance_id.clone(),
                partitions,
                tasks.clone(),
                shutdown.clone(),
            ));
        }
        None => {
            engine.metrics.partitions_owned.set(1);
        }
    }
    tasks.spawn(ingest::lifecycle(
        engine.clone(),
        announces,
        leaves,
        shutdown.clone(),
    ));
    tasks.spawn(engine.clone().tick(shutdown.clone()));
    // A registry on a nats-server cut off from the rest hears only its side: it moves.
    tasks.spawn(shoal_runtime::reach::keep_to_majority(
        client.clone(),
        shoal_protocol::kv_stream(shoal_protocol::MEMBERS_BUCKET),
        shutdown.clone(),
    ));
    if let Some(sys) = sys {
        tasks.spawn(advisory::follow(engine.clone(), sys, shutdown.clone()));
    }
    // A registry with a fresh view must not wait for nodes' next metadata change.
    engine.ask_to_announce(Vec::new()).await;
    info!(instance_id = %instance_id, nodes = loaded, "registry ready");

    shutdown.cancelled().await;
    tasks.close();
    tasks.wait().await;
    shoal_runtime::stop_service(service).await?;
    Ok(())
}

async fn subscribe(client: &Client, subject: String) -> Result<async_nats::Subscriber, NatsError> {
    client
        .subscribe(subject.clone())
        .await
        .map_err(|source| NatsError::subscribe(subject, source))
}

/// A handler answered from memory.
fn from_memory<T>(
    engine: &Arc<Engine>,
    handler: fn(&Engine, &Message) -> Result<T, ShoalError>,
) -> impl Fn(Message) -> Ready<Result<T, ShoalError>> + Send + 'static
where
    T: 'static,
{
    let engine = engine.clone();
    move |m| std::future::ready(handler(&engine, &m))
}

/// A handler that writes to the bucket.
fn writing<H, Fut>(engine: &Arc<Engine>, handler: H) -> impl Fn(Message) -> Fut + Send + 'static
where
    H: Fn(Arc<Engine>, Message) -> Fut + Send + 'static,
{
    let engine = engine.clone();
    move |m| handler(engine.clone(), m)
}
