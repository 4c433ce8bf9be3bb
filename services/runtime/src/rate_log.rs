//! Logging at a bounded rate: a message that may repeat thousands of times a second
//! (a refused node message, a dropped delivery) is logged at most once per period,
//! with how many were held back since.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Logs at most once per period, counting what it held back.
pub struct RateLog {
    period: Duration,
    inner: Mutex<(Option<Instant>, u64)>,
}

impl RateLog {
    pub const fn new(period: Duration) -> RateLog {
        RateLog {
            period,
            inner: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when this occurrence should be logged.
    pub fn admit(&self) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if inner
            .0
            .is_some_and(|at| now.duration_since(at) < self.period)
        {
            inner.1 += 1;
            return None;
        }
        inner.0 = Some(now);
        Some(std::mem::take(&mut inner.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_and_the_rest_of_the_period_counted() {
        let log = RateLog::new(Duration::from_secs(3600));
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        let log = RateLog::new(Duration::ZERO);
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), Some(0));
    }
}
