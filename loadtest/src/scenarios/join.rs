//! `join`: rebalancing onto nodes that join. --nodes simulated nodes hold --agents
//! agents; rebalancing is turned on (--rebalance-rate moves a minute, threshold
//! --rebalance-threshold); as many nodes again join. Reports the time from the join
//! to an even cluster (max − min ≤ the threshold, over every node), the moves made
//! against the fewest that could even it (for 10 nodes of 100 agents and 10 new ones,
//! 500), the time the budget alone needs for them, and checks that no agent waited
//! for a node at any moment and that every node runs what the coordinator says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_announcer::sim::{SimConfig, SimulatedCluster};
use shoal_protocol::{
    AssignRequest, AssignmentAction, AssignmentEvent, ListAssignmentsRequest, RebalanceUpdate,
    ShoalClient, Strategy,
};
use shoal_testkit::wait_for;

use crate::args::Args;
use crate::report::Report;
use crate::stack::{Spawn, Stack, connect};

/// Longest wait for the cluster to even out beyond what the budget needs.
const SLACK: Duration = Duration::from_secs(60);

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = Stack::open(args, Spawn::ALL).await?;
    stack.wait_for_leader().await?;
    let client = stack.client.clone();
    // Rebalancing off while the agents are placed; least_agents places them evenly
    // over the first nodes whatever their metrics.
    client
        .set_rebalance(&RebalanceUpdate {
            enabled: Some(false),
            ..Default::default()
        })
        .await?;
    client.set_strategy(Strategy::LeastAgents).await?;
    stack
        .start_nodes(args.nodes, args.max_agents, args.node_metrics.sim())
        .await?;
    let prefix = super::run_prefix("join");
    eprintln!("assigning {} agents to {} nodes", args.agents, args.nodes);
    assign_all(&client, &prefix, args.agents, args.concurrency).await?;

    let old: Vec<String> = stack.nodes.as_ref().map(|n| n.ids()).unwrap_or_default();
    let new: Vec<String> = (0..args.nodes)
        .map(|i| format!("lt-{}", args.nodes + i))
        .collect();
    let all: Vec<String> = old.iter().chain(&new).cloned().collect();
    let mut counts = BTreeMap::new();
    for node in &all {
        counts.insert(node.clone(), on_node(&client, node, &prefix).await?);
    }
    let minimum = fewest_moves(&counts.values().copied().collect::<Vec<_>>());
    let rate = args.rebalance_rate;
    let budget = Duration::from_secs_f64(
        minimum.saturating_sub(rate as usize / 60) as f64 * 60.0 / f64::from(rate),
    );
    report.figure("nodes_before", args.nodes);
    report.figure("nodes_joining", args.nodes);
    report.figure("agents", args.agents);
    report.figure("max_moves_per_minute", rate);
    report.figure("threshold", args.rebalance_threshold);
    report.figure("fewest_moves_to_even", minimum);

    let nats = stack.client.nats().clone();
    let mut events = nats
        .subscribe(stack.subjects.coordinator_events_all())
        .await?;
    nats.flush().await?;
    client
        .set_rebalance(&RebalanceUpdate {
            enabled: Some(true),
            max_moves_per_minute: Some(rate),
            threshold: Some(args.rebalance_threshold),
        })
        .await?;
    eprintln!(
        "{} nodes join; rebalancing at {rate} moves a minute",
        args.nodes
    );
    let joined_at = Instant::now();
    let joining = SimulatedCluster::start(
        connect(&stack.nats_url).await?,
        stack.subjects.clone(),
        SimConfig {
            count: args.nodes,
            id_prefix: "lt".into(),
            first_index: args.nodes,
            max_agents: args.max_agents,
            metrics: args.node_metrics.sim(),
            ..SimConfig::default()
        },
    )
    .await?;
    // When the registry counts every joining node online.
    let all_online = {
        let (client, want) = (client.clone(), 2 * args.nodes);
        tokio::spawn(async move {
            let online = wait_for("the joining nodes to be online", SLACK, || async {
                let stats = client.registry_stats().await.ok()?;
                (stats.online_nodes >= want).then_some(())
            })
            .await;
            online.ok().map(|()| Instant::now())
        })
    };

    // Follow the moves as they are published: per-node counts, moves, and any
    // agent left without a node.
    let (mut moves, mut unplaced, mut other) = (0usize, 0usize, 0usize);
    let deadline = joined_at + budget + SLACK;
    let bar = indicatif::ProgressBar::new(minimum as u64);
    let even_after = loop {
        if spread(&counts) <= args.rebalance_threshold as usize {
            break Some(joined_at.elapsed());
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break None;
        };
        let Ok(Some(msg)) = tokio::time::timeout(left, events.next()).await else {
            break None;
        };
        let Ok(ev) = serde_json::from_slice::<AssignmentEvent>(&msg.payload) else {
            continue;
        };
        match (ev.event, &ev.node_id, &ev.previous_node_id) {
            (AssignmentAction::Rebalanced, Some(to), Some(from)) => {
                moves += 1;
                bar.inc(1);
                *counts.entry(from.clone()).or_default() -= 1;
                *counts.entry(to.clone()).or_default() += 1;
            }
            (_, None, _) => unplaced += 1,
            _ => other += 1,
        }
    };
    bar.finish_and_clear();
    // Moves decided before the cluster was seen even may still be on their way.
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        if let Ok(ev) = serde_json::from_slice::<AssignmentEvent>(&msg.payload) {
            match (ev.event, &ev.node_id) {
                (AssignmentAction::Rebalanced, Some(_)) => moves += 1,
                (_, None) => unplaced += 1,
                _ => other += 1,
            }
        }
    }
    client
        .set_rebalance(&RebalanceUpdate {
            enabled: Some(false),
            ..Default::default()
        })
        .await?;

    let stats = client.cluster_stats().await?;
    report.figure("moves", moves);
    report.figure("unplaced_events", unplaced);
    report.figure("other_events", other);
    report.figure("budget_time_s", budget.as_secs_f64());
    let ratio = moves as f64 / minimum.max(1) as f64;
    report.ratio("moves ÷ fewest moves to even", ratio, Some("≤ 1.05"));
    report.check(
        "no agent waited for a node",
        unplaced == 0 && stats.waiting_agents == 0,
        format!(
            "{unplaced} event(s) left an agent without a node; {} waiting at the end",
            stats.waiting_agents
        ),
    );
    let online_after = all_online.await?.map(|t| t.duration_since(joined_at));
    if let Some(t) = online_after {
        report.figure("time_to_all_online_s", t.as_secs_f64());
    }
    match (even_after, online_after) {
        (Some(t), Some(online)) => {
            report.figure("time_to_even_s", t.as_secs_f64());
            let after_online = t.saturating_sub(online);
            report.figure(
                "time_to_even_after_all_online_s",
                after_online.as_secs_f64(),
            );
            // The leader waits a second for joins to stop before it moves anything.
            report.goal(
                "even within the budget's time once every node is online (+1 s settle, +1 s slack)",
                after_online <= budget + Duration::from_secs(2),
                format!(
                    "max − min ≤ {} {:.2} s after the last node was online ({:.2} s after the join began); the budget needs {:.2} s for {minimum} moves",
                    args.rebalance_threshold,
                    after_online.as_secs_f64(),
                    t.as_secs_f64(),
                    budget.as_secs_f64()
                ),
            );
        }
        (None, _) | (_, None) => report.check(
            "the cluster evened out",
            false,
            format!(
                "spread still {} after {:?}: {counts:?}",
                spread(&counts),
                budget + SLACK
            ),
        ),
    }
    report.goal(
        "moves ≤ 1.05 × the fewest",
        ratio <= 1.05,
        format!("{moves} moves, {minimum} at fewest"),
    );
    // The coordinator's counts, and what the nodes run, agree with the events.
    let mut served = BTreeMap::new();
    for node in &all {
        served.insert(node.clone(), on_node(&client, node, &prefix).await?);
    }
    report.check(
        "the coordinator's placements match the moves",
        served == counts,
        format!("served {served:?}, from events {counts:?}"),
    );
    let clusters = [stack.nodes.as_ref(), Some(&joining)];
    let (served_ref, prefix_ref) = (&served, prefix.as_str());
    let run = wait_for(
        "every node to run what it was given",
        Duration::from_secs(30),
        || {
            let (served, prefix) = (served_ref, prefix_ref);
            async move {
                clusters
                    .iter()
                    .flatten()
                    .all(|cluster| {
                        (0..cluster.len()).all(|i| {
                            let ran = cluster
                                .agents(i)
                                .iter()
                                .filter(|a| a.starts_with(prefix))
                                .count();
                            served.get(&cluster.id(i)) == Some(&ran)
                        })
                    })
                    .then_some(())
            }
        },
    )
    .await;
    report.check(
        "every node runs what the coordinator placed on it",
        run.is_ok(),
        "simulated nodes' agent sets against the coordinator's",
    );
    joining.shutdown().await?;
    Ok(())
}

