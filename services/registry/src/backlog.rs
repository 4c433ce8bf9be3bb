//! How far behind this replica is in reading its heartbeats. A heartbeat queued in
//! the client, not yet read, is not silence: a replica short of CPU must not condemn
//! nodes whose heartbeats it holds unread. Each heartbeat reader says when it waits
//! for messages and when it last found its queue empty; judgement waits until every
//! reader has caught up recently.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// One subscription's reader.
#[derive(Debug)]
pub struct Reader {
    /// `None` while the reader waits for a message (nothing queued); else when it
    /// last found its queue empty.
    caught_up_at: Mutex<Option<Instant>>,
}

impl Reader {
    /// The reader is about to wait: its queue is empty.
    pub fn waiting(&self) {
        *self
            .caught_up_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The reader woke to a message at `now`: it was caught up until then.
    pub fn woke(&self, now: Instant) {
        *self
            .caught_up_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
    }

    /// How long the reader has been reading without finding its queue empty.
    fn behind(&self, now: Instant) -> Duration {
        self.caught_up_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
    }
}

/// Every live reader of the replica.
#[derive(Debug, Default)]
pub struct Backlog {
    readers: Mutex<Vec<Weak<Reader>>>,
}

impl Backlog {
    /// A new reader, counted while it lives.
    pub fn reader(&self, now: Instant) -> Arc<Reader> {
        let reader = Arc::new(Reader {
            caught_up_at: Mutex::new(Some(now)),
        });
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        readers.retain(|r| r.strong_count() > 0);
        readers.push(Arc::downgrade(&reader));
        reader
    }

    /// The longest any live reader has gone without catching up.
    pub fn behind(&self, now: Instant) -> Duration {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|r| r.behind(now))
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_is_behind_only_while_it_reads_without_emptying_its_queue() {
        let t0 = Instant::now();
        let backlog = Backlog::default();
        let a = backlog.reader(t0);
        let b = backlog.reader(t0);
        a.waiting();
        b.waiting();
        assert_eq!(backlog.behind(t0 + Duration::from_secs(9)), Duration::ZERO);
        b.woke(t0 + Duration::from_secs(1));
        assert_eq!(
            backlog.behind(t0 + Duration::from_secs(3)),
            Duration::from_secs(2),
            "b has read for 2 s without finding its queue empty"
        );
        b.waiting();
        assert_eq!(backlog.behind(t0 + Duration::from_secs(3)), Duration::ZERO);
        b.woke(t0 + Duration::from_secs(4));
        drop(b);
        assert_eq!(
            backlog.behind(t0 + Duration::from_secs(9)),
            Duration::ZERO,
            "a reader gone counts no more"
        );
    }
}
