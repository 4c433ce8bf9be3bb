//! `failover`: a steady stream of assigns with one fault a third of the way in
//! (`--kill`, with `--spawn`): kill -9, SIGSTOP (for `--pause`, then SIGCONT) or
//! SIGTERM of the leader coordinator, a `leader.promote` to a follower, kill -9 or
//! SIGTERM of the nats-server leading the assignment log, or none at all. Measures
//! the time from the fault to the first acknowledged assign sent after it, the time
//! without a leader (until the next term's epoch-start record), client timeouts apart
//! from error replies, and the leadership changes of the run; verifies that no
//! acknowledged assignment was lost or duplicated and that the log holds no write of
//! a deposed leader after a newer term began.

pub mod attempts;
mod faults;
mod probe;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_protocol::LeaderInfo;

use crate::args::{Args, Victim};
use crate::measure::{Limit, run as measure};
use crate::report::Report;
use crate::stack::{Spawn, Stack};
use crate::verify::{self, Acknowledged};

use faults::Fault;
use watch::Watch;

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.spawn,
        "the failover scenario injects its fault into processes it started: run it with --spawn"
    );
    anyhow::ensure!(
        !args.kill.is_nats_server() || args.nats_servers >= 3,
        "--kill {} needs a cluster that survives losing one server: add --nats-servers 3",
        args.kill.name()
    );
    let mut stack = Stack::with_nodes(
        args,
        Spawn {
            coordinators: 3,
            ..Spawn::ALL
        },
    )
    .await?;
    let ids = faults::replica_ids(&stack);
    let leader = faults::wait_for_leader(&stack.client, &ids).await?;
    let watch = Watch::start(&stack).await?;
    let duration = args.duration.unwrap_or(Duration::from_secs(15));
    let prefix = super::run_prefix("failover");
    let record = Arc::new(Mutex::new(attempts::Record::default()));
    let client = attempts::client(&stack.client);
    let (p, r) = (prefix.clone(), record.clone());
    let load_started = Instant::now();
    let stream = tokio::spawn(measure(
        "assign during failover",
        args.load(),
        Limit::Duration(duration),
        move |i| {
            let (client, agent, record) = (client.clone(), format!("{p}{i}"), r.clone());
            async move { attempts::assign(&client, agent, &record).await }
        },
    ));
    let probing = tokio_util::sync::CancellationToken::new();
    let probes = tokio::spawn(probe::run(
        stack.client.clone(),
        prefix.clone(),
        probing.clone(),
    ));
    report.figure("fault", args.kill.name());
    report.figure("leader_before", faults::describe(&leader));
    let fault = if args.kill == Victim::None {
        None
    } else {
        // Let the stream run a third of the way before the fault (a schedule, not a
        // wait for some state).
        tokio::time::sleep(duration / 3).await;
        let fault = faults::inject(args, &mut stack, &leader, report).await?;
        report.figure("fault_at_ms", (fault.at - load_started).as_millis() as u64);
        Some(fault)
    };
    let measured = stream.await?;
    probing.cancel();
    let probes = probes.await?;
    let leader_after = faults::wait_for_leader(&stack.client, &ids).await?;
    report.figure("leader_after", faults::describe(&leader_after));
    watch.caught_up().await?;
    let record = std::mem::take(&mut *record.lock().unwrap());
    writes(&record, fault, report);
    probed(&probes, fault, report);
    client_errors(
        &record,
        &measured.errors,
        fault.map_or(load_started, |f| f.at),
        report,
    );
    leadership(&watch, &leader, fault, report);
    report.measurements.push(measured);
    let acked = Acknowledged {
        assigned: record.acked.into_iter().chain(probes.agents).collect(),
        ..Default::default()
    };
    verify::assignments(&stack, &prefix, &acked, report).await
}

/// What the probes saw: how soon after the fault a fresh request was acknowledged,
/// and how many of them got no reply at all.
fn probed(probes: &probe::Probes, fault: Option<Fault>, report: &mut Report) {
    report.figure("probes_sent", probes.sent);
    report.figure("probe_timeouts", probes.timeouts);
    if let Some(fault) = fault {
        report.figure(
            "fault_to_first_acknowledged_probe_ms",
            probe::first_ack_after(probes, fault.at).map(|g| g.as_millis() as u64),
        );
    }
}

