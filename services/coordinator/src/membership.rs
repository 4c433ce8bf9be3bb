//! Keeps [`Members`] up to date from the registry's KV bucket, and signals changes
//! (KV updates and the registry's node events) so the leader reconciles at once.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use shoal_protocol::{MEMBERS_BUCKET, Node, Subjects};
use shoal_runtime::{JetStreamContext, JetStreamError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::members::Members;

#[derive(Clone)]
pub struct Membership {
    view: Arc<RwLock<Members>>,
    changed: watch::Receiver<u64>,
    js: jetstream::Context,
}

impl Membership {
    pub fn read<T>(&self, f: impl FnOnce(&Members) -> T) -> T {
        f(&self.view.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads one node's record straight from the bucket into the view. The watch
    /// trails the registry's writes by a moment, so a node that has just joined may
    /// not be in the view yet when a request pins to it.
    /// Bounded: the leader's decision loop waits for it.
    pub async fn fetch(&self, id: &str) -> bool {
        let read = async {
            let store = self.js.get_key_value(MEMBERS_BUCKET).await.ok()?;
            let value = store.get(id).await.ok()??;
            serde_json::from_slice::<Node>(&value).ok()
        };
        let node = tokio::time::timeout(Duration::from_millis(500), read)
            .await
            .ok()
            .flatten();
        match node {
            Some(node) => {
                self.view
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .upsert(node);
                true
            }
            None => false,
        }
    }

    /// Bumped on every membership change that can matter to a placement or a move
    /// (not on metrics), and on every node event.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }
}

pub fn spawn(
    js: jetstream::Context,
    client: async_nats::Client,
    subjects: Subjects,
    shutdown: CancellationToken,
) -> Membership {
    let view = Arc::new(RwLock::new(Members::default()));
    let (tx, rx) = watch::channel(0u64);
    let tx = Arc::new(tx);
    tokio::spawn(watch_bucket(
        js.clone(),
        view.clone(),
        tx.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(watch_events(client, subjects, tx, shutdown));
    Membership {
        view,
        changed: rx,
        js,
    }
}

async fn watch_bucket(
    js: jetstream::Context,
    view: Arc<RwLock<Members>>,
    changed: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
) {
    let mut waiting_logged = false;
    while !shutdown.is_cancelled() {
        match js.get_key_value(MEMBERS_BUCKET).await {
            Ok(store) => {
                waiting_logged = false;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = follow(&store, &view, &changed) => if let Err(e) = r {
                        warn!(error = %e, "membership watch interrupted, watching again");
                    },
                }
            }
            Err(e) if !waiting_logged => {
                info!(bucket = MEMBERS_BUCKET, error = %e, "waiting for the membership bucket");
                waiting_logged = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn follow(
    store: &kv::Store,
    view: &RwLock<Members>,
    changed: &watch::Sender<u64>,
) -> Result<(), JetStreamError> {
    let info = store
        .stream
        .get_info()
        .await
        .jetstream("reading the membership bucket's size")?;
    let mut watch = store
        .watch_with_history(">")
        .await
        .jetstream("watching the membership bucket")?;
    if info.state.messages == 0 {
        view.write()
            .unwrap_or_else(|p| p.into_inner())
            .mark_loaded();
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.jetstream("following the membership bucket")?;
        let relevant = {
            let mut members = view.write().unwrap_or_else(|p| p.into_inner());
            let relevant = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<Node>(&entry.value) {
                    Ok(node) if node.id == entry.key => members.upsert(node),
                    Ok(node) => {
                        warn!(key = %entry.key, node_id = %node.id, "membership record names another node; ignored");
                        false
                    }
                    Err(e) => {
                        warn!(key = %entry.key, error = %e, "unreadable membership record");
                        false
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => members.remove(&entry.key),
            };
            if entry.delta == 0 && !members.is_loaded() {
                debug!(nodes = members.len(), "membership loaded");
                members.mark_loaded();
                true
            } else {
                relevant
            }
        };
        // Metrics snapshots change nothing the leader decides on: no wake-up.
        if relevant {
            changed.send_modify(|n| *n += 1);
        }
    }
    Ok(())
}

async fn watch_events(
    client: async_nats::Client,
    subjects: Subjects,
    changed: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
) {
    let mut events = match client.subscribe(subjects.registry_events_all()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot subscribe to registry events; relying on the membership bucket");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(_) => changed.send_modify(|n| *n += 1),
                None => return,
            },
        }
    }
}
