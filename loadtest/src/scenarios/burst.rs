//! `burst`: --agents assignments fired at once, then how evenly they spread over the
//! nodes (max − min agents per node, standard deviation; for least_loaded also how
//! far apart the balancer's estimated loads end, in units of one agent's cost), as
//! Tasker's rapid-burst and round-robin-distribution tests check; no
//! duplicate ids. `--strategy` sets the cluster strategy first; `--strategy all` runs
//! one burst per strategy, each on fresh agents, unassigning the previous burst's
//! agents and waiting until the nodes and the balancer have let them go, so every
//! burst starts on empty nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_protocol::{ListAssignmentsRequest, LoadSpread, Strategy};
use shoal_testkit::wait_for;

use crate::args::{Args, NodeMetrics, Strategies};
use crate::measure::{Limit, Load, run as measure};
use crate::report::Report;
use crate::stack::{Spawn, Stack};
use crate::verify::{self, Acknowledged};

/// The strategies the evenness goal applies to, on nodes reporting equal metrics.
const EVEN: [Strategy; 3] = [
    Strategy::RoundRobin,
    Strategy::LeastAgents,
    Strategy::LeastLoaded,
];
/// Most max − min agents per node those strategies may leave.
const EVEN_WITHIN: f64 = 2.0;
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let stack = Stack::with_nodes(args, Spawn::ALL).await?;
    stack.wait_for_leader().await?;
    let before = stack.client.get_strategy().await?.strategy;
    let strategies = args.strategy.map_or_else(|| vec![before], Strategies::list);
    let label = match args.strategy {
        Some(Strategies::All) => "all",
        _ => strategies[0].as_str(),
    };
    report.figure("strategy", label);
    report.figure("node_metrics", args.node_metrics.as_str());
    let prefix = super::run_prefix("burst");
    let mut acked = Acknowledged::default();
    let mut by_strategy = serde_json::Map::new();
    for (k, &strategy) in strategies.iter().enumerate() {
        if args.strategy.is_some() {
            use_strategy(&stack, strategy).await?;
        }
        eprintln!("burst of {} agents, strategy {strategy}", args.agents);
        let agents = format!("{prefix}{strategy}-");
        let names = burst(&stack, args, &agents, strategy, report).await;
        // Read the balancer's estimates before anything else moves them.
        let estimate = stack.client.balancer_stats().await?.estimated_load;
        let mut figures = distribution(&stack, &agents, &names).await?;
        if strategy == Strategy::LeastLoaded
            && let Some(spread) = estimate
        {
            add_estimate(&mut figures, &spread);
        }
        eprintln!("  {strategy}: {}", Value::Object(figures.clone()));
        acked.assigned.extend(names.iter().cloned());
        if k + 1 < strategies.len() {
            let gone = unassign(&stack, &names, strategy, report).await;
            acked.unassigned.extend(gone);
            settle(&stack, args.spawn).await?;
        }
        by_strategy.insert(strategy.as_str().to_string(), Value::Object(figures));
    }
    if let [(_, Value::Object(only))] = by_strategy.iter().collect::<Vec<_>>().as_slice() {
        for (name, value) in only {
            report.figure(name, value);
        }
    }
    if args.strategy.is_some() && strategies != [before] {
        // Leave the cluster on the strategy it had.
        use_strategy(&stack, before).await?;
    }
    goals(args, &by_strategy, report);
    report.figure("strategies", Value::Object(by_strategy));
    verify::assignments(&stack, &prefix, &acked, report).await
}

/// Sets the cluster strategy and waits until the balancer answers with it.
async fn use_strategy(stack: &Stack, strategy: Strategy) -> anyhow::Result<()> {
    stack.client.set_strategy(strategy).await?;
    let client = stack.client.clone();
    wait_for(
        &format!("the balancer to use {strategy}"),
        SETTLE_DEADLINE,
        || {
            let client = client.clone();
            async move { (client.balancer_stats().await.ok()?.strategy == strategy).then_some(()) }
        },
    )
    .await
}

/// Assigns `--agents` agents named `<agents><i>`, all in flight at once; returns the
/// acknowledged ones.
async fn burst(
    stack: &Stack,
    args: &Args,
    agents: &str,
    strategy: Strategy,
    report: &mut Report,
) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    // Everything in flight at once (capped so the client's own task count stays sane).
    let load = Load::Closed {
        concurrency: args.agents.min(2_000) as usize,
    };
    let (client, p, a) = (stack.client.clone(), agents.to_string(), acked.clone());
    let m = measure(
        &format!("burst assign ({strategy})"),
        load,
        Limit::Requests(args.agents),
        move |i| {
            let (client, agent, acked) = (client.clone(), format!("{p}{i}"), a.clone());
            async move { super::assign_recorded(&client, agent, &acked).await }
        },
    )
    .await;
    report.measurements.push(m);
    acked.lock().unwrap().clone()
}

