//! Opening what JetStream keeps (a KV bucket, a stream, an object store) that any of
//! several processes may be first to need: whichever starts first creates it, the
//! others open it, so start order does not matter.

use std::fmt::Display;
use std::future::Future;

use crate::error::JetStreamError;

/// Opens `what` with `open`, creating it with `create` if that fails; a creation race
/// with another process (its `create` won) ends with opening what the winner made.
/// Something that exists is used as it is, whatever settings it was made with.
pub async fn open_or_create<T, OpenError, CreateError, Open, Opened>(
    what: &str,
    open: Open,
    create: impl Future<Output = Result<T, CreateError>>,
) -> Result<T, JetStreamError>
where
    Open: Fn() -> Opened,
    Opened: Future<Output = Result<T, OpenError>>,
    OpenError: Into<async_nats::Error>,
    CreateError: Display,
{
    if let Ok(found) = open().await {
        return Ok(found);
    }
    match create.await {
        Ok(made) => Ok(made),
        Err(create_error) => open().await.map_err(|open_error| {
            JetStreamError::new(
                format!("{what} could not be created ({create_error}), nor opened"),
                open_error,
            )
        }),
    }
}
