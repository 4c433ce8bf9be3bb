//! Errors that stop the coordinator (request failures are `ShoalError` replies).

use shoal_runtime::{ConfigError, ConnectError, JetStreamError, NatsError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error(transparent)]
    Metrics(#[from] shoal_runtime::metrics::MetricsError),
    #[error("connecting to NATS in the system account: {0}")]
    SystemAccount(#[source] ConnectError),
    #[error("the history database (--database-url): {0}")]
    Postgres(#[source] deadpool_postgres::CreatePoolError),
}
