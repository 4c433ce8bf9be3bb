//! The mass-failure guard: a cap on reassignments per second, a pause while too
//! large a share of the nodes is offline, and a grace period after a failover
//! during which no node is judged dead. Pure: time is passed in.

use std::time::{Duration, Instant};

use crate::token_bucket::TokenBucket;

#[derive(Debug)]
pub struct Guard {
    cap: TokenBucket,
    share: f64,
    paused: bool,
    grace_until: Option<Instant>,
}

impl Guard {
    /// `rate` reassignments per second (also the burst), pause above `share` offline.
    pub fn new(rate: u32, share: f64, now: Instant) -> Guard {
        Guard {
            cap: TokenBucket::new(f64::from(rate), f64::from(rate), now),
            share,
            paused: false,
            grace_until: None,
        }
    }

    /// A new term: no node is judged dead until `window` has passed.
    pub fn start_term(&mut self, now: Instant, window: Duration) {
        self.grace_until = Some(now + window);
    }

    pub fn in_grace(&self, now: Instant) -> bool {
        self.grace_until.is_some_and(|until| now < until)
    }

    /// When the grace period ends, if it has not yet.
    pub fn grace_ends(&self, now: Instant) -> Option<Instant> {
        self.grace_until.filter(|until| now < *until)
    }

    /// Whether `offline` of `total` nodes is a mass failure.
    pub fn is_mass_failure(share: f64, offline: usize, total: usize) -> bool {
        total > 0 && offline as f64 / total as f64 > share
    }

    /// Updates the pause from the current membership; returns the new value when it
    /// changed (so the caller logs the transition once).
    pub fn update_pause(&mut self, offline: usize, total: usize) -> Option<bool> {
        let paused = Guard::is_mass_failure(self.share, offline, total);
        (paused != self.paused).then(|| {
            self.paused = paused;
            paused
        })
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Takes one reassignment token; `false` when the per-second cap is reached.
    pub fn take(&mut self, now: Instant) -> bool {
        self.cap.take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_cap_refills_over_time() {
        let t0 = Instant::now();
        let mut g = Guard::new(3, 0.5, t0);
        assert!((0..3).all(|_| g.take(t0)));
        assert!(!g.take(t0));
        assert!(g.take(t0 + Duration::from_millis(400)));
        assert!(!g.take(t0 + Duration::from_millis(400)));
        // Never more than one second's worth at once.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| g.take(later)).count(), 3);
    }

    #[test]
    fn more_than_the_share_offline_pauses() {
        let mut g = Guard::new(10, 0.5, Instant::now());
        assert_eq!(g.update_pause(1, 2), None);
        assert_eq!(g.update_pause(2, 3), Some(true));
        assert!(g.paused());
        assert_eq!(g.update_pause(2, 3), None);
        assert_eq!(g.update_pause(1, 3), Some(false));
        assert!(!Guard::is_mass_failure(0.5, 0, 0));
    }

    #[test]
    fn no_node_is_judged_during_the_window_after_a_failover() {
        let t0 = Instant::now();
        let mut g = Guard::new(10, 0.5, t0);
        assert!(!g.in_grace(t0));
        assert_eq!(g.grace_ends(t0), None);
        g.start_term(t0, Duration::from_secs(3));
        assert!(g.in_grace(t0 + Duration::from_secs(2)));
        assert!(!g.in_grace(t0 + Duration::from_secs(3)));
        assert_eq!(
            g.grace_ends(t0 + Duration::from_secs(1)),
            Some(t0 + Duration::from_secs(3))
        );
        assert_eq!(g.grace_ends(t0 + Duration::from_secs(3)), None);
    }
}
