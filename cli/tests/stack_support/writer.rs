//! The compose test's writer: assigns and unassigns in the background for the
//! whole test, each request retried until acknowledged, and notes when each
//! acknowledgement came, so a fault's write stall can be read off afterwards.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_protocol::{AssignRequest, ShoalClient, UnassignRequest};
use shoal_testkit::try_wait_for;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the writer was told: agents acknowledged as assigned, and those of them
/// acknowledged as unassigned afterwards.
#[derive(Default)]
pub struct Acknowledged {
    pub assigned: Vec<String>,
    pub unassigned: Vec<String>,
}

/// Agents one writer keeps placed at once: each assign past this many unassigns
/// the oldest, so the nodes never fill however long the test runs.
const WRITER_WINDOW: usize = 100;

/// Assigns `w-1`, `w-2`, … one after another until stopped, and unassigns each
/// again [`WRITER_WINDOW`] assigns later; every request retried until
/// acknowledged. Notes when each acknowledgement came.
pub struct Writer {
    shared: Arc<Mutex<Written>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Written {
    acks: Vec<(String, Instant)>,
    unassigned: Vec<String>,
    failure: Option<String>,
}

impl Writer {
    pub fn start(shoal: ShoalClient) -> Writer {
        let shared = Arc::new(Mutex::new(Written::default()));
        let (stop, stopped) = watch::channel(false);
        let sink = shared.clone();
        let task = tokio::spawn(async move {
            for i in 1usize.. {
                if *stopped.borrow() {
                    return;
                }
                let req = AssignRequest {
                    agent_name: format!("w-{i}"),
                    request_id: Some(format!("w-{i}")),
                    ..AssignRequest::default()
                };
                let outcome = shoal
                    .assign_acknowledged(&req, Duration::from_secs(60))
                    .await;
                if let Err(e) = outcome {
                    sink.lock().unwrap().failure = Some(format!("assign {}: {e}", req.agent_name));
                    return;
                }
                sink.lock()
                    .unwrap()
                    .acks
                    .push((req.agent_name, Instant::now()));
                if i > WRITER_WINDOW {
                    let oldest = format!("w-{}", i - WRITER_WINDOW);
                    let req = UnassignRequest {
                        agent_name: oldest.clone(),
                        request_id: Some(format!("unassign-{oldest}")),
                    };
                    let outcome = shoal
                        .unassign_acknowledged(&req, Duration::from_secs(60))
                        .await
                        .with_context(|| format!("unassign {oldest}"));
                    let mut written = sink.lock().unwrap();
                    match outcome {
                        Ok(_) => {
                            written.acks.push((oldest.clone(), Instant::now()));
                            written.unassigned.push(oldest);
                        }
                        Err(e) => {
                            written.failure = Some(format!("{e:#}"));
                            return;
                        }
                    }
                }
            }
        });
        Writer { shared, stop, task }
    }

    /// Waits for an acknowledgement later than `until`, then gives the longest
    /// time between `since` and `until` without one: how long writes stalled.
    pub async fn stall(&self, since: Instant, until: Instant) -> Result<Duration> {
        let deadline = until.saturating_duration_since(Instant::now()) + Duration::from_secs(30);
        try_wait_for("the writer's next acknowledged assign", deadline, || {
            let written = self.shared.lock().unwrap();
            let outcome = if let Some(failure) = &written.failure {
                Err(anyhow::anyhow!("the writer stopped: {failure}"))
            } else if written.acks.last().is_some_and(|(_, at)| *at > until) {
                let mut longest = Duration::ZERO;
                let mut previous = since;
                for at in written
                    .acks
                    .iter()
                    .map(|(_, at)| *at)
                    .filter(|at| *at > since)
                {
                    longest = longest.max(at - previous);
                    previous = at;
                    if at > until {
                        break;
                    }
                }
                Ok(Some(longest))
            } else {
                Ok(None)
            };
            async move { outcome }
        })
        .await
    }

    /// Stops the writer; what it was acknowledged.
    pub async fn stop(self) -> Result<Acknowledged> {
        let _ = self.stop.send(true);
        self.task.await.context("the writer panicked")?;
        let written = self.shared.lock().unwrap();
        if let Some(failure) = &written.failure {
            bail!("the writer stopped: {failure}");
        }
        let unassigned = written.unassigned.clone();
        let assigned = written
            .acks
            .iter()
            .map(|(a, _)| a.clone())
            .filter(|a| !unassigned.contains(a))
            .chain(unassigned.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(Acknowledged {
            assigned,
            unassigned,
        })
    }
}
