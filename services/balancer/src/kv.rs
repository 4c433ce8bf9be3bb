//! The KV buckets the balancer reads: membership (`shoal_members`) and cluster
//! settings (`shoal_config`). Whichever service starts first creates a bucket; the
//! others open it, so start order does not matter.

use async_nats::jetstream::{self, kv};
use shoal_runtime::JetStreamError;

/// Opens `bucket`, creating it if it is missing (see [`shoal_runtime::kv`]).
pub(crate) async fn open_or_create(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, JetStreamError> {
    shoal_runtime::kv::open_or_create(js, bucket, replicas).await
}
