//! Retrying a start-up or catch-up step (opening a bucket, reaching Postgres)
//! until it works or the service stops, and resuming a long-running session (a
//! watch, a consumer, a tail) whenever it is interrupted: one shape for every
//! service.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

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

/// Runs `session` until `shutdown`, starting it again whenever it ends: at once
/// after a session that ended by itself (`Ok`), after a pause after one that failed
/// (`Err`). The pause grows from 100 ms to 1 s while sessions keep failing; a session
/// that lasted longer than the longest pause counts as having worked, and the next
/// pause is short again. A failure after a session that worked is a warning, one
/// after another failure is debug.
pub async fn resume<E, F, Fut>(shutdown: &CancellationToken, what: &str, mut session: F)
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = session() => ended,
        };
        if started.elapsed() > MAX_BACKOFF {
            backoff = FIRST_BACKOFF;
            failures = 0;
        }
        match ended {
            Ok(()) => {
                debug!(what, "ended, starting again");
                continue;
            }
            Err(e) if failures == 0 => warn!(what, error = %e, "interrupted, resuming"),
            Err(e) => debug!(what, error = %e, failures, "still failing, resuming"),
        }
        failures += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
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

    #[tokio::test(start_paused = true)]
    async fn sessions_resume_at_once_after_an_end_and_after_a_pause_after_a_failure() {
        let shutdown = CancellationToken::new();
        let starts = std::sync::Mutex::new(Vec::new());
        let began = tokio::time::Instant::now();
        resume(&shutdown, "counting", || {
            let mut starts = starts.lock().unwrap();
            starts.push(began.elapsed());
            let ended = match starts.len() {
                1 => Ok(()),
                2 | 3 => Err("down"),
                _ => {
                    shutdown.cancel();
                    Ok(())
                }
            };
            async move { ended }
        })
        .await;
        let ms = |n| Duration::from_millis(n);
        // Ended: at once; failed: 100 ms, then 200 ms.
        assert_eq!(*starts.lock().unwrap(), [ms(0), ms(0), ms(100), ms(300)]);
    }
}
