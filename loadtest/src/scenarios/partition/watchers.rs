//! What runs through the whole partition scenario: the writer (assigns, each
//! retried as a careful client would, under one request id) and the registry's
//! node events, both noting when things happened.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_protocol::{NodeEvent, NodeEventKind, UnassignRequest};
use shoal_testkit::wait_for;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::scenarios::failover::attempts::{self, Record};
use crate::stack::Stack;

/// Agents each writer task keeps placed: past this many, each assign is followed
/// by the unassign of its oldest, so the nodes never fill however long the run.
const WINDOW: usize = 50;
/// How long an unassign keeps being asked again through a cut.
const UNASSIGN_PATIENCE: Duration = Duration::from_secs(30);

/// `concurrency` tasks assigning `<prefix><n>` one after another until stopped,
/// each unassigning its agent of [`WINDOW`] assigns before.
pub struct Writer {
    record: Arc<Mutex<Record>>,
    unassigned: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Vec<(String, String)>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Writer {
    pub fn start(stack: &Stack, prefix: &str, concurrency: usize) -> Writer {
        let record = Arc::new(Mutex::new(Record::default()));
        let unassigned = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let client = attempts::client(&stack.client);
        let tasks = (0..concurrency.max(1))
            .map(|task| {
                let (client, record, unassigned, failed, stop) = (
                    client.clone(),
                    record.clone(),
                    unassigned.clone(),
                    failed.clone(),
                    stop.clone(),
                );
                let prefix = format!("{prefix}{task}-");
                let patient = client.clone().with_timeout(Duration::from_secs(1));
                tokio::spawn(async move {
                    let mut placed = std::collections::VecDeque::new();
                    for i in 0.. {
                        if stop.is_cancelled() {
                            return;
                        }
                        let agent = format!("{prefix}{i}");
                        match attempts::assign(&client, agent.clone(), &record).await {
                            Ok(()) => placed.push_back(agent),
                            Err(code) => failed.lock().unwrap().push((agent, code)),
                        }
                        if placed.len() <= WINDOW {
                            continue;
                        }
                        let Some(oldest) = placed.pop_front() else {
                            continue;
                        };
                        let req = UnassignRequest {
                            agent_name: oldest.clone(),
                            request_id: Some(format!("un-{oldest}")),
                        };
                        match patient.unassign_acknowledged(&req, UNASSIGN_PATIENCE).await {
                            Ok(_) => unassigned.lock().unwrap().push(oldest),
                            Err(e) => failed.lock().unwrap().push((oldest, e.code().to_string())),
                        }
                    }
                })
            })
            .collect();
        Writer {
            record,
            unassigned,
            failed,
            stop,
            tasks,
        }
    }

    pub fn acked(&self) -> usize {
        self.record.lock().unwrap().acked.len()
    }

    pub async fn wait_acked(&self, n: usize) -> anyhow::Result<()> {
        wait_for(
            &format!("{n} acknowledged assigns"),
            Duration::from_secs(60),
            || async { (self.acked() >= n).then_some(()) },
        )
        .await
    }

    /// The longest stretch within `from..to` without an acknowledged assign, or
    /// the wait from `from` for the first acknowledgement of an assign sent after
    /// it, whichever is longer.
    pub fn stall_between(&self, from: Instant, to: Instant) -> Duration {
        let record = self.record.lock().unwrap();
        let mut acks: Vec<Instant> = record
            .successes
            .iter()
            .map(|(_, done)| *done)
            .filter(|done| *done >= from && *done <= to)
            .collect();
        acks.push(from);
        acks.push(to);
        acks.sort();
        let gaps = acks
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let first = record
            .successes
            .iter()
            .filter(|(sent, _)| *sent >= from)
            .map(|(_, done)| *done - from)
            .min()
            .map_or(to - from, |d| d.min(to - from));
        gaps.max(first)
    }

    /// Stops the writer and waits for its requests in flight to finish: what it
    /// was told, the agents acknowledged as unassigned, and what failed (agent,
    /// last error).
    pub async fn stop(self) -> (Record, Vec<String>, Vec<(String, String)>) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let record = std::mem::take(&mut *self.record.lock().unwrap());
        let unassigned = std::mem::take(&mut *self.unassigned.lock().unwrap());
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (record, unassigned, failed)
    }
}

/// Every registry event, with the instant it was received.
#[derive(Clone, Default)]
pub struct NodeEvents {
    seen: Arc<Mutex<Vec<(Instant, NodeEvent)>>>,
}

impl NodeEvents {
    pub async fn record(stack: &Stack) -> anyhow::Result<NodeEvents> {
        let nats = stack.client.nats();
        let mut sub = nats.subscribe(stack.subjects.registry_events_all()).await?;
        nats.flush().await?;
        let events = NodeEvents::default();
        let sink = events.seen.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Ok(e) = serde_json::from_slice::<NodeEvent>(&m.payload) {
                    sink.lock().unwrap().push((Instant::now(), e));
                }
            }
        });
        Ok(events)
    }

    /// `node id: kind` of the events of `kinds` received since `at`.
    pub fn since(&self, at: Instant, kinds: &[NodeEventKind]) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, e)| *t >= at && kinds.contains(&e.event))
            .map(|(_, e)| format!("{}: {:?}", e.node_id, e.event))
            .collect()
    }

    /// Waits for `node`'s first `kind` event received since `at`.
    pub async fn wait(
        &self,
        node: &str,
        kind: NodeEventKind,
        at: Instant,
        patience: Duration,
    ) -> anyhow::Result<()> {
        wait_for(&format!("{node} to be {kind:?}"), patience, || async {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .any(|(t, e)| *t >= at && e.node_id == node && e.event == kind)
                .then_some(())
        })
        .await
    }
}
