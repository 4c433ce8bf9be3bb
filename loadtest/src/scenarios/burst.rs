//! `burst`: --agents assignments fired at once, then how evenly they spread over the
//! nodes (max − min, standard deviation), as the Tasker seed's rapid-burst and
//! round-robin-distribution tests check; no duplicate ids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shoal_protocol::ListAssignmentsRequest;

use crate::args::Args;
use crate::measure::{Limit, Load, run as measure};
use crate::report::Report;
use crate::stack::{Spawn, Stack};
use crate::verify::{self, Acknowledged};

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let stack = Stack::with_nodes(args, Spawn::ALL).await?;
    stack.wait_for_leader().await?;
    let prefix = super::run_prefix("burst");
    let acked = Arc::new(Mutex::new(Vec::new()));
    // Everything in flight at once (capped so the client's own task count stays sane).
    let load = Load::Closed {
        concurrency: args.agents.min(2_000) as usize,
    };
    let (client, p, a) = (stack.client.clone(), prefix.clone(), acked.clone());
    let m = measure(
        "burst assign",
        load,
        Limit::Requests(args.agents),
        move |i| {
            let (client, agent, acked) = (client.clone(), format!("{p}{i}"), a.clone());
            async move { super::assign_recorded(&client, agent, &acked).await }
        },
    )
    .await;
    report.measurements.push(m);

    let list = stack
        .client
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await?;
    let mut per_node: BTreeMap<String, u64> = stack
        .nodes
        .as_ref()
        .map(|n| n.ids().into_iter().map(|id| (id, 0)).collect())
        .unwrap_or_default();
    for a in list.iter().filter(|a| a.agent_name.starts_with(&prefix)) {
        *per_node.entry(a.node_id.clone()).or_default() += 1;
    }
    let counts: Vec<f64> = per_node.values().map(|&c| c as f64).collect();
    let (min, max) = counts
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    let mean = counts.iter().sum::<f64>() / counts.len().max(1) as f64;
    let stddev = (counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>()
        / counts.len().max(1) as f64)
        .sqrt();
    report.figure("nodes", counts.len());
    report.figure("agents_per_node_min", min);
    report.figure("agents_per_node_max", max);
    report.figure("agents_per_node_max_minus_min", max - min);
    report.figure("agents_per_node_stddev", stddev);

    let acked = Acknowledged {
        assigned: acked.lock().unwrap().iter().cloned().collect(),
        ..Default::default()
    };
    verify::assignments(&stack, &prefix, &acked, report).await
}
