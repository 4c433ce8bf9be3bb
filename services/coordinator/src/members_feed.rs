//! Keeps [`Members`] up to date from the registry's KV bucket, and signals changes
//! (KV updates and the registry's node events) so the leader reconciles at once.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use shoal_protocol::{MEMBERS_BUCKET, Subjects};
use shoal_runtime::kv::{BucketEvent, decode_member, follow_bucket};
use shoal_runtime::retry::until_ok;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::members::Members;

#[derive(Clone)]
pub struct MembersFeed {
    view: Arc<RwLock<Members>>,
    changed: watch::Receiver<u64>,
    js: jetstream::Context,
}

impl MembersFeed {
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
            decode_member(id, &value)
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
) -> MembersFeed {
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
    MembersFeed {
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
    // The registry creates the bucket: wait for it.
    let Some(store) = until_ok(&shutdown, "opening the membership bucket", || {
        js.get_key_value(MEMBERS_BUCKET)
    })
    .await
    else {
        return;
    };
    follow_bucket(&store, &shutdown, |event| {
        let relevant = {
            let mut members = view.write().unwrap_or_else(|p| p.into_inner());
            match event {
                BucketEvent::Entry(entry) => match entry.operation {
                    kv::Operation::Put => decode_member(&entry.key, &entry.value)
                        .is_some_and(|node| members.upsert(node)),
                    kv::Operation::Delete | kv::Operation::Purge => members.remove(&entry.key),
                },
                BucketEvent::Loaded => {
                    debug!(nodes = members.len(), "membership loaded");
                    members.mark_loaded();
                    true
                }
            }
        };
        // Metrics snapshots change nothing the leader decides on: no wake-up.
        if relevant {
            changed.send_modify(|n| *n += 1);
        }
    })
    .await;
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
