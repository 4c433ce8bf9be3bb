//! The partition scenario's verdict, read after every cut has healed: the log, the
//! history in Postgres, the coordinator's state and every node's own agent set.
//! - every acknowledged assign present exactly once (state and history);
//! - the log never places an agent on a second node, and never holds a change of
//!   an epoch after a newer term began;
//! - the history in Postgres equal to the log, change for change;
//! - every node runs exactly what the coordinator placed on it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use shoal_protocol::{DigestSum, Heartbeat};
use shoal_testkit::wait_for;

use super::hosts::CUT_NODE;
use crate::report::Report;
use crate::scenarios::failover::watch::{Logged, Watch};
use crate::stack::Stack;
use crate::verify::{self, Acknowledged};

const PATIENCE: Duration = Duration::from_secs(60);

pub async fn run(
    stack: &Stack,
    watch: &Watch,
    prefix: &str,
    acked: &Acknowledged,
    report: &mut Report,
) -> anyhow::Result<()> {
    verify::assignments(stack, prefix, acked, report).await?;
    watch.caught_up().await?;
    let (stale, doubled, unseen, logged) = watch.read(|s| {
        (
            s.stale.len(),
            s.doubled.clone(),
            s.unseen,
            s.changes.clone(),
        )
    });
    report.check(
        "log: no change of an epoch after a newer term began",
        stale == 0 && unseen == 0,
        format!("{stale} stale records, {unseen} records not seen"),
    );
    report.check(
        "log: no agent placed on a second node",
        doubled.is_empty(),
        format!(
            "{} doubled placements: {:?}",
            doubled.len(),
            &doubled[..doubled.len().min(3)]
        ),
    );
    history_equals_log(stack, &logged, report).await?;
    nodes_run_what_they_were_given(stack, report).await
}

/// Waits for the history to hold as many changes as the log, then compares them.
async fn history_equals_log(
    stack: &Stack,
    logged: &[Logged],
    report: &mut Report,
) -> anyhow::Result<()> {
    let pg = stack
        .postgres()
        .await?
        .context("the partition scenario needs its Postgres")?;
    let rows = wait_for("the history to catch up with the log", PATIENCE, || async {
        let rows = pg
            .query(
                "SELECT log_seq, log_index, agent_name, action FROM assignment_history \
                     ORDER BY log_seq, log_index",
                &[],
            )
            .await
            .ok()?;
        (rows.len() >= logged.len()).then_some(rows)
    })
    .await?;
    let history: Vec<(u64, usize, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0) as u64,
                r.get::<_, i32>(1) as usize,
                r.get(2),
                r.get(3),
            )
        })
        .collect();
    let log: Vec<(u64, usize, String, String)> = logged
        .iter()
        .map(|l| {
            (
                l.seq,
                l.index,
                l.agent.clone(),
                l.action.as_str().to_string(),
            )
        })
        .collect();
    let differ: Vec<_> = log
        .iter()
        .zip(history.iter())
        .filter(|(l, h)| l != h)
        .take(3)
        .collect();
    report.figure("log_changes", log.len());
    report.figure("history_rows", history.len());
    report.check(
        "history in Postgres equal to the log",
        log.len() == history.len() && differ.is_empty(),
        format!(
            "{} changes in the log, {} rows; first differences (log, history): {differ:?}",
            log.len(),
            history.len()
        ),
    );
    Ok(())
}

/// Every simulated node's own agent set, and the real node's (the digest in its
/// heartbeat), equal to what the coordinator placed on it; no agent in two nodes'
/// own sets.
async fn nodes_run_what_they_were_given(stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    let sim = stack.nodes.as_ref().context("no simulated nodes")?;
    let outcome = wait_for(
        "every node to run what the coordinator placed on it",
        PATIENCE,
        || async {
            let placed = stack.client.running_by_node().await.ok()?;
            let mut mismatched = Vec::new();
            let mut running: BTreeMap<String, usize> = BTreeMap::new();
            for i in 0..sim.len() {
                let id = sim.id(i);
                let own: BTreeSet<String> = sim.agents(i).into_iter().collect();
                for a in &own {
                    *running.entry(a.clone()).or_default() += 1;
                }
                if own != placed.get(&id).cloned().unwrap_or_default() {
                    mismatched.push(id);
                }
            }
            let real = placed.get(CUT_NODE).cloned().unwrap_or_default();
            let digest = real_node_digest(stack).await.ok()?;
            if !DigestSum::of(real.iter().map(String::as_str)).matches(&digest) {
                mismatched.push(CUT_NODE.to_string());
            }
            for a in real {
                *running.entry(a).or_default() += 1;
            }
            let twice = running.values().filter(|n| **n > 1).count();
            (mismatched.is_empty() && twice == 0).then_some(running.len())
        },
    )
    .await;
    let detail = match &outcome {
        Ok(n) => format!("{n} agents, each running on exactly the node it is placed on"),
        Err(e) => format!("{e:#}"),
    };
    report.check(
        "nodes: each runs exactly its placed agents, none on two nodes",
        outcome.is_ok(),
        detail,
    );
    Ok(())
}

/// The agents digest of the real node's next heartbeat.
async fn real_node_digest(stack: &Stack) -> anyhow::Result<shoal_protocol::AgentsDigest> {
    let nats = stack.client.nats();
    let mut sub = nats
        .subscribe(stack.subjects.node_heartbeat(CUT_NODE))
        .await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .context("no heartbeat from the real node within 5 s")?
            .context("heartbeat subscription ended")?;
        let hb: Heartbeat = shoal_protocol::decode(&msg.payload)?;
        if let Some(d) = hb.agents_digest {
            return Ok(d);
        }
    }
}
