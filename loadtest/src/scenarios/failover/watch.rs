//! What the failover scenario watches while it runs. The assignment log, read live
//! from its start by an ordered consumer (so that a compaction's purge cannot hide a
//! record from it), decoded as the coordinators decode it: the terms that began
//! (epoch-start records) and any record written under an epoch older than one already
//! in the log, which would be a deposed leader's write accepted after a newer term
//! began. And `coordinator.leader.changed`, for every lease the coordinators won.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use shoal_coordinator::record::{Change, LogRecord};
use shoal_protocol::{AssignmentAction, LOG_STREAM, LeaderChanged, LeaderInfo};
use shoal_testkit::wait_for;
use tokio::task::JoinHandle;

use crate::stack::Stack;

/// How long the log may be quiet before the watcher checks that its consumer is not
/// stuck (one lost with a nats-server would otherwise stay silent).
const STALL_CHECK: Duration = Duration::from_secs(1);
/// Between attempts to follow the log again after its consumer failed.
const RETRY: Duration = Duration::from_millis(100);

/// A term that began: its epoch-start record.
#[derive(Clone, Debug)]
pub struct Term {
    pub leader_id: String,
    pub epoch: u64,
    pub seq: u64,
    /// The new leader's own time of the record.
    pub at: DateTime<Utc>,
}

/// A record whose epoch is older than one earlier in the log.
#[derive(Clone, Debug)]
pub struct Stale {
    pub seq: u64,
    pub leader_id: String,
    pub epoch: u64,
}

/// One change as the log holds it: what Postgres history must hold too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Logged {
    pub seq: u64,
    /// Its place among its record's changes.
    pub index: usize,
    pub agent: String,
    pub action: AssignmentAction,
}

/// What the watcher has read so far.
#[derive(Default)]
pub struct Seen {
    /// Every change read, in log order.
    pub changes: Vec<Logged>,
    /// Where the log has each agent after the records read so far.
    pub placed: BTreeMap<String, String>,
    /// Changes that put an agent on a node while the log had it on another.
    pub doubled: Vec<String>,
    /// The last log sequence read.
    pub last_seq: u64,
    pub records: u64,
    pub terms: Vec<Term>,
    pub stale: Vec<Stale>,
    /// The newest epoch in the log so far.
    pub max_epoch: u64,
    pub unreadable: u64,
    /// Records the consumer skipped (the log was purged past it): not checked.
    pub unseen: u64,
    /// Leases won, as announced on `coordinator.leader.changed`.
    pub lease_wins: Vec<LeaderInfo>,
}

impl Seen {
    fn apply(&mut self, seq: u64, payload: &[u8]) {
        if seq <= self.last_seq {
            return;
        }
        if self.last_seq > 0 {
            self.unseen += seq - self.last_seq - 1;
        }
        self.last_seq = seq;
        self.records += 1;
        let record = match LogRecord::decode(payload) {
            Ok(record) => record,
            Err(_) => {
                self.unreadable += 1;
                return;
            }
        };
        let authors: Vec<(&str, u64)> = match &record {
            LogRecord::EpochStart(e) => {
                self.terms.push(Term {
                    leader_id: e.leader_id.clone(),
                    epoch: e.epoch,
                    seq,
                    at: e.at,
                });
                vec![(e.leader_id.as_str(), e.epoch)]
            }
            _ => record
                .changes()
                .iter()
                .map(|c| (c.leader_id.as_str(), c.epoch))
                .collect(),
        };
        if let Some(&(leader_id, epoch)) = authors.iter().min_by_key(|(_, epoch)| *epoch)
            && epoch < self.max_epoch
        {
            self.stale.push(Stale {
                seq,
                leader_id: leader_id.to_string(),
                epoch,
            });
        }
        if let Some(newest) = authors.iter().map(|(_, epoch)| *epoch).max() {
            self.max_epoch = self.max_epoch.max(newest);
        }
        for (index, change) in record.changes().iter().enumerate() {
            self.place(seq, index, change);
        }
    }

