//! `compaction`: a long history made fast (`--changes`, default 1,000,000: agents
//! assigned and unassigned again, on top of `--agents` that stay), then what a long
//! history costs: the log stream's size while it grew, how long a coordinator replica
//! started afterwards takes to be ready (snapshot loaded, log tailed to its end), and
//! the time from a kill -9 of the leader to the first acknowledged assign after it.
//! Verified: every acknowledged change in state and in Postgres exactly once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_protocol::{ClusterStats, Empty, Endpoint, LOG_STREAM};
use shoal_testkit::wait_for;

use crate::args::Args;
use crate::measure::{Limit, Load, run as measure};
use crate::report::Report;
use crate::stack::{Spawn, Stack};
use crate::verify::{self, Acknowledged};

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.spawn,
        "the compaction scenario starts and kills coordinators: run it with --spawn"
    );
    let mut stack = Stack::with_nodes(args, Spawn::ALL).await?;
    let leader = stack.wait_for_leader().await?;
    let prefix = super::run_prefix("compaction");
    let acked = Arc::new(Mutex::new(Vec::new()));

    // The agents that stay.
    let (client, p, a) = (stack.client.clone(), prefix.clone(), acked.clone());
    let load = Load::Closed {
        concurrency: args.concurrency,
    };
    let kept = measure(
        "assign (kept)",
        load,
        Limit::Requests(args.agents),
        move |i| {
            let (client, agent, acked) = (client.clone(), format!("{p}k{i}"), a.clone());
            async move { super::assign_recorded(&client, agent, &acked).await }
        },
    )
    .await;
    report.measurements.push(kept);

    // The history: each request an assign and an unassign of a new agent.
    let sizes = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sampler = tokio::spawn(sample_log(stack.client.nats().clone(), sizes.clone()));
    let churned = Arc::new(Mutex::new(Vec::new()));
    let gone = Arc::new(Mutex::new(Vec::new()));
    let (client, p) = (stack.client.clone(), prefix.clone());
    let (c, g) = (churned.clone(), gone.clone());
    let pairs = args.changes / 2;
    let churn = measure(
        "assign + unassign",
        load,
        Limit::Requests(pairs),
        move |i| {
            let (client, agent) = (client.clone(), format!("{p}c{i}"));
            let (churned, gone) = (c.clone(), g.clone());
            async move {
                super::assign_recorded(&client, agent.clone(), &churned).await?;
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
    sampler.abort();
    report.figure("changes_made", 2 * churn.ok + args.agents);
    report.measurements.push(churn);
    let sizes = sizes.lock().unwrap().clone();
    report.figure(
        "log_stream_bytes_max",
        sizes.iter().copied().max().unwrap_or(0),
    );
    let (first, last, bytes) = log_stream(stack.client.nats()).await?;
    report.figure("log_stream_bytes_at_end", bytes);
    report.figure("log_records_kept_at_end", last + 1 - first);
    report.figure("log_last_sequence", last);

    // A replica started now: ready once it has applied the log's end.
    let started = Instant::now();
    let id = "coordinator-late".to_string();
    stack.add_coordinator(&id)?;
    let quick = stack
        .client
        .clone()
        .with_retry_for(Duration::ZERO)
        .with_timeout(Duration::from_millis(500));
    let ready = wait_for(
        "the late replica to catch up",
        Duration::from_secs(120),
        || {
            let (quick, id) = (quick.clone(), id.clone());
            async move {
                let stats: ClusterStats = quick
                    .call_direct(Endpoint::CoordinatorStats, &id, &Empty {})
                    .await
                    .ok()?;
                (stats.log_seq >= last).then(|| started.elapsed())
            }
        },
    )
    .await?;
    report.figure("late_replica_ready_ms", ready.as_millis() as u64);

    // kill -9 of the leader: time to the first acknowledged assign sent after it.
    let victim = stack
        .coordinators
        .iter_mut()
        .find(|c| c.id == leader)
        .ok_or_else(|| anyhow::anyhow!("leader {leader} is not one started here"))?;
    victim.process.kill()?;
    let killed_at = Instant::now();
    let after = format!("{prefix}after-kill");
    let client = stack.client.clone().with_timeout(Duration::from_secs(1));
    super::assign_recorded(&client, after.clone(), &acked)
        .await
        .map_err(|code| anyhow::anyhow!("the assign after the kill failed: {code}"))?;
    report.figure(
        "kill_to_first_acknowledged_assign_ms",
        killed_at.elapsed().as_millis() as u64,
    );
    report.figure(
        "new_leader",
        stack.wait_for_leader_other_than(&leader).await?,
    );

    let mut assigned: std::collections::BTreeSet<String> =
        acked.lock().unwrap().iter().cloned().collect();
    assigned.extend(churned.lock().unwrap().iter().cloned());
    let acknowledged = Acknowledged {
        assigned,
        unassigned: gone.lock().unwrap().iter().cloned().collect(),
    };
    verify::assignments(&stack, &prefix, &acknowledged, report).await
}

/// (first sequence, last sequence, bytes) of the log stream.
async fn log_stream(nats: &async_nats::Client) -> anyhow::Result<(u64, u64, u64)> {
    let js = async_nats::jetstream::new(nats.clone());
    let mut stream = js.get_stream(LOG_STREAM).await?;
    let state = stream.info().await?.state.clone();
    Ok((state.first_sequence, state.last_sequence, state.bytes))
}

/// Samples the log stream's size every second (a schedule, not a wait).
async fn sample_log(nats: async_nats::Client, sizes: Arc<Mutex<Vec<u64>>>) {
    loop {
        if let Ok((_, _, bytes)) = log_stream(&nats).await {
            sizes.lock().unwrap().push(bytes);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
