//! `shoal rebalance`: the rebalance settings every coordinator follows, and rounds
//! on demand.

use clap::Subcommand;
use shoal_protocol::{
    ClientError, RebalanceMove, RebalanceReport, RebalanceStatus, RebalanceUpdate, ShoalClient,
};

use crate::output::{Table, fields, json, opt};

#[derive(Subcommand, Debug)]
pub enum RebalanceAction {
    /// The settings and how even the cluster is (the default).
    Status,
    /// Let the leader even the cluster by itself, optionally changing its limits.
    Enable {
        /// At most this many agents moved in any minute (1 to 60000; default 600).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=60_000))]
        max_moves_per_minute: Option<u32>,
        /// Move agents while the most loaded node has more than this many agents
        /// above the least loaded (1 to 1000000; default 2).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        threshold: Option<u32>,
    },
    /// Stop rebalancing (moves already made stay).
    Disable,
    /// One round now, evening the cluster as far as the per-minute budget allows,
    /// whether or not rebalancing is enabled.
    Now {
        /// Print the moves it would make, make none.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(
    client: &ShoalClient,
    action: Option<&RebalanceAction>,
    as_json: bool,
) -> Result<String, ClientError> {
    let status = match action.unwrap_or(&RebalanceAction::Status) {
        RebalanceAction::Status => client.rebalance_status().await?,
        RebalanceAction::Enable {
            max_moves_per_minute,
            threshold,
        } => {
            client
                .set_rebalance(&RebalanceUpdate {
                    enabled: Some(true),
                    max_moves_per_minute: *max_moves_per_minute,
                    threshold: *threshold,
                })
                .await?
        }
        RebalanceAction::Disable => {
            client
                .set_rebalance(&RebalanceUpdate {
                    enabled: Some(false),
                    ..RebalanceUpdate::default()
                })
                .await?
        }
        RebalanceAction::Now { dry_run } => {
            let report = client.rebalance_now(*dry_run).await?;
            return Ok(if as_json {
                json(&report)
            } else {
                report_text(&report)
            });
        }
    };
    Ok(if as_json {
        json(&status)
    } else {
        status_text(&status)
    })
}

fn status_text(s: &RebalanceStatus) -> String {
    let enabled = if s.settings.enabled { "on" } else { "off" };
    fields(&[
        ("rebalance", enabled.to_string()),
        (
            "max moves/minute",
            s.settings.max_moves_per_minute.to_string(),
        ),
        ("threshold", format!("{} agents", s.settings.threshold)),
        ("nodes taking agents", s.nodes.to_string()),
        (
            "spread",
            format!(
                "{} (most {}, fewest {})",
                s.spread, s.max_agents_per_node, s.min_agents_per_node
            ),
        ),
        ("moves to threshold", s.pending_moves.to_string()),
        ("moves made", s.moves_total.to_string()),
        ("held", opt(&s.held)),
    ])
}

fn report_text(r: &RebalanceReport) -> String {
    let verb = if r.dry_run { "would move" } else { "moved" };
    let mut out = format!(
        "{verb} {} agent(s): spread {} -> {}",
        r.moves.len(),
        r.spread_before,
        r.spread_after
    );
    if r.deferred > 0 {
        out.push_str(&format!(
            "; {} more move(s) wait for the per-minute budget",
            r.deferred
        ));
    }
    if let Some(held) = &r.held {
        out.push_str(&format!("\n{held}"));
    }
    if !r.moves.is_empty() {
        out.push('\n');
        out.push_str(&moves_table(&r.moves));
    }
    out
}

fn moves_table(moves: &[RebalanceMove]) -> String {
    let mut t = Table::new(vec!["AGENT", "FROM", "TO"]);
    for m in moves {
        t.row(vec![m.agent_name.clone(), m.from.clone(), m.to.clone()]);
    }
    t.render()
}