    /// Follows one change's agent: a placement while the log has the agent on
    /// another node, or a move from a node it is not on, is a doubled placement.
    fn place(&mut self, seq: u64, index: usize, change: &Change) {
        let agent = change.agent_name.as_str();
        self.changes.push(Logged {
            seq,
            index,
            agent: agent.to_string(),
            action: change.action,
        });
        let on = self.placed.get(agent).map(String::as_str);
        match (change.action, change.node_id.as_deref()) {
            (AssignmentAction::Assigned, Some(node)) => {
                if let Some(other) = on.filter(|other| *other != node) {
                    self.doubled.push(format!(
                        "log {seq}.{index}: {agent} assigned to {node} while on {other}"
                    ));
                }
                self.placed.insert(agent.to_string(), node.to_string());
            }
            (
                AssignmentAction::Reassigned
                | AssignmentAction::Migrated
                | AssignmentAction::Rebalanced,
                Some(node),
            ) => {
                let from = change.previous_node_id.as_deref();
                if let (Some(on), Some(from)) = (on, from)
                    && on != from
                {
                    self.doubled.push(format!(
                        "log {seq}.{index}: {agent} moved from {from} to {node} while on {on}"
                    ));
                }
                self.placed.insert(agent.to_string(), node.to_string());
            }
            _ => {
                self.placed.remove(agent);
            }
        }
    }

    /// Terms that began after the one of `epoch`.
    pub fn terms_after(&self, epoch: u64) -> Vec<Term> {
        self.terms
            .iter()
            .filter(|t| t.epoch > epoch)
            .cloned()
            .collect()
    }
}

pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    js: jetstream::Context,
    tasks: Vec<JoinHandle<()>>,
}

impl Watch {
    /// Starts following the log (from its first record) and the leader announcements.
    pub async fn start(stack: &Stack) -> anyhow::Result<Watch> {
        let nats = stack.client.nats().clone();
        let mut js = jetstream::new(nats.clone());
        // Short, as the coordinators' own: a request that reached a dead server is
        // asked again after 1 s, not after the 5 s default.
        js.set_timeout(Duration::from_secs(1));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut announcements = nats
            .subscribe(stack.subjects.coordinator_leader_changed())
            .await
            .context("subscribing to leader announcements")?;
        let wins = seen.clone();
        let announced = tokio::spawn(async move {
            while let Some(m) = announcements.next().await {
                if let Ok(LeaderChanged {
                    leader: Some(leader),
                    ..
                }) = serde_json::from_slice(&m.payload)
                {
                    wins.lock().unwrap().lease_wins.push(leader);
                }
            }
        });
        let (log_js, subject, log_seen) =
            (js.clone(), stack.subjects.coordinator_log(), seen.clone());
        let log = tokio::spawn(async move {
            loop {
                let from = log_seen.lock().unwrap().last_seq + 1;
                if let Err(e) = follow(&log_js, &subject, from, &log_seen).await {
                    tracing::debug!(error = %e, "following the log again");
                }
                // Backoff between attempts, not synchronisation.
                tokio::time::sleep(RETRY).await;
            }
        });
        Ok(Watch {
            seen,
            js,
            tasks: vec![announced, log],
        })
    }

    pub fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    /// Waits until the watcher has read the log to its current end.
    pub async fn caught_up(&self) -> anyhow::Result<()> {
        let (js, seen) = (&self.js, &self.seen);
        wait_for(
            "the log watcher to read the log to its end",
            Duration::from_secs(30),
            || async move {
                let end = log_end(js).await.ok()?;
                (seen.lock().unwrap().last_seq >= end).then_some(())
            },
        )
        .await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn log_end(js: &jetstream::Context) -> anyhow::Result<u64> {
    let stream = js.get_stream(LOG_STREAM).await?;
    Ok(stream.get_info().await?.state.last_sequence)
}

/// Reads the log from `from` until its consumer fails or stalls.
async fn follow(
    js: &jetstream::Context,
    subject: &str,
    from: u64,
    seen: &Mutex<Seen>,
) -> anyhow::Result<()> {
    let stream = js.get_stream(LOG_STREAM).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    loop {
        let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) => return Ok(()),
            Err(_) => {
                let end = stream.get_info().await?.state.last_sequence;
                let read = seen.lock().unwrap().last_seq;
                anyhow::ensure!(end <= read, "stalled at {read} while the log ends at {end}");
                continue;
            }
        };
        let seq = message
            .info()
            .map_err(|e| anyhow::anyhow!("reading a log record's metadata: {e}"))?
            .stream_sequence;
        seen.lock().unwrap().apply(seq, &message.payload);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_coordinator::record::EpochStart;
    use shoal_protocol::AssignmentStatus;

    use super::*;

    fn start(leader: &str, epoch: u64) -> Vec<u8> {
        LogRecord::EpochStart(EpochStart {
            event_id: format!("start-{epoch}"),
            leader_id: leader.into(),
            epoch,
            at: Utc::now(),
        })
        .encode()
        .unwrap()
        .to_vec()
    }

    fn changes(leader: &str, epoch: u64, agents: &[&str]) -> Vec<u8> {
        let moves: Vec<_> = agents
            .iter()
            .map(|a| (*a, AssignmentAction::Assigned, Some("n1"), None))
            .collect();
        moved(leader, epoch, &moves)
    }

    /// (agent, action, node, previous node) per change.
    type Move<'a> = (&'a str, AssignmentAction, Option<&'a str>, Option<&'a str>);

