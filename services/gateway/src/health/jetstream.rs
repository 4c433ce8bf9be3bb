//! JetStream's part of health: whether the account answers, and how far the
//! assignment history in Postgres trails the coordinator's log (the age of the
//! oldest log record the history consumer has not acknowledged).

use std::time::Duration;

use async_nats::jetstream::Context;
use chrono::{DateTime, Utc};
use shoal_protocol::{HISTORY_CONSUMER, LOG_STREAM};

use super::report::JetStreamHealth;

/// Asks for the account's JetStream info within `timeout`.
pub async fn account(js: &Context, timeout: Duration) -> JetStreamHealth {
    match tokio::time::timeout(timeout, js.query_account()).await {
        Ok(Ok(account)) => JetStreamHealth {
            reachable: true,
            error: None,
            streams: Some(account.streams),
            storage_bytes: Some(account.storage),
            memory_bytes: Some(account.memory),
        },
        Ok(Err(e)) => unreachable(e.to_string()),
        Err(_) => unreachable(format!("no answer within {timeout:?}")),
    }
}

fn unreachable(error: String) -> JetStreamHealth {
    JetStreamHealth {
        reachable: false,
        error: Some(error),
        ..JetStreamHealth::default()
    }
}

/// Seconds the oldest log record not yet acknowledged by the history consumer has
/// waited: 0 when the history has everything, `None` when it cannot be told (no
/// log or consumer yet, JetStream not answering within `timeout`).
pub async fn history_lag(js: &Context, now: DateTime<Utc>, timeout: Duration) -> Option<f64> {
    tokio::time::timeout(timeout, async {
        let stream = js.get_stream(LOG_STREAM).await.ok()?;
        let last = stream.cached_info().state.last_sequence;
        let consumer = stream.consumer_info(HISTORY_CONSUMER).await.ok()?;
        let floor = consumer.ack_floor.stream_sequence;
        if floor >= last {
            return Some(0.0);
        }
        let oldest = stream.get_raw_message(floor + 1).await.ok()?;
        let nanos = i64::try_from(oldest.time.unix_timestamp_nanos()).ok()?;
        let waited = now - DateTime::<Utc>::from_timestamp_nanos(nanos);
        Some((waited.num_milliseconds().max(0) as f64) / 1000.0)
    })
    .await
    .ok()
    .flatten()
}