/// Agents per node of this burst: min, max, max − min, standard deviation.
async fn distribution(
    stack: &Stack,
    agents: &str,
    acked: &[String],
) -> anyhow::Result<serde_json::Map<String, Value>> {
    // Any coordinator replica may answer, and a follower can be a few milliseconds
    // behind the leader's acknowledgements: count once the list holds them all.
    let client = stack.client.clone();
    let list = wait_for(
        "the coordinator's list to hold every acknowledged agent of the burst",
        SETTLE_DEADLINE,
        || {
            let client = client.clone();
            async move {
                let list = client
                    .list_all_assignments(&ListAssignmentsRequest::default())
                    .await
                    .ok()?;
                let listed: BTreeSet<&str> = list.iter().map(|a| a.agent_name.as_str()).collect();
                acked
                    .iter()
                    .all(|a| listed.contains(a.as_str()))
                    .then_some(list)
            }
        },
    )
    .await?;
    let mut per_node: BTreeMap<String, u64> = stack
        .nodes
        .as_ref()
        .map(|n| n.ids().into_iter().map(|id| (id, 0)).collect())
        .unwrap_or_default();
    for a in list.iter().filter(|a| a.agent_name.starts_with(agents)) {
        *per_node.entry(a.node_id.clone()).or_default() += 1;
    }
    let counts: Vec<f64> = per_node.values().map(|&c| c as f64).collect();
    let (min, max) = counts
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    let min = if counts.is_empty() { 0.0 } else { min };
    let mean = counts.iter().sum::<f64>() / counts.len().max(1) as f64;
    let stddev = (counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>()
        / counts.len().max(1) as f64)
        .sqrt();
    let figures = json!({
        "nodes": counts.len(),
        "agents_per_node_min": min,
        "agents_per_node_max": max,
        "agents_per_node_max_minus_min": max - min,
        "agents_per_node_stddev": stddev,
    });
    Ok(match figures {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    })
}

/// How far apart the balancer's estimated loads ended, in units of one agent's cost.
fn add_estimate(figures: &mut serde_json::Map<String, Value>, spread: &LoadSpread) {
    let in_agents = if spread.agent_cost > 0.0 {
        (spread.max - spread.min) / spread.agent_cost
    } else {
        0.0
    };
    figures.insert("estimated_load_min".into(), json!(spread.min));
    figures.insert("estimated_load_max".into(), json!(spread.max));
    figures.insert("agent_cost".into(), json!(spread.agent_cost));
    figures.insert("estimated_load_spread_agents".into(), json!(in_agents));
}

/// Unassigns a burst's agents; returns the acknowledged ones.
async fn unassign(
    stack: &Stack,
    names: &[String],
    strategy: Strategy,
    report: &mut Report,
) -> Vec<String> {
    let names: Arc<Vec<String>> = Arc::new(names.to_vec());
    let gone = Arc::new(Mutex::new(Vec::new()));
    let (client, n, g) = (stack.client.clone(), names.clone(), gone.clone());
    let m = measure(
        &format!("burst unassign ({strategy})"),
        Load::Closed {
            concurrency: names.len().clamp(1, 2_000),
        },
        Limit::Requests(names.len() as u64),
        move |i| {
            let (client, agent, gone) = (client.clone(), n[i as usize].clone(), g.clone());
            async move {
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
    report.measurements.push(m);
    gone.lock().unwrap().clone()
}

/// Waits until the simulated nodes run nothing and, on a private stack, the
/// registry counts no agent and the balancer has no placement pending: the next
/// burst starts from empty nodes.
async fn settle(stack: &Stack, private: bool) -> anyhow::Result<()> {
    let client = stack.client.clone();
    let nodes = stack.nodes.as_ref();
    wait_for(
        "the nodes and the balancer to let the burst's agents go",
        SETTLE_DEADLINE,
        || {
            let client = client.clone();
            let idle = nodes.is_none_or(|n| (0..n.len()).all(|i| n.active_agents(i) == 0));
            async move {
                if !idle {
                    return None;
                }
                if private {
                    let registry = client.registry_stats().await.ok()?;
                    let balancer = client.balancer_stats().await.ok()?;
                    let pending = balancer.estimated_load.map_or(0, |e| e.pending);
                    (registry.total_agents == 0 && pending == 0).then_some(())
                } else {
                    Some(())
                }
            }
        },
    )
    .await
}

/// The evenness goals: on equal nodes, round_robin, least_agents and least_loaded
/// leave at most two agents between the fullest and the emptiest node; on varied
/// nodes, least_loaded leaves estimated loads within one agent's cost.
fn goals(args: &Args, by_strategy: &serde_json::Map<String, Value>, report: &mut Report) {
    let figure = |s: Strategy, name: &str| by_strategy.get(s.as_str())?.get(name)?.as_f64();
    match args.node_metrics {
        NodeMetrics::Equal => {
            for s in EVEN {
                if let Some(spread) = figure(s, "agents_per_node_max_minus_min") {
                    report.goal(
                        &format!("{s}: even on equal nodes"),
                        spread <= EVEN_WITHIN,
                        format!("max - min = {spread} agents per node (goal <= {EVEN_WITHIN})"),
                    );
                }
            }
        }
        NodeMetrics::Varied => {
            let s = Strategy::LeastLoaded;
            if let Some(spread) = figure(s, "estimated_load_spread_agents") {
                report.goal(
                    &format!("{s}: estimated loads level"),
                    spread <= 1.0,
                    format!("max - min = {spread:.2} agents' cost (goal <= 1)"),
                );
            }
        }
    }
}
