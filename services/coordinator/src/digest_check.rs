//! When a node must be sent a `sync`: its heartbeats report a digest of the agents it
//! runs, and where that disagrees with the leader's for two heartbeats in a row the
//! node has missed notices. Heartbeats sent while notices to the node may still be on
//! their way (within [`SETTLE`] of the leader's last change to it, or of the last
//! sync) are not counted either way. Pure: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long after a change to a node (or a sync) its heartbeats may still predate
/// the notices: far above a notice's usual few milliseconds, below a heartbeat
/// interval or two.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Disagreeing heartbeats in a row that call for a sync.
pub const MISMATCHES: u8 = 2;

#[derive(Debug, Default, Clone, Copy)]
struct Check {
    touched_at: Option<Instant>,
    mismatches: u8,
}

/// Per node: when the leader last changed what it runs, and how many settled
/// heartbeats in a row disagreed.
#[derive(Debug, Default)]
pub struct DigestChecks {
    nodes: HashMap<String, Check>,
}

impl DigestChecks {
    /// The leader changed what `node` runs, or sent it a sync.
    pub fn touched(&mut self, node: &str, now: Instant) {
        match self.nodes.get_mut(node) {
            Some(c) => c.touched_at = Some(now),
            None => {
                self.nodes.insert(
                    node.to_string(),
                    Check {
                        touched_at: Some(now),
                        mismatches: 0,
                    },
                );
            }
        }
    }

    /// A heartbeat from `node` whose digest does (`agrees`) or does not match the
    /// leader's; true when a sync is due now (the caller sends it and calls
    /// [`Self::touched`]).
    pub fn heartbeat(&mut self, node: &str, agrees: bool, now: Instant) -> bool {
        let settling = |c: &Check| c.touched_at.is_some_and(|t| now < t + SETTLE);
        if agrees {
            if self.nodes.get(node).is_some_and(|c| !settling(c)) {
                self.nodes.remove(node);
            } else if let Some(c) = self.nodes.get_mut(node) {
                c.mismatches = 0;
            }
            return false;
        }
        let check = match self.nodes.get_mut(node) {
            Some(c) => c,
            None => self.nodes.entry(node.to_string()).or_default(),
        };
        if settling(check) {
            return false;
        }
        check.mismatches += 1;
        if check.mismatches >= MISMATCHES {
            check.mismatches = 0;
            return true;
        }
        false
    }

    /// Nodes with a pending check (for tests and metrics).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_settled_disagreements_in_a_row_call_for_a_sync() {
        let t0 = Instant::now();
        let mut c = DigestChecks::default();
        assert!(!c.heartbeat("n", false, t0));
        assert!(c.heartbeat("n", false, t0 + Duration::from_secs(1)));
        // Counting starts again after the sync is sent.
        c.touched("n", t0 + Duration::from_secs(1));
        assert!(!c.heartbeat("n", false, t0 + Duration::from_millis(1500)));
        assert!(!c.heartbeat("n", false, t0 + Duration::from_millis(2100)));
        assert!(c.heartbeat("n", false, t0 + Duration::from_millis(3100)));
    }

    #[test]
    fn an_agreeing_heartbeat_resets_the_count() {
        let t0 = Instant::now();
        let mut c = DigestChecks::default();
        assert!(!c.heartbeat("n", false, t0));
        assert!(!c.heartbeat("n", true, t0 + Duration::from_secs(1)));
        assert!(c.is_empty());
        assert!(!c.heartbeat("n", false, t0 + Duration::from_secs(2)));
        assert!(c.heartbeat("n", false, t0 + Duration::from_secs(3)));
    }

    #[test]
    fn heartbeats_right_after_a_change_are_not_counted() {
        let t0 = Instant::now();
        let mut c = DigestChecks::default();
        c.touched("n", t0);
        // Under steady changes the node is never judged.
        for i in 1..10u64 {
            let t = t0 + Duration::from_millis(300 * i);
            c.touched("n", t);
            assert!(!c.heartbeat("n", false, t + Duration::from_millis(5)));
        }
        // Quiet again: judged.
        let quiet = t0 + Duration::from_secs(5);
        assert!(!c.heartbeat("n", false, quiet));
        assert!(c.heartbeat("n", false, quiet + Duration::from_secs(1)));
        // An agreeing heartbeat while settling keeps the entry (the time matters).
        c.touched("n", quiet);
        assert!(!c.heartbeat("n", true, quiet + Duration::from_millis(10)));
        assert_eq!(c.len(), 1);
    }
}
