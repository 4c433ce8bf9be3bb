//! Copies the assignment log into Postgres with a durable JetStream consumer: a
//! batch is inserted (idempotently) before its messages are acknowledged, so a
//! Postgres outage only delays history, and what arrives twice is written once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use shoal_protocol::Subjects;
use shoal_runtime::retry::{resume, until_ok};
use shoal_runtime::{JetStreamContext, JetStreamError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::history::{HistoryStore, Row};
use crate::metrics::{CoordinatorMetrics, HistoryProgress};
use crate::record::LogRecord;
use shoal_protocol::HISTORY_CONSUMER;

/// How long the consumer waits for more records to write together with the first.
const GATHER: Duration = Duration::from_millis(20);

pub fn spawn(
    store: Arc<HistoryStore>,
    stream: stream::Stream,
    subjects: Subjects,
    batch: usize,
    metrics: &CoordinatorMetrics,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (progress, nats_errors) = (metrics.history.clone(), metrics.nats_errors.clone());
    tokio::spawn(async move {
        if until_ok(&shutdown, "migrating the history database", || {
            store.migrate()
        })
        .await
        .is_none()
        {
            return;
        }
        resume(
            &shutdown,
            "copying the assignment log into postgres",
            || async {
                let consumed =
                    consume(&store, &stream, &subjects, batch, &progress, &shutdown).await;
                if consumed.is_err() {
                    nats_errors.inc();
                }
                consumed
            },
        )
        .await;
    })
}

async fn consume(
    store: &HistoryStore,
    stream: &stream::Stream,
    subjects: &Subjects,
    batch: usize,
    progress: &HistoryProgress,
    shutdown: &CancellationToken,
) -> Result<(), JetStreamError> {
    let config = consumer::pull::Config {
        durable_name: Some(HISTORY_CONSUMER.to_string()),
        description: Some("copies the assignment log into postgres".to_string()),
        filter_subject: subjects.coordinator_log(),
        // Every replica pulls from this consumer: an ack covering all before it
        // could acknowledge what another replica has not written yet.
        ack_policy: consumer::AckPolicy::Explicit,
        // What a crashed replica had taken but not written comes back after this:
        // the history of its last moments is at most this late.
        ack_wait: Duration::from_secs(10),
        max_ack_pending: 20_000,
        ..Default::default()
    };
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(HISTORY_CONSUMER, config)
        .await
        .jetstream("opening the history consumer")?;
    let mut stream = consumer
        .messages()
        .await
        .jetstream("reading the history consumer")?;
    while let Some(first) = stream.next().await {
        // Gather what arrives within a moment: one insert and one ack for many
        // records, at the price of history trailing the log by that moment.
        let mut messages = vec![first.jetstream("reading the history consumer")?];
        let until = tokio::time::Instant::now() + GATHER;
        while messages.len() < batch {
            match tokio::time::timeout_at(until, stream.next()).await {
                Ok(Some(message)) => {
                    messages.push(message.jetstream("reading the history consumer")?)
                }
                _ => break,
            }
        }
        let mut rows: Vec<Row> = Vec::with_capacity(messages.len());
        let mut oldest_ms = i64::MAX;
        // Undelivered after the last one taken, plus those taken.
        let mut behind = messages.len() as u64;
        for m in &messages {
            let Ok(info) = m.info() else { continue };
            oldest_ms = oldest_ms.min((info.published.unix_timestamp_nanos() / 1_000_000) as i64);
            behind = info.pending + messages.len() as u64;
            let log_seq = info.stream_sequence;
            match LogRecord::decode(&m.payload) {
                Ok(record) => rows.extend(record.into_changes().into_iter().enumerate().map(
                    |(i, change)| Row {
                        log_seq,
                        log_index: i as u32,
                        change,
                    },
                )),
                Err(e) => warn!(log_seq, error = %e, "unreadable log record not recorded"),
            }
        }
        progress.taken(oldest_ms.min(chrono::Utc::now().timestamp_millis()), behind);
        if until_ok(shutdown, "writing history", || store.insert(&rows))
            .await
            .is_none()
        {
            return Ok(());
        }
        // A lost ack means a redelivery, which inserts nothing.
        for m in &messages {
            if let Err(e) = m.ack().await {
                warn!(error = %e, "history ack not sent");
            }
        }
        progress.written(behind.saturating_sub(messages.len() as u64));
    }
    Err(JetStreamError::new(
        "reading the history consumer",
        "its messages ended",
    ))
}