    fn moved(leader: &str, epoch: u64, moves: &[Move<'_>]) -> Vec<u8> {
        let changes = moves
            .iter()
            .map(|(agent, action, node, previous)| Change {
                event_id: format!("{agent}-{epoch}-{action:?}"),
                action: *action,
                agent_name: (*agent).into(),
                node_id: node.map(Into::into),
                previous_node_id: previous.map(Into::into),
                status: AssignmentStatus::Running,
                reason: "balanced".into(),
                leader_id: leader.into(),
                epoch,
                at: Utc::now(),
                service: None,
                labels: BTreeMap::new(),
                request_id: None,
                candidates: None,
                resources: None,
                group: None,
                spread_by: None,
                anti_affinity: false,
                pinned: false,
            })
            .collect();
        LogRecord::of_changes(changes).encode().unwrap().to_vec()
    }

    #[test]
    fn a_record_of_an_older_epoch_after_a_newer_term_is_stale() {
        let mut seen = Seen::default();
        seen.apply(1, &start("c1", 5));
        seen.apply(2, &changes("c1", 5, &["a"]));
        seen.apply(3, &changes("c1", 5, &["b", "c"]));
        seen.apply(4, &start("c2", 9));
        seen.apply(5, &changes("c2", 9, &["d"]));
        assert!(seen.stale.is_empty());
        // The deposed leader's batch, accepted after c2's epoch-start.
        seen.apply(6, &changes("c1", 5, &["e", "f"]));
        // Delivered again after the consumer was recreated: read once.
        seen.apply(6, &changes("c1", 5, &["e", "f"]));
        seen.apply(7, &changes("c2", 9, &["g"]));
        assert_eq!(seen.records, 7);
        assert_eq!(seen.stale.len(), 1);
        assert_eq!(
            (
                seen.stale[0].seq,
                seen.stale[0].leader_id.as_str(),
                seen.stale[0].epoch
            ),
            (6, "c1", 5)
        );
        let terms = seen.terms_after(5);
        assert_eq!(terms.len(), 1);
        assert_eq!((terms[0].leader_id.as_str(), terms[0].seq), ("c2", 4));
        assert_eq!(seen.unseen, 0);
    }

    #[test]
    fn a_gap_in_the_log_is_counted_as_unseen() {
        let mut seen = Seen::default();
        // Starting past a purge is no gap; skipping records later is.
        seen.apply(40, &start("c1", 5));
        seen.apply(41, &changes("c1", 5, &["a"]));
        seen.apply(45, &changes("c1", 5, &["b"]));
        seen.apply(46, b"not a record");
        assert_eq!(seen.unseen, 3);
        assert_eq!(seen.unreadable, 1);
        assert_eq!(seen.records, 4);
    }

    #[test]
    fn the_log_placing_an_agent_on_a_second_node_is_caught() {
        use AssignmentAction::*;
        let mut seen = Seen::default();
        seen.apply(1, &start("c1", 1));
        seen.apply(2, &moved("c1", 1, &[("a", Assigned, Some("n1"), None)]));
        seen.apply(
            3,
            &moved("c1", 1, &[("a", Reassigned, Some("n2"), Some("n1"))]),
        );
        seen.apply(4, &moved("c1", 1, &[("a", Unassigned, None, Some("n2"))]));
        seen.apply(5, &moved("c1", 1, &[("a", Assigned, Some("n3"), None)]));
        assert!(seen.doubled.is_empty(), "{:?}", seen.doubled);
        assert_eq!(seen.placed.get("a").map(String::as_str), Some("n3"));
        // Placed again elsewhere without leaving n3; then moved from a node it is
        // not on.
        seen.apply(6, &moved("c1", 1, &[("a", Assigned, Some("n1"), None)]));
        seen.apply(
            7,
            &moved("c1", 1, &[("a", Migrated, Some("n2"), Some("n3"))]),
        );
        assert_eq!(seen.doubled.len(), 2, "{:?}", seen.doubled);
        assert!(seen.doubled[0].contains("log 6.0: a assigned to n1 while on n3"));
        assert_eq!(seen.changes.len(), 6);
        assert_eq!((seen.changes[5].seq, seen.changes[5].index), (7, 0));
    }
}
