//! The failover scenario's faults (`--kill`): each returns when the fault is over
//! (a stopped leader continued, a terminated process gone or a new leader found),
//! with the time it began, and reports what it saw on the way.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use shoal_protocol::{LOG_STREAM, LeaderInfo, LeaderReply, ShoalClient};
use shoal_testkit::wait_for;

use crate::args::{Args, Victim};
use crate::report::Report;
use crate::stack::{Coordinator, Stack};

/// How long to wait for a coordinator to lead, or a process to exit.
const PATIENCE: Duration = Duration::from_secs(30);

/// When the fault began: an instant for durations measured here, a time of day to
/// compare with the times the coordinators write into the log.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

impl Fault {
    fn now() -> Fault {
        Fault {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }

    fn ms(&self) -> u64 {
        self.at.elapsed().as_millis() as u64
    }
}

/// `"coordinator-1 (epoch 7)"`.
pub fn describe(leader: &LeaderInfo) -> String {
    format!("{} (epoch {})", leader.coordinator_id, leader.epoch)
}

/// The ids of the coordinators started here.
pub fn replica_ids(stack: &Stack) -> Vec<String> {
    stack.coordinators.iter().map(|c| c.id.clone()).collect()
}

/// What one replica says of the lease; quick, so a stopped replica costs 500 ms.
async fn leader_of(client: &ShoalClient, id: &str) -> Option<LeaderReply> {
    client
        .clone()
        .with_retry_for(Duration::ZERO)
        .with_timeout(Duration::from_millis(500))
        .leader_of(id)
        .await
        .ok()
}

/// Waits until one of `ids` says it holds the lease; returns the lease.
pub async fn wait_for_leader(client: &ShoalClient, ids: &[String]) -> anyhow::Result<LeaderInfo> {
    wait_for("a coordinator to lead", PATIENCE, || async move {
        for id in ids {
            if let Some(reply) = leader_of(client, id).await
                && reply.is_leader
            {
                return reply.leader;
            }
        }
        None
    })
    .await
}

/// Waits until a replica other than `old` leads (`old` itself is not asked: it may
/// be stopped).
async fn wait_for_leader_other_than(
    client: &ShoalClient,
    ids: &[String],
    old: &str,
) -> anyhow::Result<LeaderInfo> {
    let others: Vec<String> = ids.iter().filter(|id| *id != old).cloned().collect();
    wait_for_leader(client, &others)
        .await
        .with_context(|| format!("no coordinator took over from {old}"))
}

fn victim<'a>(stack: &'a mut Stack, id: &str) -> anyhow::Result<&'a mut Coordinator> {
    stack
        .coordinators
        .iter_mut()
        .find(|c| c.id == id)
        .with_context(|| format!("leader {id} is not one of the coordinators started here"))
}

/// Injects `args.kill` into the leader `leader` (or the log's leading nats-server).
pub async fn inject(
    args: &Args,
    stack: &mut Stack,
    leader: &LeaderInfo,
    report: &mut Report,
) -> anyhow::Result<Fault> {
    let client = stack.client.clone();
    let ids = replica_ids(stack);
    let old = leader.coordinator_id.as_str();
    let fault = match args.kill {
        Victim::Coordinator => {
            let victim = victim(stack, old)?;
            let fault = Fault::now();
            victim.process.kill()?;
            eprintln!("killed leader {old} with SIGKILL");
            wait_for_leader_other_than(&client, &ids, old).await?;
            report.figure("fault_to_new_leader_ms", fault.ms());
            fault
        }
        Victim::CoordinatorStop => {
            let victim = victim(stack, old)?;
            let fault = Fault::now();
            victim.process.pause()?;
            eprintln!("stopped leader {old} with SIGSTOP for {:?}", args.pause);
            let until = fault.at + args.pause;
            // A follower takes over only while the leader is stopped.
            let new_leader = tokio::time::timeout_at(
                until.into(),
                wait_for_leader_other_than(&client, &ids, old),
            )
            .await;
            if let Ok(Ok(_)) = new_leader {
                report.figure("fault_to_new_leader_ms", fault.ms());
            }
            // The fault's length: a schedule, not a wait for some state.
            tokio::time::sleep_until(until.into()).await;
            let resumed = Instant::now();
            victim.process.resume()?;
            eprintln!("continued {old} with SIGCONT");
            report.figure("stopped_ms", (resumed - fault.at).as_millis() as u64);
            if let Ok(Ok(_)) = new_leader {
                wait_for("the continued leader to step down", PATIENCE, || async {
                    let reply = leader_of(&client, old).await?;
                    (!reply.is_leader).then_some(())
                })
                .await?;
                report.figure(
                    "continue_to_step_down_ms",
                    resumed.elapsed().as_millis() as u64,
                );
            } else {
                eprintln!("no coordinator took over while {old} was stopped");
            }
            fault
        }
        Victim::CoordinatorTerm => {
            let victim = victim(stack, old)?;
            let fault = Fault::now();
            victim.process.terminate()?;
            eprintln!("terminated leader {old} with SIGTERM");
            let exit = async {
                let exited = victim.process.wait_exit(PATIENCE).await;
                (exited, fault.ms())
            };
            let taken = async {
                let taken = wait_for_leader_other_than(&client, &ids, old).await;
                (taken, fault.ms())
            };
            let ((exited, exit_ms), (taken, taken_ms)) = tokio::join!(exit, taken);
            match exited {
                Ok(status) => {
                    report.figure("sigterm_to_exit_ms", exit_ms);
                    report.figure("exit_status", status.to_string());
                }
                Err(e) => report.figure("exit_status", format!("still running: {e:#}")),
            }
            taken?;
            report.figure("fault_to_new_leader_ms", taken_ms);
            fault
        }
        Victim::Promote => {
            let target = ids
                .iter()
                .find(|id| *id != old)
                .context("no follower to promote")?;
            let fault = Fault::now();
            let reply = client
                .clone()
                .with_timeout(Duration::from_secs(10))
                .promote(target)
                .await;
            report.figure("promote_reply_ms", fault.ms());
            report.figure("promoted", target);
            report.figure(
                "promote_reply",
                match &reply {
                    Ok(r) if r.success => "success".to_string(),
                    Ok(_) => "success: false".to_string(),
                    Err(e) => format!("{}: {e}", e.code()),
                },
            );
            eprintln!("asked {old} to hand over to {target}: {reply:?}");
            wait_for_leader_other_than(&client, &ids, old).await?;
            report.figure("fault_to_new_leader_ms", fault.ms());
            fault
        }
        Victim::NatsServer | Victim::NatsServerTerm => {
            nats_server(args.kill, stack, report).await?
        }
        Victim::None => anyhow::bail!("--kill none has no fault to inject"),
    };
    Ok(fault)
}