/// How long writes waited: for the first acknowledged assign sent after the fault,
/// and the longest stretch with none acknowledged at all, over the run and from the
/// fault on. A graceful fault (SIGTERM of a nats-server) may still let requests sent
/// just after it through and stall writes a moment later: the goal takes the longer
/// of the two.
fn writes(record: &attempts::Record, fault: Option<Fault>, report: &mut Report) {
    let mut acks: Vec<Instant> = record.successes.iter().map(|(_, done)| *done).collect();
    acks.sort();
    let longest_silence = acks.windows(2).map(|w| w[1] - w[0]).max();
    report.figure(
        "longest_time_without_an_acknowledged_assign_ms",
        longest_silence.map(|g| g.as_millis() as u64),
    );
    let Some(fault) = fault else { return };
    let write_gap = record
        .successes
        .iter()
        .filter(|(started, _)| *started >= fault.at)
        .map(|(_, done)| *done - fault.at)
        .min();
    report.figure(
        "fault_to_first_acknowledged_assign_ms",
        write_gap.map(|g| g.as_millis() as u64),
    );
    let stall = acks
        .windows(2)
        .filter(|w| w[1] >= fault.at)
        .map(|w| w[1] - w[0].max(fault.at))
        .max();
    report.figure(
        "longest_time_without_an_acknowledged_assign_after_fault_ms",
        stall.map(|g| g.as_millis() as u64),
    );
    let worst = write_gap.max(stall).filter(|_| write_gap.is_some());
    report.goal(
        "failover ≤ 4 s",
        worst.is_some_and(|g| g <= Duration::from_secs(4)),
        format!(
            "{write_gap:?} from the fault until an assign sent after it was acknowledged, \
             {stall:?} the longest stretch without an acknowledged assign from the fault on"
        ),
    );
}

/// Every request that got no reply at all, apart from those answered with an error.
fn client_errors(
    record: &attempts::Record,
    failed: &BTreeMap<String, u64>,
    since: Instant,
    report: &mut Report,
) {
    report.figure("client_requests", record.attempts);
    report.figure("client_timeouts", record.timeouts.len());
    if let (Some(first), Some(last)) = (record.timeouts.iter().min(), record.timeouts.iter().max())
    {
        // Relative to the fault (to the start of the load without one); negative
        // when before it.
        let rel = |t: &Instant| {
            if *t >= since {
                (*t - since).as_millis() as i64
            } else {
                -((since - *t).as_millis() as i64)
            }
        };
        report.figure(
            "client_timeouts_sent_ms",
            serde_json::json!({ "first": rel(first), "last": rel(last) }),
        );
    }
    report.figure("client_error_replies", &record.error_replies);
    report.figure("assigns_failed", failed);
}

/// The terms that began during the run, and any write of a deposed leader that the
/// log accepted after a newer term began.
fn leadership(watch: &Watch, before: &LeaderInfo, fault: Option<Fault>, report: &mut Report) {
    let (terms, stale, old_leader_stale, records, unseen, unreadable, wins) = watch.read(|s| {
        (
            s.terms_after(before.epoch),
            s.stale.clone(),
            s.stale.iter().filter(|r| r.epoch == before.epoch).count(),
            s.records,
            s.unseen,
            s.unreadable,
            s.lease_wins
                .iter()
                .filter(|l| l.epoch > before.epoch)
                .count(),
        )
    });
    let mut previous = before.coordinator_id.as_str();
    let mut handovers = 0;
    for term in &terms {
        if term.leader_id != previous {
            handovers += 1;
        }
        previous = &term.leader_id;
    }
    report.figure("leadership_changes", terms.len());
    report.figure("leadership_changes_to_another_coordinator", handovers);
    report.figure("lease_wins_announced", wins);
    report.figure(
        "terms",
        terms
            .iter()
            .map(|t| format!("{} (epoch {}, log seq {})", t.leader_id, t.epoch, t.seq))
            .collect::<Vec<_>>(),
    );
    if let Some(fault) = fault {
        // Until the new leader's own time on its epoch-start record: the watcher may
        // read the record late while the log has no leader. None when no new term
        // began (a leader that kept its term through the fault).
        let gap = terms
            .first()
            .map(|first| (first.at - fault.wall).num_milliseconds());
        report.figure("time_without_a_leader_ms", gap);
    }
    report.figure("log_records_read", records);
    report.figure("old_leader_records_after_new_term", old_leader_stale);
    report.figure("older_epoch_records_after_newer", stale.len());
    if unreadable > 0 {
        report.figure("log_records_unreadable", unreadable);
    }
    report.check(
        "no write of a deposed leader after a newer term",
        stale.is_empty() && unseen == 0,
        format!(
            "{old_leader_stale} records of {} after a newer term began, {} of any older epoch \
             (e.g. {:?}); {unseen} log records not seen",
            faults::describe(before),
            stale.len(),
            stale
                .iter()
                .take(3)
                .map(|s| (s.seq, &s.leader_id, s.epoch))
                .collect::<Vec<_>>(),
        ),
    );
    if fault.is_none() {
        report.goal(
            "no leadership change under load",
            terms.is_empty(),
            format!("{} new terms without a fault", terms.len()),
        );
    }
}