/// Assigns `n` agents named `<prefix><i>`, `concurrency` at a time.
async fn assign_all(
    client: &ShoalClient,
    prefix: &str,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(n);
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let req = AssignRequest {
                agent_name: format!("{prefix}{i}"),
                request_id: Some(format!("{prefix}{i}")),
                ..Default::default()
            };
            let (client, bar) = (client.clone(), bar.clone());
            async move {
                let r = client.assign(&req).await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    if let Some(e) = results.into_iter().find_map(Result::err) {
        anyhow::bail!("an assign failed: {e}");
    }
    Ok(())
}

/// This run's agents on `node`, from the coordinator.
async fn on_node(client: &ShoalClient, node: &str, prefix: &str) -> anyhow::Result<usize> {
    let all = client
        .list_all_assignments(&ListAssignmentsRequest {
            node_id: Some(node.to_string()),
            ..Default::default()
        })
        .await?;
    Ok(all
        .iter()
        .filter(|a| a.agent_name.starts_with(prefix))
        .count())
}

fn spread(counts: &BTreeMap<String, usize>) -> usize {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    max - min
}

/// The fewest moves that leave `counts` perfectly even: the fullest nodes keep
/// one agent more where the total does not divide.
fn fewest_moves(counts: &[usize]) -> usize {
    if counts.is_empty() {
        return 0;
    }
    let mut sorted = counts.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let total: usize = sorted.iter().sum();
    let (base, extra) = (total / sorted.len(), total % sorted.len());
    sorted
        .iter()
        .enumerate()
        .map(|(i, &c)| c.saturating_sub(base + usize::from(i < extra)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fewest_moves_fill_the_emptiest_from_the_fullest() {
        let mut counts = vec![100; 10];
        counts.extend([0; 10]);
        assert_eq!(fewest_moves(&counts), 500);
        assert_eq!(fewest_moves(&[3, 1, 0]), 1);
        assert_eq!(fewest_moves(&[5, 0]), 2);
        assert_eq!(fewest_moves(&[]), 0);
    }
}
