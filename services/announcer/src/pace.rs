//! Paces the heartbeats a node sends when its agents change: the first change goes
//! out at once, changes within the next [`CHANGE_HEARTBEAT_EVERY`] go out together
//! when it is over. A burst of a thousand notices then costs a few heartbeats, not a
//! thousand, for every subscriber (registry, balancer, coordinator). Pure: time is
//! passed in.

use std::time::Duration;

use tokio::time::Instant;

/// At most one change-triggered heartbeat per this.
pub const CHANGE_HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// What to do about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Send a heartbeat now.
    Now,
    /// One is already due: it will carry this change too.
    Later,
}

#[derive(Debug, Clone)]
pub struct Pacer {
    every: Duration,
    last: Option<Instant>,
    due: Option<Instant>,
}

impl Pacer {
    pub fn new(every: Duration) -> Pacer {
        Pacer {
            every,
            last: None,
            due: None,
        }
    }

    /// The node's agents changed at `now`.
    pub fn changed(&mut self, now: Instant) -> Pace {
        match self.last {
            Some(last) if now < last + self.every => {
                self.due.get_or_insert(last + self.every);
                Pace::Later
            }
            _ => {
                self.sent(now);
                Pace::Now
            }
        }
    }

    /// A change-triggered heartbeat went out at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last = Some(now);
        self.due = None;
    }

    pub fn is_pending(&self) -> bool {
        self.due.is_some()
    }

    /// When the pending heartbeat is due, if one is.
    pub fn due_at(&self) -> Option<Instant> {
        self.due
    }

    /// Resolves when the pending heartbeat is due (never, with none pending).
    pub async fn due(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_changes_costs_two_heartbeats() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(100));
        assert_eq!(p.changed(t0), Pace::Now);
        assert!(!p.is_pending());
        for ms in 1..100 {
            assert_eq!(p.changed(t0 + Duration::from_millis(ms)), Pace::Later);
        }
        assert_eq!(p.due_at(), Some(t0 + Duration::from_millis(100)));
        p.sent(t0 + Duration::from_millis(100));
        assert!(!p.is_pending());
        // Quiet for a while: the next change goes out at once again.
        assert_eq!(p.changed(t0 + Duration::from_millis(300)), Pace::Now);
    }
}
