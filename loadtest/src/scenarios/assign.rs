//! `assign`: throughput and latency of assign, then of unassign, of distinct agents;
//! verified against coordinator state and Postgres history, with the write path's
//! goals (`--check-goals` makes a miss fail the run).

use std::sync::{Arc, Mutex};

use crate::args::Args;
use crate::cost::Cost;
use crate::measure::{Limit, run as measure};
use crate::report::Report;
use crate::stack::{Spawn, Stack};
use crate::verify::{self, Acknowledged};

/// The write path's goals: closed loop, assigns (and unassigns) per second at least
/// this share of raw NATS request/reply at the same concurrency; open loop, p99 at
/// most this many ms.
const THROUGHPUT_GOAL: f64 = 0.25;
const P99_GOAL_MS: f64 = 5.0;

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let stack = Stack::with_nodes(args, Spawn::ALL).await?;
    stack.wait_for_leader().await?;
    let (load, limit) = (args.load(), args.limit());
    let base = super::baselines(args, &stack.nats_url, load, limit, report).await?;

    let prefix = super::run_prefix("assign");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (client, p, a) = (stack.client.clone(), prefix.clone(), acked.clone());
    let cost = Cost::start(&stack).await;
    let assigned = measure("assign", load, limit, move |i| {
        let (client, agent, acked) = (client.clone(), format!("{p}{i}"), a.clone());
        async move { super::assign_recorded(&client, agent, &acked).await }
    })
    .await;
    if let Some(cost) = cost {
        cost.report(report, "assign", assigned.ok).await;
    }

    let names: Arc<Vec<String>> = Arc::new(acked.lock().unwrap().clone());
    let gone = Arc::new(Mutex::new(Vec::new()));
    let (client, n, g) = (stack.client.clone(), names.clone(), gone.clone());
    let cost = Cost::start(&stack).await;
    let unassigned = measure(
        "unassign",
        load,
        Limit::Requests(names.len() as u64),
        move |i| {
            let (client, agent, gone) = (client.clone(), n[i as usize].clone(), g.clone());
            async move {
                client
                    .unassign(&agent)
                    .await
                    .map_err(|e| e.code().to_string())?;
                gone.lock().unwrap().push(agent);
                Ok(())
            }
        },
    )
    .await;
    if let Some(cost) = cost {
        cost.report(report, "unassign", unassigned.ok).await;
    }

    if let Some((rr, js)) = &base {
        let ratio = assigned.per_sec / rr.per_sec;
        report.ratio(
            "assign/s ÷ nats request-reply/s",
            ratio,
            Some("goal ≥ 0.25"),
        );
        let unassign_ratio = unassigned.per_sec / rr.per_sec;
        report.ratio(
            "unassign/s ÷ nats request-reply/s",
            unassign_ratio,
            Some("goal ≥ 0.25"),
        );
        if args.rate.is_none() {
            for (what, value) in [("assign", ratio), ("unassign", unassign_ratio)] {
                report.goal(
                    &format!("{what}/s ≥ 0.25 × request-reply/s"),
                    value >= THROUGHPUT_GOAL,
                    format!("{value:.3}"),
                );
            }
        }
        report.ratio(
            "assign/s ÷ jetstream publish/s",
            assigned.per_sec / js.per_sec,
            None,
        );
        report.ratio(
            "assign p99 ÷ request-reply p99",
            assigned.p99_us as f64 / rr.p99_us.max(1) as f64,
            None,
        );
    }
    report.figure("assign_p99_ms", assigned.p99_us as f64 / 1000.0);
    if args.rate.is_some() {
        for m in [&assigned, &unassigned] {
            let p99_ms = m.p99_us as f64 / 1000.0;
            report.goal(
                &format!("{} p99 ≤ 5 ms (open loop)", m.name),
                p99_ms <= P99_GOAL_MS,
                format!("{p99_ms:.1} ms"),
            );
        }
    }
    report.measurements.push(assigned);
    report.measurements.push(unassigned);
    let acked = Acknowledged {
        assigned: names.iter().cloned().collect(),
        unassigned: gone.lock().unwrap().iter().cloned().collect(),
    };
    verify::assignments(&stack, &prefix, &acked, report).await
}
