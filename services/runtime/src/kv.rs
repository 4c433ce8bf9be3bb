//! Opening the shared KV buckets. Whichever service starts first creates a bucket;
//! the others open it, so start order does not matter and every creator uses the
//! same settings.

use async_nats::jetstream::{self, kv};

use crate::error::JetStreamError;

/// What a bucket holds, for `nats kv ls` and the server's stream info.
pub fn description(bucket: &str) -> &'static str {
    match bucket {
        shoal_protocol::MEMBERS_BUCKET => "shoal membership: key = node id, value = node record",
        shoal_protocol::CONFIG_BUCKET => "shoal cluster settings, e.g. the balancing strategy",
        _ => "shoal",
    }
}

/// Opens `bucket`, creating it (file storage, one value per key, `replicas`
/// copies) if it is missing. A creation race with another service ends with
/// opening what the winner made.
pub async fn open_or_create(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, JetStreamError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.to_string(),
            description: description(bucket).to_string(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        Err(create_error) => js.get_key_value(bucket).await.map_err(|open_error| {
            JetStreamError::new(
                format!("bucket {bucket} could not be created ({create_error}), nor opened"),
                open_error,
            )
        }),
    }
}
