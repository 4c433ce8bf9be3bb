//! The failover scenario's assigns: each retried as a careful client would (same
//! request_id, so a retry cannot assign twice), with every attempt's outcome counted.
//! A request that got no reply at all (a timeout) is counted apart from one that was
//! answered with an error (`not_leader`, `unavailable`) or at once with no responders:
//! a timeout means a coordinator took the request and never answered it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_protocol::{AssignRequest, ClientError, ShoalClient};

/// How long to wait for a reply before asking again: a request caught by the fault
/// is retried after 1 s instead of waiting out the default.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one assign keeps trying before it counts as failed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(15);
/// Backoff between attempts refused by the coordinators (not after a timeout, which
/// has waited already).
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What every assign of the run got, shared by the load's tasks.
#[derive(Default)]
pub struct Record {
    /// Agents whose assign was acknowledged.
    pub acked: Vec<String>,
    /// (first attempt sent, acknowledged) of every acknowledged assign.
    pub successes: Vec<(Instant, Instant)>,
    /// Requests sent, retries included.
    pub attempts: u64,
    /// When each request that got no reply at all was sent.
    pub timeouts: Vec<Instant>,
    /// Requests answered with an error envelope, or refused at once for want of a
    /// responder, by code.
    pub error_replies: BTreeMap<String, u64>,
}

/// The client the assigns go through: short timeout, no retries of its own (they are
/// made and counted here).
pub fn client(base: &ShoalClient) -> ShoalClient {
    base.clone()
        .with_timeout(ATTEMPT_TIMEOUT)
        .with_retry_for(Duration::ZERO)
}

/// Assigns `agent`, retrying timeouts, `not_leader`, `unavailable` and no responders
/// for up to [`GIVE_UP_AFTER`]; `Err(code)` of the last attempt when it gives up.
pub async fn assign(
    client: &ShoalClient,
    agent: String,
    record: &Mutex<Record>,
) -> Result<(), String> {
    let request = AssignRequest {
        agent_name: agent.clone(),
        request_id: Some(format!("req-{agent}")),
        ..Default::default()
    };
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let sent = Instant::now();
        let outcome = client.assign(&request).await;
        let error = {
            let mut r = record.lock().unwrap();
            r.attempts += 1;
            match outcome {
                Ok(_) => {
                    r.acked.push(agent);
                    r.successes.push((started, Instant::now()));
                    return Ok(());
                }
                Err(ClientError::Timeout { .. }) => {
                    r.timeouts.push(sent);
                    None
                }
                Err(e) => {
                    *r.error_replies.entry(e.code().to_string()).or_default() += 1;
                    Some(e)
                }
            }
        };
        let retryable = error.as_ref().is_none_or(|e| {
            matches!(e, ClientError::NoResponders { .. })
                || e.service_code().is_some_and(|c| c.is_retryable())
        });
        let code = error.as_ref().map_or("timeout", ClientError::code);
        if !retryable || started.elapsed() + backoff >= GIVE_UP_AFTER {
            return Err(code.to_string());
        }
        if error.is_some() {
            // Backoff between attempts, not synchronisation: the next is a fresh request.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
