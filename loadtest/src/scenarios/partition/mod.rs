//! `partition`: network cuts under a stream of assigns, on a private stack whose
//! processes sit on test hosts of their own ([`hosts`]): a nats-server's routes
//! cut with its clients still attached, the leader coordinator cut off from the
//! NATS majority, the registry cut off, a real node cut off ([`cuts`]). Each cut
//! reports its detection and the writes' longest stall against the goal (within
//! detection plus 1 s); after the last one heals, [`check`] reads the log,
//! Postgres and every node's own agents for the invariants.

mod check;
mod cuts;
mod hosts;
mod streams;
mod watchers;

use std::collections::BTreeMap;

use crate::args::Args;
use crate::report::Report;
use crate::scenarios::failover::watch::Watch;
use crate::stack::Stack;
use crate::verify::Acknowledged;

use hosts::Hosts;
use watchers::{NodeEvents, Writer};

/// Acknowledged assigns before the first cut, so every node holds agents.
const WARM_UP: usize = 200;

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.spawn,
        "the partition scenario cuts links of processes it started: run it with --spawn (as root)"
    );
    anyhow::ensure!(!args.cut.is_empty(), "--cut names no cut");
    // Declared first: dropped after the processes inside them.
    let hosts = Hosts::new()?;
    let stack = hosts.stack(args).await?;
    drive(args, &hosts, &stack, report).await
}

/// The cuts and the checker, on the started stack.
async fn drive(
    args: &Args,
    hosts: &Hosts,
    stack: &Stack,
    report: &mut Report,
) -> anyhow::Result<()> {
    let watch = Watch::start(stack).await?;
    let events = NodeEvents::record(stack).await?;
    let prefix = super::run_prefix("partition");
    let writer = Writer::start(stack, &prefix, args.concurrency);
    writer.wait_acked(WARM_UP).await?;
    report.figure(
        "cuts",
        args.cut.iter().map(|c| c.name()).collect::<Vec<_>>(),
    );
    report.figure("cut_for_ms", args.cut_for.as_millis() as u64);
    for cut in &args.cut {
        cuts::run(
            *cut,
            hosts,
            stack,
            (&writer, &events, &watch),
            args.cut_for,
            report,
        )
        .await?;
    }
    let (record, unassigned, failed) = writer.stop().await;
    report.figure("assigns_acknowledged", record.acked.len());
    report.figure("unassigns_acknowledged", unassigned.len());
    report.figure("client_timeouts", record.timeouts.len());
    report.figure("client_error_replies", &record.error_replies);
    let mut failed_by_code: BTreeMap<String, u64> = BTreeMap::new();
    for (_, code) in &failed {
        *failed_by_code.entry(code.clone()).or_default() += 1;
    }
    report.check(
        "every assign acknowledged in the end (retried through the cuts)",
        failed.is_empty(),
        format!("failed, by last error: {failed_by_code:?}"),
    );
    let acked = Acknowledged {
        assigned: record.acked.into_iter().collect(),
        unassigned: unassigned.into_iter().collect(),
    };
    check::run(stack, &watch, &prefix, &acked, report).await
}