/// Kills -9 or terminates the nats-server leading the assignment log, and waits for
/// the stream to elect another leader.
async fn nats_server(
    kill: Victim,
    stack: &mut Stack,
    report: &mut Report,
) -> anyhow::Result<Fault> {
    let nats = stack.client.nats().clone();
    let leader = log_stream_leader(&nats)
        .await?
        .context("the assignment log has no cluster leader: is it replicated?")?;
    let cluster = stack
        .cluster
        .as_mut()
        .with_context(|| format!("--kill {} needs --nats-servers 3", kill.name()))?;
    let server = cluster
        .servers
        .iter_mut()
        .find(|s| s.server_name() == leader)
        .with_context(|| format!("the log's leader {leader} is not a server started here"))?;
    let fault = Fault::now();
    let elected = if kill == Victim::NatsServer {
        server.kill()?;
        eprintln!("killed nats-server {leader} (leader of {LOG_STREAM}) with SIGKILL");
        wait_log_leader_other_than(&nats, &leader).await
    } else {
        // As an operator stops a server for maintenance: its streams' and
        // consumers' leaderships handed over first (at once, unlike an election),
        // then SIGTERM.
        let handed = step_down_leaders(&nats, &leader).await?;
        report.figure("leaderships_handed_over", handed);
        eprintln!(
            "terminating nats-server {leader} (leader of {LOG_STREAM}) with SIGTERM after handing over {handed} leaderships"
        );
        // Stopping waits for the exit (SIGKILL after 10 s); the election goes on
        // meanwhile.
        let exit = async {
            let stopped = server.stop().await;
            (stopped, fault.ms())
        };
        let ((stopped, exit_ms), elected) =
            tokio::join!(exit, wait_log_leader_other_than(&nats, &leader));
        stopped?;
        report.figure("nats_server_exit_ms", exit_ms);
        elected
    };
    let new_log_leader = elected?;
    report.figure("fault_to_new_log_stream_leader_ms", fault.ms());
    report.figure("nats_server", &leader);
    report.figure("new_log_stream_leader", &new_log_leader);
    Ok(fault)
}

/// Asks every stream and durable consumer led by `server` to step down, and waits
/// until none is; how many were asked.
async fn step_down_leaders(nats: &async_nats::Client, server: &str) -> anyhow::Result<usize> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(nats.clone());
    let mut asked = 0;
    let names: Vec<String> = js.stream_names().try_collect().await?;
    for name in names {
        let mut stream = js.get_stream(&name).await?;
        let info = stream.info().await?;
        if info.cluster.as_ref().and_then(|c| c.leader.as_deref()) == Some(server) {
            nats.request(format!("$JS.API.STREAM.LEADER.STEPDOWN.{name}"), "".into())
                .await
                .with_context(|| format!("stepping down the leader of {name}"))?;
            asked += 1;
        }
        let consumers: Vec<String> = stream.consumer_names().try_collect().await?;
        for consumer in consumers {
            let Ok(info) = stream.consumer_info(&consumer).await else {
                continue;
            };
            if info.cluster.as_ref().and_then(|c| c.leader.as_deref()) == Some(server)
                && info.config.durable_name.is_some()
            {
                nats.request(
                    format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{name}.{consumer}"),
                    "".into(),
                )
                .await
                .with_context(|| format!("stepping down the leader of {name}/{consumer}"))?;
                asked += 1;
            }
        }
    }
    wait_for("the stepped-down leaderships to move", PATIENCE, || async {
        log_stream_leader(nats)
            .await
            .ok()
            .flatten()
            .filter(|l| l != server)
    })
    .await?;
    Ok(asked)
}

async fn log_stream_leader(nats: &async_nats::Client) -> anyhow::Result<Option<String>> {
    let mut js = async_nats::jetstream::new(nats.clone());
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

async fn wait_log_leader_other_than(
    nats: &async_nats::Client,
    old: &str,
) -> anyhow::Result<String> {
    wait_for(
        "the assignment log to elect a new leader",
        PATIENCE,
        || async move {
            log_stream_leader(nats)
                .await
                .ok()
                .flatten()
                .filter(|l| l != old)
        },
    )
    .await
}
