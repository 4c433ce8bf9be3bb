//! The KV buckets the balancer reads: membership (`shoal_members`) and cluster
//! settings (`shoal_config`). Whichever service starts first creates a bucket; the
//! others open it, so start order does not matter.

use async_nats::jetstream::{self, kv};

use crate::Error;

/// Key of the cluster balancing strategy in the `shoal_config` bucket; the value is
/// `{"strategy": "<name>"}`.
pub const STRATEGY_KEY: &str = "balancer.strategy";

/// Opens `bucket`, creating it (file storage, one value per key) if it is missing.
/// A creation race with another service ends with opening what the winner made.
pub(crate) async fn open_or_create(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, Error> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.to_string(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        Err(create_error) => js.get_key_value(bucket).await.map_err(|open_error| {
            Error::JetStream(format!(
                "bucket {bucket} can be neither created ({create_error}) nor opened ({open_error})"
            ))
        }),
    }
}
