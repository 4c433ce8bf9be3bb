//! `failover`: a steady stream of assigns while the leader coordinator (or, with
//! `--kill nats-server`, the nats-server leading the assignment log) is killed with
//! -9 a third of the way in (`--spawn`); measures the time from the kill to the
//! first acknowledged assign after it, counts client errors by code, and verifies
//! that no acknowledged assignment was lost or duplicated.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_protocol::LOG_STREAM;

use crate::args::{Args, Victim};
use crate::measure::{Limit, run as measure};
use crate::report::Report;
use crate::stack::{Spawn, Stack};
use crate::verify::{self, Acknowledged};

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.spawn,
        "the failover scenario kills a process it started: run it with --spawn"
    );
    anyhow::ensure!(
        args.kill == Victim::Coordinator || args.nats_servers >= 3,
        "--kill nats-server needs a cluster that survives losing one server: add --nats-servers 3"
    );
    let mut stack = Stack::with_nodes(
        args,
        Spawn {
            coordinators: 3,
            ..Spawn::ALL
        },
    )
    .await?;
    let leader = stack.wait_for_leader().await?;
    let duration = args.duration.unwrap_or(Duration::from_secs(15));
    let prefix = super::run_prefix("failover");
    let acked = Arc::new(Mutex::new(Vec::new()));
    // (started, acknowledged) of every successful assign.
    let successes = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
    // A short request timeout: a request caught by the kill is retried (same
    // request_id) after 1 s instead of waiting out the default.
    let client = stack.client.clone().with_timeout(Duration::from_secs(1));
    let (client, p, a, s) = (client, prefix.clone(), acked.clone(), successes.clone());
    let load = args.load();
    let stream = tokio::spawn(measure(
        "assign during failover",
        load,
        Limit::Duration(duration),
        move |i| {
            let (client, agent, acked, successes) =
                (client.clone(), format!("{p}{i}"), a.clone(), s.clone());
            async move {
                let started = Instant::now();
                super::assign_recorded(&client, agent, &acked).await?;
                successes.lock().unwrap().push((started, Instant::now()));
                Ok(())
            }
        },
    ));
    // Let the stream run a third of the way before the fault (a schedule, not a wait
    // for some state).
    tokio::time::sleep(duration / 3).await;
    let mut killed_at = Instant::now();
    let new_leader = match args.kill {
        Victim::Coordinator => {
            let victim = stack
                .coordinators
                .iter_mut()
                .find(|c| c.id == leader)
                .ok_or_else(|| {
                    anyhow::anyhow!("leader {leader} is not one of the coordinators started here")
                })?;
            victim.process.kill()?;
            eprintln!("killed leader {leader} with SIGKILL");
            report.figure("killed_leader", &leader);
            let new_leader = stack.wait_for_leader_other_than(&leader).await?;
            report.figure(
                "kill_to_new_leader_ms",
                killed_at.elapsed().as_millis() as u64,
            );
            new_leader
        }
        Victim::NatsServer => {
            let (server, at) = kill_log_leader(&mut stack).await?;
            // From the kill itself, not from looking up which server to kill.
            killed_at = at;
            eprintln!("killed nats-server {server} (leader of {LOG_STREAM}) with SIGKILL");
            report.figure("killed_nats_server", &server);
            report.figure("leader_before", &leader);
            let new_log_leader = wait_log_leader_other_than(&stack, &server).await?;
            report.figure("new_log_stream_leader", &new_log_leader);
            report.figure(
                "kill_to_new_log_stream_leader_ms",
                killed_at.elapsed().as_millis() as u64,
            );
            stack.wait_for_leader().await?
        }
    };
    let measured = stream.await?;
    let mut acks = successes.lock().unwrap().clone();
    acks.sort_by_key(|(_, done)| *done);
    // Until a request sent after the kill is acknowledged: how long new writes had
    // to wait for the new leader.
    let write_gap = acks
        .iter()
        .filter(|(started, _)| *started >= killed_at)
        .map(|(_, done)| *done - killed_at)
        .min();
    // The longest stretch with no acknowledged write at all.
    let longest_silence = acks.windows(2).map(|w| w[1].1 - w[0].1).max();
    report.figure("new_leader", &new_leader);
    report.figure(
        "kill_to_first_acknowledged_assign_ms",
        write_gap.map(|g| g.as_millis() as u64),
    );
    report.figure(
        "longest_time_without_an_acknowledged_assign_ms",
        longest_silence.map(|g| g.as_millis() as u64),
    );
    report.goal(
        "failover ≤ 4 s",
        write_gap.is_some_and(|g| g <= Duration::from_secs(4)),
        format!("{write_gap:?} from kill -9 until an assign sent after it was acknowledged"),
    );
    report.measurements.push(measured);
    let acked = Acknowledged {
        assigned: acked.lock().unwrap().iter().cloned().collect(),
        ..Default::default()
    };
    verify::assignments(&stack, &prefix, &acked, report).await
}

async fn log_stream_leader(stack: &Stack) -> anyhow::Result<Option<String>> {
    let mut js = async_nats::jetstream::new(stack.client.nats().clone());
    // Short, as the coordinators' own: a request that reached the dead server is
    // asked again after 1 s, not after the 5 s default.
    js.set_timeout(Duration::from_secs(1));
    let mut stream = js
        .get_stream(LOG_STREAM)
        .await
        .with_context(|| format!("looking up the {LOG_STREAM} stream"))?;
    let info = stream.info().await?;
    Ok(info.cluster.as_ref().and_then(|c| c.leader.clone()))
}

/// Kills -9 the nats-server leading the assignment log; returns its name and when.
async fn kill_log_leader(stack: &mut Stack) -> anyhow::Result<(String, Instant)> {
    let leader = log_stream_leader(stack)
        .await?
        .context("the assignment log has no cluster leader: is it replicated?")?;
    let cluster = stack
        .cluster
        .as_mut()
        .context("--kill nats-server needs --nats-servers 3")?;
    let server = cluster
        .servers
        .iter_mut()
        .find(|s| s.server_name() == leader)
        .with_context(|| format!("the log's leader {leader} is not a server started here"))?;
    let at = Instant::now();
    server.kill()?;
    Ok((leader, at))
}

async fn wait_log_leader_other_than(stack: &Stack, old: &str) -> anyhow::Result<String> {
    shoal_testkit::wait_for(
        "the assignment log to elect a new leader",
        Duration::from_secs(30),
        || async move {
            log_stream_leader(stack)
                .await
                .ok()
                .flatten()
                .filter(|l| l != old)
        },
    )
    .await
}
