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
    let list = stack
        .client
        .list_all_assignments(&ListAssignmentsRequest::default())
        .await?;
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
    let expected: BTreeSet<&str> = acked
        .assigned
        .difference(&acked.unassigned)
        .map(String::as_str)
        .collect();
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
    // History is written by a consumer of the log: wait for it to catch up.
    let counted = wait_for("postgres history to catch up", Duration::from_secs(60), || {
        let (pg, pattern) = (&pg, &pattern);
        async move {
            let row = pg
                .query_one(
                    "SELECT count(*) FROM assignment_history WHERE agent_name LIKE $1 AND action IN ('assigned','unassigned')",
                    &[pattern],
                )
                .await
                .ok()?;
            let n: i64 = row.get(0);
            (n >= want_rows).then_some(n)
        }
    })
    .await;
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
    let once = |agents: &BTreeSet<String>, action: &str| {
        agents
            .iter()
            .filter(|a| counts.get(&((*a).clone(), action.to_string())).copied() != Some(1))
            .take(5)
            .cloned()
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
