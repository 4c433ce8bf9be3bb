//! End-of-run verification: every acknowledged assignment is in the coordinator's
//! state and in Postgres history exactly once, no agent is on two nodes, no event id
//! repeats. A failed check makes the run exit non-zero.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_protocol::ListAssignmentsRequest;
use shoal_testkit::wait_for;

use crate::report::Report;
use crate::stack::Stack;

/// What the run was told: agents acknowledged as assigned, and those acknowledged as
/// unassigned afterwards.
#[derive(Default)]
pub struct Acknowledged {
    pub assigned: BTreeSet<String>,
    pub unassigned: BTreeSet<String>,
}

pub async fn assignments(
    stack: &Stack,
    prefix: &str,
    acked: &Acknowledged,
    report: &mut Report,
) -> anyhow::Result<()> {
    let expected: BTreeSet<&str> = acked
        .assigned
        .difference(&acked.unassigned)
        .map(String::as_str)
        .collect();
    let list = converged_list(stack, prefix, &expected, &acked.unassigned, report).await?;
    let ours: Vec<_> = list
        .iter()
        .filter(|a| a.agent_name.starts_with(prefix))
        .collect();
    let mut per_agent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in &ours {
        per_agent
            .entry(a.agent_name.as_str())
            .or_default()
            .push(a.node_id.as_str());
    }
    let present: BTreeSet<&str> = per_agent.keys().copied().collect();
    let missing: Vec<_> = expected.difference(&present).take(5).collect();
    // An assign whose reply was lost (the leader died after the append) may be in the
    // state without having been acknowledged; that is not a loss. An acknowledged
    // unassign still present is.
    let unexpected: Vec<_> = acked
        .unassigned
        .iter()
        .filter(|a| present.contains(a.as_str()))
        .take(5)
        .collect();
    let unacknowledged = present
        .difference(&expected)
        .filter(|a| !acked.unassigned.contains(**a))
        .count();
    report.figure("committed_without_acknowledgement", unacknowledged);
    let doubled: Vec<_> = per_agent
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(a, _)| *a)
        .take(5)
        .collect();
    report.check(
        "acknowledged assignments in coordinator state",
        missing.is_empty(),
        format!(
            "{} expected, {} present, missing e.g. {missing:?}",
            expected.len(),
            present.len()
        ),
    );
    report.check(
        "unassigned agents gone from state",
        unexpected.is_empty(),
        format!("still present e.g. {unexpected:?}"),
    );
    report.check(
        "no agent on two nodes",
        doubled.is_empty(),
        format!("on several nodes e.g. {doubled:?}"),
    );

    let Some(pg) = stack.postgres().await? else {
        report.check("history in postgres", true, "skipped: no --database-url");
        return Ok(());
    };
    let pattern = format!("{prefix}%");
    let want_rows = (acked.assigned.len() + acked.unassigned.len()) as i64;
    // History is written by a consumer of the log: wait until every acknowledged
    // change has its row (a batch whose ack was lost with a NATS server is delivered
    // again after the consumer's ack wait), or the deadline.
    let read_counts = || async {
        let rows = pg
            .query(
                "SELECT agent_name, action, count(*) FROM assignment_history WHERE agent_name LIKE $1 \
                 AND action IN ('assigned','unassigned') GROUP BY agent_name, action",
                &[&pattern],
            )
            .await?;
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        for row in rows {
            counts.insert((row.get(0), row.get(1)), row.get(2));
        }
        anyhow::Ok(counts)
    };
    let complete = |counts: &BTreeMap<(String, String), i64>| {
        let has = |agents: &BTreeSet<String>, action: &str| {
            agents
                .iter()
                .all(|a| counts.contains_key(&(a.clone(), action.to_string())))
        };
        has(&acked.assigned, "assigned") && has(&acked.unassigned, "unassigned")
    };
    let waiting_since = std::time::Instant::now();
    let counted = wait_for(
        "postgres history to catch up",
        Duration::from_secs(60),
        || async { read_counts().await.ok().filter(|c| complete(c)) },
    )
    .await;
    report.figure(
        "history_complete_after_ms",
        waiting_since.elapsed().as_millis() as u64,
    );
    let counts = match &counted {
        Ok(counts) => counts.clone(),
        Err(_) => read_counts().await?,
    };
    let once = |agents: &BTreeSet<String>, action: &str| {
        agents
            .iter()
            .filter(|a| counts.get(&((*a).clone(), action.to_string())).copied() != Some(1))
            .take(5)
            .map(|a| {
                let n = counts
                    .get(&(a.clone(), action.to_string()))
                    .copied()
                    .unwrap_or(0);
                format!("{a} ×{n}")
            })
            .collect::<Vec<_>>()
    };
    let bad_assigned = once(&acked.assigned, "assigned");
    let bad_unassigned = once(&acked.unassigned, "unassigned");
    report.check(
        "each acknowledged assign in history exactly once",
        counted.is_ok() && bad_assigned.is_empty(),
        format!("{want_rows} rows expected; wrong count for e.g. {bad_assigned:?}"),
    );
    report.check(
        "each acknowledged unassign in history exactly once",
        bad_unassigned.is_empty(),
        format!("wrong count for e.g. {bad_unassigned:?}"),
    );
    let dup: i64 = pg
        .query_one(
            "SELECT count(*) - count(DISTINCT event_id) FROM assignment_history WHERE agent_name LIKE $1",
            &[&pattern],
        )
        .await?
        .get(0);
    report.check(
        "no duplicate event ids",
        dup == 0,
        format!("{dup} duplicates"),
    );
    Ok(())
}

