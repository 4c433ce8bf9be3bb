//! What nodes publish: heartbeats (the hot path: decode, validate, update memory,
//! nothing else), announces and goodbyes. Bad messages are counted, logged at a
//! bounded rate and dropped.

use std::sync::Arc;
use std::time::Instant;

use async_nats::{Message, Subscriber};
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use shoal_protocol::partition::partition_of;
use shoal_protocol::{Announce, Heartbeat, Leave, NodeSubjectKind, ShoalError};
use shoal_runtime::RateLog;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::engine::Engine;
use crate::membership::HeartbeatOutcome;

/// Decodes a node message and checks that it names the node of its subject.
fn accept<T, F>(engine: &Engine, message: &Message, kind: NodeSubjectKind, id_of: F) -> Option<T>
where
    T: serde::de::DeserializeOwned + shoal_protocol::Validate,
    F: Fn(&T) -> &str,
{
    let subject = message.subject.as_str();
    let refuse = |why: &str| {
        engine.reject(subject, why);
        None
    };
    let Some((id, got)) = engine.subjects.parse_node_subject(subject) else {
        return refuse("not a node subject");
    };
    if got != kind {
        return refuse("unexpected node subject");
    }
    let value: T = match shoal_protocol::decode(&message.payload) {
        Ok(v) => v,
        Err(ShoalError { message, .. }) => return refuse(&message),
    };
    // The decode step checked the payload's id against the one id rule; the
    // subject's token must be that same id.
    if id_of(&value) != id {
        return refuse("payload id differs from the subject's");
    }
    Some(value)
}

/// Heartbeats from one subscription. With `partitions` above one, a heartbeat of a
/// node this replica does not judge is dropped: it arrives that way
/// only while partitions change hands, or when the nats-server does not map
/// heartbeats into the same number of partitions (logged).
pub async fn heartbeats(
    engine: Arc<Engine>,
    mut sub: Subscriber,
    partitions: u32,
    shutdown: CancellationToken,
) {
    let misrouted = RateLog::new(std::time::Duration::from_secs(30));
    let reader = engine.backlog.reader(Instant::now());
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // A queued message is read at once; only an empty queue is waited on, and
        // the reader says so (see crate::backlog).
        let message = match sub.next().now_or_never() {
            Some(m) => m,
            None => {
                reader.waiting();
                let m = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = sub.next() => m,
                };
                reader.woke(Instant::now());
                m
            }
        };
        let Some(message) = message else { return };
        if partitions > 1 {
            check_mapping(&engine, &message, partitions, &misrouted);
        }
        let Some(hb) =
            accept::<Heartbeat, _>(&engine, &message, NodeSubjectKind::Heartbeat, |h| &h.id)
        else {
            continue;
        };
        // Ownership is checked under the one lock the heartbeat takes anyway.
        let outcome = {
            let mut state = engine.lock();
            if partitions > 1 && !state.owns(&hb.id) {
                continue;
            }
            state.on_heartbeat(&hb, Instant::now(), Utc::now())
        };
        engine.metrics.heartbeats.inc();
        if outcome == HeartbeatOutcome::Kick {
            engine.kick(&hb.id);
        }
    }
}

/// Whether this replica judges the node a message comes from (true for a subject
/// that names none: [`accept`] refuses and counts it).
fn judged(engine: &Engine, message: &Message) -> bool {
    match engine.subjects.parse_node_subject(&message.subject) {
        Some((id, _)) => engine.lock().owns(id),
        None => true,
    }
}

/// Says (at a bounded rate) when the server did not map a heartbeat to its node's
/// partition: a partitioned replica then hears heartbeats it does not judge, and
/// misses some it does.
fn check_mapping(engine: &Engine, message: &Message, partitions: u32, misrouted: &RateLog) {
    let subject = message.subject.as_str();
    let Some((id, _)) = engine.subjects.parse_node_subject(subject) else {
        return;
    };
    let expected = partition_of(id, partitions);
    let mapped = subject
        .rsplit_once('.')
        .and_then(|(_, p)| p.parse::<u32>().ok());
    if mapped == Some(expected) {
        return;
    }
    engine.metrics.heartbeats_unmapped.inc();
    if let Some(suppressed) = misrouted.admit() {
        warn!(
            subject,
            expected_partition = expected,
            partitions,
            suppressed,
            "heartbeat not mapped to its partition: map the nats-server's heartbeats into --heartbeat-partitions partitions"
        );
    }
}

/// Announces and goodbyes: each updates memory, then the member is planned at once
/// (a join is written without waiting for the next tick). Those of nodes another
/// replica judges are left to it, undecoded: its write reaches this replica through
/// the bucket, and if it dies first, the node's heartbeats reach the next owner as
/// an unknown node's, which asks it to announce again.
pub async fn lifecycle(
    engine: Arc<Engine>,
    mut announces: Subscriber,
    mut leaves: Subscriber,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            m = announces.next() => {
                let Some(message) = m else { return };
                if !judged(&engine, &message) {
                    continue;
                }
                if let Some(a) = accept::<Announce, _>(&engine, &message, NodeSubjectKind::Announce, |a| &a.id) {
                    engine.metrics.announces.inc();
                    let id = a.id.clone();
                    engine.lock().on_announce(a, Instant::now(), Utc::now());
                    engine.kick(&id);
                }
            }
            m = leaves.next() => {
                let Some(message) = m else { return };
                if !judged(&engine, &message) {
                    continue;
                }
                if let Some(l) = accept::<Leave, _>(&engine, &message, NodeSubjectKind::Leave, |l| &l.id) {
                    engine.metrics.leaves.inc();
                    let id = l.id.clone();
                    if engine.lock().on_leave(l) {
                        engine.kick(&id);
                    }
                }
            }
        }
    }
}
