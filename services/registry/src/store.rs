//! The membership bucket: opening it, compare-and-set writes and re-reads.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use shoal_protocol::{MEMBERS_BUCKET, Node};
use shoal_runtime::kv::decode_member;
use shoal_runtime::{JetStreamContext, JetStreamError};

use crate::Error;
use crate::member::{Op, Outcome, Plan};

/// Opens `shoal_members` (creating it if it does not exist), retrying until JetStream
/// answers (it may still be starting).
pub async fn open_with_retry(
    js: &jetstream::Context,
    replicas: usize,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<kv::Store, Error> {
    shoal_runtime::retry::until_ok(shutdown, "opening the membership bucket", || {
        shoal_runtime::kv::open_or_create(js, MEMBERS_BUCKET, replicas)
    })
    .await
    .ok_or(Error::Stopped)
}

/// The current entry of `key`: `(revision, None)` if deleted, `None` if never written.
pub async fn read(
    store: &kv::Store,
    key: &str,
) -> Result<Option<(u64, Option<Node>)>, JetStreamError> {
    let entry = store
        .entry(key)
        .await
        .jetstream(format!("reading {key} in the membership bucket"))?;
    Ok(entry.map(|e| {
        let node = match e.operation {
            kv::Operation::Put => decode_member(key, &e.value),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        (e.revision, node)
    }))
}

pub enum CasError {
    /// The revision moved: someone else wrote first.
    Conflict,
    Other(JetStreamError),
}

/// Writes `node` under `key` if the key is still at `revision` (`None`: absent).
pub async fn put(
    store: &kv::Store,
    key: &str,
    node: &Node,
    revision: Option<u64>,
) -> Result<u64, CasError> {
    let value = serde_json::to_vec(node)
        .map(Bytes::from)
        .map_err(|e| CasError::Other(JetStreamError::new(format!("encoding node {key}"), e)))?;
    let other = |e: async_nats::Error| {
        CasError::Other(JetStreamError::new(
            format!("writing {key} in the membership bucket"),
            e,
        ))
    };
    match revision {
        None => store.create(key, value).await.map_err(|e| match e.kind() {
            kv::CreateErrorKind::AlreadyExists => CasError::Conflict,
            _ => other(e.into()),
        }),
        Some(revision) => store
            .update(key, value, revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => CasError::Conflict,
                _ => other(e.into()),
            }),
    }
}

/// Deletes `key` if it is still at `revision`.
pub async fn delete(store: &kv::Store, key: &str, revision: u64) -> Result<(), CasError> {
    store
        .delete_expect_revision(key, Some(revision))
        .await
        .map_err(|e| match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => CasError::Conflict,
            _ => CasError::Other(JetStreamError::new(
                format!("deleting {key} from the membership bucket"),
                e,
            )),
        })
}

/// Carries out a planned write; on a conflict, reads the entry that won.
pub async fn execute(store: &kv::Store, plan: &Plan) -> (Outcome, Option<JetStreamError>) {
    let result = match plan.op {
        Op::Create => put(store, &plan.id, &plan.node, None)
            .await
            .map(Outcome::Written),
        Op::Update(rev) => put(store, &plan.id, &plan.node, Some(rev))
            .await
            .map(Outcome::Written),
        Op::Delete(rev) => delete(store, &plan.id, rev)
            .await
            .map(|()| Outcome::Deleted),
    };
    match result {
        Ok(outcome) => (outcome, None),
        Err(CasError::Conflict) => match read(store, &plan.id).await {
            Ok(fresh) => (
                Outcome::Conflict(fresh.map(|(rev, node)| (rev, node.map(Box::new)))),
                None,
            ),
            Err(e) => (Outcome::Conflict(None), Some(e)),
        },
        Err(CasError::Other(e)) => (Outcome::Failed, Some(e)),
    }
}
