//! Waiting on a condition with a deadline: the only way this crate (and the
//! tests built on it) synchronise with the processes they start.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

const FIRST_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `check` every 10–25 ms until it returns `Some`, and returns that value.
/// Fails, naming `what` and the deadline, when `deadline` passes first (a check
/// still running at the deadline is abandoned).
pub async fn wait_for<F, Fut, T>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_wait_for(what, deadline, || {
        let fut = check();
        async move { Ok(fut.await) }
    })
    .await
}

/// Like [`wait_for`], but `check` can also give up early by returning `Err`
/// (for example when the process being waited on has exited), which is returned
/// as is.
pub async fn try_wait_for<F, Fut, T>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let until = started + deadline;
    let mut interval = FIRST_INTERVAL;
    let mut attempts: u64 = 0;
    loop {
        attempts += 1;
        match tokio::time::timeout_at(until, check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::time::sleep_until((now + interval).min(until)).await;
        interval = (interval + Duration::from_millis(5)).min(MAX_INTERVAL);
    }
    bail!("timed out after {deadline:?} waiting for {what} ({attempts} checks)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_some() {
        let mut n = 0;
        let got = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move { (n >= 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn names_what_and_the_deadline() {
        let err = wait_for("the impossible", Duration::from_millis(60), || async {
            None::<()>
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("the impossible"), "{err}");
        assert!(err.contains("60ms"), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_check_does_not_outlive_the_deadline() {
        let started = Instant::now();
        let err = wait_for(
            "a check that never answers",
            Duration::from_millis(50),
            std::future::pending::<Option<()>>,
        )
        .await;
        assert!(err.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_error_stops_the_wait() {
        let err = try_wait_for("anything", Duration::from_secs(30), || async {
            Err::<Option<()>, _>(anyhow::anyhow!("gave up"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "gave up");
    }
}
