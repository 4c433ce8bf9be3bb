//! The assignment history in Postgres, read back and checked against what the
//! writer was acknowledged.

use std::collections::BTreeMap;

use anyhow::Result;

use super::writer::Acknowledged;

/// One row of `assignment_history`.
pub struct HistoryRow {
    pub log_seq: i64,
    pub log_index: i32,
    pub agent: String,
    pub action: String,
    pub node: Option<String>,
    pub previous: Option<String>,
    pub epoch: i64,
}

pub async fn history_rows(pg: &tokio_postgres::Client) -> Result<Vec<HistoryRow>> {
    let rows = pg
        .query(
            "SELECT log_seq, log_index, agent_name, action, node_id, previous_node_id, epoch \
             FROM assignment_history ORDER BY log_seq, log_index",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HistoryRow {
            log_seq: r.get(0),
            log_index: r.get(1),
            agent: r.get(2),
            action: r.get(3),
            node: r.get(4),
            previous: r.get(5),
            epoch: r.get(6),
        })
        .collect())
}

/// What the history must never show: an epoch going back (a deposed leader's write
/// accepted after its successor's), an agent placed while it is on another node, an
/// acknowledged assign recorded other than exactly once.
pub fn check_history(rows: &[HistoryRow], acknowledged: &Acknowledged) -> Vec<String> {
    let mut violations = Vec::new();
    let mut epoch = 0;
    let mut placed: BTreeMap<&str, &str> = BTreeMap::new();
    let mut assigned: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unassigned: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        let at = format!("log {}.{}", r.log_seq, r.log_index);
        if r.epoch < epoch {
            violations.push(format!("{at}: epoch {} after epoch {epoch}", r.epoch));
        }
        epoch = epoch.max(r.epoch);
        let agent = r.agent.as_str();
        match (r.action.as_str(), r.node.as_deref()) {
            ("assigned", Some(node)) => {
                *assigned.entry(agent).or_default() += 1;
                if let Some(other) = placed.insert(agent, node) {
                    violations.push(format!("{at}: {agent} assigned to {node} while on {other}"));
                }
            }
            ("reassigned" | "migrated", Some(node)) => {
                if let (Some(on), Some(prev)) = (placed.get(agent), r.previous.as_deref())
                    && *on != prev
                {
                    violations.push(format!("{at}: {agent} moved from {prev} but was on {on}"));
                }
                placed.insert(agent, node);
            }
            ("unassigned", _) => {
                *unassigned.entry(agent).or_default() += 1;
                placed.remove(agent);
            }
            ("orphaned", _) => {
                placed.remove(agent);
            }
            (action, node) => violations.push(format!("{at}: {agent} {action} to {node:?}")),
        }
    }
    for (what, agents, counted) in [
        ("assigned", &acknowledged.assigned, &assigned),
        ("unassigned", &acknowledged.unassigned, &unassigned),
    ] {
        for a in agents {
            match counted.get(a.as_str()).copied().unwrap_or(0) {
                1 => {}
                n => violations.push(format!("{a}: acknowledged, recorded as {what} {n} times")),
            }
        }
    }
    violations
}
