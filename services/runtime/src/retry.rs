//! Retrying a start-up or catch-up step (opening a bucket, reaching Postgres)
//! until it works or the service stops: one shape for every service.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Runs `op` until it succeeds (`Some`) or `shutdown` is cancelled (`None`),
/// backing off from 100 ms to 1 s. The first failure is a warning, later ones are
/// debug, and success after failures says how many there were.
pub async fn until_ok<T, E, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut op: F,
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        match op().await {
            Ok(value) => {
                if failures > 0 {
                    info!(what, failures, "succeeded after retrying");
                }
                return Some(value);
            }
            Err(e) if failures == 0 => warn!(what, error = %e, "failed, retrying"),
            Err(e) => debug!(what, error = %e, failures, "still failing, retrying"),
        }
        failures += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_success_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let got = until_ok(&shutdown, "counting", || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err("not yet") } else { Ok(n) } }
        })
        .await;
        assert_eq!(got, Some(3));

        shutdown.cancel();
        let never: Option<()> =
            until_ok(&shutdown, "failing", || async { Err::<(), _>("down") }).await;
        assert_eq!(never, None);
    }
}
