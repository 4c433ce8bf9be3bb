//! One module per scenario, each named after what it proves.

pub mod assign;
pub mod burst;
pub mod compaction;
pub mod discovery;
mod discovery_storm;
pub mod failover;
pub mod heartbeats;
pub mod join;
pub mod partition;
pub mod select;

use std::sync::{Arc, Mutex};

use shoal_protocol::{AssignRequest, ClientError, ShoalClient};

use crate::args::Args;
use crate::baseline;
use crate::measure::{Limit, Load, Measurement};
use crate::report::Report;

/// A name prefix unique to this run, so runs against a shared stack don't mix.
pub fn run_prefix(kind: &str) -> String {
    format!(
        "lt{}-{kind}-",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Raw request/reply and JetStream publish at the scenario's load, unless skipped.
pub async fn baselines(
    args: &Args,
    nats_url: &str,
    load: Load,
    limit: Limit,
    report: &mut Report,
) -> anyhow::Result<Option<(Measurement, Measurement)>> {
    if args.no_baseline {
        return Ok(None);
    }
    let rr = baseline::request_reply(nats_url, load, limit, 128).await?;
    let js = baseline::jetstream_publish(nats_url, load, limit, 256).await?;
    report.measurements.push(rr.clone());
    report.measurements.push(js.clone());
    Ok(Some((rr, js)))
}

/// An assign that records the agent as acknowledged when (and only when) the
/// coordinator replied with success. A timed-out request is retried with the same
/// request_id, as a careful client would: the coordinator answers a repeat with the
/// first result, so the retry cannot assign twice.
pub async fn assign_recorded(
    client: &ShoalClient,
    agent: String,
    acked: &Arc<Mutex<Vec<String>>>,
) -> Result<(), String> {
    let request = AssignRequest {
        agent_name: agent.clone(),
        request_id: Some(format!("req-{agent}")),
        ..Default::default()
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.assign(&request).await {
            Ok(_) => {
                acked.lock().unwrap().push(agent);
                return Ok(());
            }
            Err(ClientError::Timeout { .. }) if attempts < 5 => continue,
            Err(e) => return Err(e.code().to_string()),
        }
    }
}
