//! Followers ask the leader whether it is alive, so a dead or stopped leader is
//! replaced in well under a second instead of when its lease ages out.
//!
//! Every [`PROBE_EVERY`] a follower sends `leader.get` to the leader's own subject.
//! The answer decides:
//! - no responders: the leader's connection is gone (a crash closes it at once);
//! - an answer that it does not lead: it lost its hold (its connection dropped);
//! - no answer for `--takeover-after`: it is stopped or cut off.
//!
//! Where the coordinator has system-account credentials, NATS' disconnect advisory
//! for the leader's connection is a second signal, often a few ms sooner.
//!
//! Each of these asks the lease task to depose the holder, which it does only by
//! compare-and-set on the lease revision it last saw: a leader that renewed since
//! keeps the lease. Deposing a leader that was merely slow is safe, since its
//! appends are refused once the new term's epoch-start record is in the log, but
//! costs a term change, so `--takeover-after` sits well above a loaded leader's
//! answer time.

use std::time::{Duration, Instant};

use async_nats::connection::State;
use shoal_protocol::{ClientError, ServiceKind, ShoalClient, connection};
use shoal_runtime::advisory;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::lease::{LeaseHandle, LeaseView};

/// How often a follower probes the leader.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It answered and leads.
    Alive,
    /// It answered that it does not lead.
    NotLeading,
    /// Nobody is subscribed to its subject: its connection is closed.
    Gone,
    /// No answer in time, or the request failed.
    Silent,
}

/// The follower's judgement over successive probes of one holder, with time passed
/// in.
#[derive(Debug)]
pub struct Judge {
    takeover_after: Duration,
    holder: Option<String>,
    last_alive: Instant,
}

impl Judge {
    pub fn new(takeover_after: Duration, now: Instant) -> Judge {
        Judge {
            takeover_after,
            holder: None,
            last_alive: now,
        }
    }

    /// Nothing to judge (no other holder, or this replica cannot reach NATS): the
    /// silence clock starts again.
    pub fn reset(&mut self, now: Instant) {
        self.holder = None;
        self.last_alive = now;
    }

    /// Records a probe of `holder`; `Some(reason)` when it should be deposed.
    pub fn observe(&mut self, holder: &str, probe: Probe, now: Instant) -> Option<&'static str> {
        if self.holder.as_deref() != Some(holder) {
            self.holder = Some(holder.to_string());
            self.last_alive = now;
        }
        match probe {
            Probe::Alive => {
                self.last_alive = now;
                None
            }
            Probe::Gone => Some("its connection is closed"),
            Probe::NotLeading => Some("it says it does not lead"),
            Probe::Silent if now.duration_since(self.last_alive) >= self.takeover_after => {
                Some("it has not answered")
            }
            Probe::Silent => None,
        }
    }
}

/// Probes the leader until `shutdown`, asking `lease` to depose it when it is
/// found gone.
pub async fn run(
    client: async_nats::Client,
    peers: ShoalClient,
    lease: LeaseHandle,
    me: String,
    takeover_after: Duration,
    shutdown: CancellationToken,
) {
    // Three probes fit in the silence that deposes.
    let probe_timeout = (takeover_after / 3).max(PROBE_EVERY);
    let peers = peers
        .with_timeout(probe_timeout)
        .with_retry_for(Duration::ZERO);
    let mut judge = Judge::new(takeover_after, Instant::now());
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(holder) = other_holder(&lease.view(), &me) else {
            judge.reset(Instant::now());
            continue;
        };
        if client.connection_state() != State::Connected {
            judge.reset(Instant::now());
            continue;
        }
        let probe = probe(&peers, &holder).await;
        if let Some(reason) = judge.observe(&holder, probe, Instant::now()) {
            debug!(holder = %holder, reason, "leader found gone");
            lease.depose(&holder, reason).await;
        }
    }
}

/// The replica to judge: another one holding the lease and not handing it over.
fn other_holder(view: &LeaseView, me: &str) -> Option<String> {
    match &view.leader {
        Some(l) if view.held.is_none() && !view.handing_over && l.coordinator_id != me => {
            Some(l.coordinator_id.clone())
        }
        _ => None,
    }
}

/// The second signal, where this replica has system-account credentials: NATS
/// reports the leader's connection closed the moment it closes (before a probe
/// finds *no responders*), and the leader is deposed at once, by the same
/// compare-and-set.
pub async fn follow_advisories(
    sys: async_nats::Client,
    lease: LeaseHandle,
    me: String,
    shutdown: CancellationToken,
) {
    let what = "a leader whose connection closes is replaced at once";
    advisory::follow(sys, what, shutdown, |closed| {
        let holder = other_holder(&lease.view(), &me);
        let lease = lease.clone();
        async move {
            let Some(holder) = holder else { return };
            if connection::instance_of(ServiceKind::Coordinator, &closed.name) == Some(&holder) {
                info!(holder = %holder, reason = %closed.reason, "the leader's connection closed");
                lease.depose(&holder, "its connection closed").await;
            }
        }
    })
    .await
}

async fn probe(peers: &ShoalClient, holder: &str) -> Probe {
    match peers.leader_of(holder).await {
        Ok(reply) if reply.is_leader => Probe::Alive,
        Ok(_) => Probe::NotLeading,
        Err(ClientError::NoResponders { .. }) => Probe::Gone,
        Err(_) => Probe::Silent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_millis(600);

    #[test]
    fn a_closed_connection_or_a_holder_that_does_not_lead_is_deposed_at_once() {
        let t0 = Instant::now();
        let mut judge = Judge::new(AFTER, t0);
        assert_eq!(judge.observe("c1", Probe::Alive, t0), None);
        assert!(judge.observe("c1", Probe::Gone, t0).is_some());
        assert!(judge.observe("c1", Probe::NotLeading, t0).is_some());
    }

    #[test]
    fn silence_deposes_only_after_takeover_after_without_an_answer() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut judge = Judge::new(AFTER, t0);
        assert_eq!(judge.observe("c1", Probe::Alive, ms(100)), None);
        assert_eq!(judge.observe("c1", Probe::Silent, ms(400)), None);
        // An answer, however late, starts the silence over.
        assert_eq!(judge.observe("c1", Probe::Alive, ms(650)), None);
        assert_eq!(judge.observe("c1", Probe::Silent, ms(1200)), None);
        assert!(judge.observe("c1", Probe::Silent, ms(1250)).is_some());
    }

    #[test]
    fn a_new_holder_or_a_pause_in_judging_starts_the_silence_over() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut judge = Judge::new(AFTER, t0);
        assert_eq!(judge.observe("c1", Probe::Silent, ms(500)), None);
        assert_eq!(judge.observe("c2", Probe::Silent, ms(700)), None);
        assert_eq!(judge.observe("c2", Probe::Silent, ms(1200)), None);
        assert!(judge.observe("c2", Probe::Silent, ms(1300)).is_some());
        judge.reset(ms(1400));
        assert_eq!(judge.observe("c2", Probe::Silent, ms(1900)), None);
    }
}
