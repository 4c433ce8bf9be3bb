//! Fresh assigns sent on a schedule, independent of the load's workers, so "the
//! first assign sent after the fault" exists even when every worker is stuck on a
//! request the fault swallowed. Each probe is one attempt, never retried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_protocol::{AssignRequest, ClientError, ShoalClient};
use tokio_util::sync::CancellationToken;

/// How often a probe is sent.
pub const EVERY: Duration = Duration::from_millis(20);
/// How long a probe waits for its reply.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the probes got.
#[derive(Debug, Default)]
pub struct Probes {
    /// (sent, acknowledged) of every acknowledged probe.
    pub acked: Vec<(Instant, Instant)>,
    /// Agents of acknowledged probes, for verification.
    pub agents: Vec<String>,
    pub timeouts: usize,
    pub sent: usize,
}

/// Sends a probe every [`EVERY`] until `stop`; returns what they got once the last
/// has its answer.
pub async fn run(client: ShoalClient, prefix: String, stop: CancellationToken) -> Probes {
    let client = client.with_timeout(TIMEOUT).with_retry_for(Duration::ZERO);
    let probes = Arc::new(Mutex::new(Probes::default()));
    let tasks = tokio_util::task::TaskTracker::new();
    let mut tick = tokio::time::interval(EVERY);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let (client, probes) = (client.clone(), probes.clone());
        let agent = format!("{prefix}probe-{n}");
        tasks.spawn(async move {
            let request = AssignRequest {
                agent_name: agent.clone(),
                request_id: Some(format!("req-{agent}")),
                ..Default::default()
            };
            let sent = Instant::now();
            let outcome = client.assign(&request).await;
            let mut p = probes.lock().unwrap();
            p.sent += 1;
            match outcome {
                Ok(_) => {
                    p.acked.push((sent, Instant::now()));
                    p.agents.push(agent);
                }
                Err(ClientError::Timeout { .. }) => p.timeouts += 1,
                Err(_) => {}
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    std::mem::take(&mut *probes.lock().unwrap())
}

/// From `at` until the first probe sent at or after it was acknowledged.
pub fn first_ack_after(probes: &Probes, at: Instant) -> Option<Duration> {
    probes
        .acked
        .iter()
        .filter(|(sent, _)| *sent >= at)
        .map(|(_, done)| *done - at)
        .min()
}