/// The assignments as every live coordinator replica holds them, once each has
/// applied every acknowledged change (reads come from each replica's tail of the
/// log, which may trail the leader; after a lost NATS server a tail restarts its
/// consumer). Returns the list of the last replica asked: if one never converges
/// within the deadline, its list, so the checks below name what it lacks.
/// Each replica's list, once it holds every acknowledged assignment and none of the
/// acknowledged unassignments (its tail has applied them all), or as it is after
/// 30 s.
async fn converged_list(
    stack: &Stack,
    prefix: &str,
    expected: &BTreeSet<&str>,
    unassigned: &BTreeSet<String>,
    report: &mut Report,
) -> anyhow::Result<Vec<shoal_protocol::Assignment>> {
    let replicas: Vec<Option<&str>> = if stack.coordinators.is_empty() {
        vec![None]
    } else {
        stack
            .coordinators
            .iter()
            .map(|c| Some(c.id.as_str()))
            .collect()
    };
    let mut last = Vec::new();
    let mut asked = 0;
    for replica in replicas {
        let started = std::time::Instant::now();
        // No retry on no-responders: that is how a killed replica answers.
        let quick = stack.client.clone().with_retry_for(Duration::ZERO);
        let client = &quick;
        let holds_all = |list: &[shoal_protocol::Assignment]| {
            let present: BTreeSet<&str> = list
                .iter()
                .map(|a| a.agent_name.as_str())
                .filter(|a| a.starts_with(prefix))
                .collect();
            expected.is_subset(&present) && !unassigned.iter().any(|a| present.contains(a.as_str()))
        };
        let converged = wait_for(
            "every acknowledged assignment on each coordinator replica",
            Duration::from_secs(30),
            || async move {
                match client
                    .list_all_assignments_on(replica, &ListAssignmentsRequest::default())
                    .await
                {
                    Ok(list) if holds_all(&list) => Some(Some(list)),
                    // A killed replica is not one to read from.
                    Err(shoal_protocol::ClientError::NoResponders { .. }) if replica.is_some() => {
                        Some(None)
                    }
                    _ => None,
                }
            },
        )
        .await;
        match converged {
            Ok(Some(list)) => {
                asked += 1;
                let waited = started.elapsed().as_millis() as u64;
                report.figure(
                    &format!("replica_{}_caught_up_ms", replica.unwrap_or("any")),
                    waited,
                );
                last = list;
            }
            Ok(None) => {}
            Err(_) => {
                // Not converged: its own list makes the checks below fail with names.
                last = stack
                    .client
                    .list_all_assignments_on(replica, &ListAssignmentsRequest::default())
                    .await?;
                asked += 1;
                break;
            }
        }
    }
    report.figure("coordinator_replicas_checked", asked);
    Ok(last)
}
