//! Operator commands: one request each, rendered as a table or JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_protocol::*;

use crate::output::{Table, fields, json, opt};
use crate::{Command, StrategyAction};

/// How long `shoal services` collects `$SRV.PING` answers.
const DISCOVER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub async fn run(
    client: &ShoalClient,
    command: &Command,
    as_json: bool,
) -> Result<(), ClientError> {
    let text = match command {
        Command::Nodes {
            role,
            service,
            status,
            label,
        } => {
            let nodes = client
                .list_all_nodes(&ListNodesRequest {
                    role: *role,
                    service: service.clone(),
                    status: *status,
                    label: label.clone(),
                    ..Default::default()
                })
                .await?;
            let list = NodeList {
                count: nodes.len(),
                nodes,
                next: None,
            };
            render(as_json, &list, || nodes_table(&list.nodes))
        }
        Command::Node { id } => {
            let node = client.get_node(id).await?;
            render(as_json, &node, || node_fields(&node))
        }
        Command::Drain { id } => {
            let node = client.drain_node(id).await?;
            render(as_json, &node, || {
                format!("node {} is draining; its agents are moving off", node.id)
            })
        }
        Command::Undrain { id } => {
            let node = client.undrain_node(id).await?;
            render(as_json, &node, || {
                format!(
                    "node {} takes new agents again ({})",
                    node.id,
                    node.status.as_str()
                )
            })
        }
        // Metrics endpoints answer with OpenMetrics text, printed as it came.
        Command::Request { subject, .. } if Subjects::is_metrics(subject) => {
            client.call_text(subject).await?
        }
        Command::Request { subject, body } => {
            let reply: serde_json::Value = client.call_subject(subject, body).await?;
            json(&reply)
        }
        Command::Services => {
            let found = client.discover(None, DISCOVER_WAIT).await?;
            render(as_json, &found, || {
                let mut t = Table::new(vec!["SERVICE", "INSTANCE", "VERSION", "MICRO ID"]);
                for s in &found {
                    t.row(vec![
                        s.name.clone(),
                        s.instance_id.clone(),
                        s.version.clone(),
                        s.micro_id.clone(),
                    ]);
                }
                t.render()
            })
        }
        Command::Stats => {
            let stats = client.cluster_stats().await?;
            render(as_json, &stats, || stats_text(&stats))
        }
        Command::Leader => {
            let reply = client.leader().await?;
            render(as_json, &reply, || match &reply.leader {
                Some(l) => fields(&[
                    ("leader", l.coordinator_id.clone()),
                    ("epoch", l.epoch.to_string()),
                    ("since", crate::output::time(l.since)),
                ]),
                None => "no coordinator holds the lease right now".to_string(),
            })
        }
        Command::Promote { coordinator } => {
            let reply = client.promote(coordinator).await?;
            render(as_json, &reply, || {
                format!(
                    "{} is the leader (epoch {})",
                    reply.leader.coordinator_id, reply.leader.epoch
                )
            })
        }
        Command::Assign {
            agent,
            service,
            labels,
            node,
            group,
            spread_by,
            anti_affinity,
        } => {
            // An agent already placed is answered with its assignment, which carries
            // the request id that placed it: not this one.
            let request_id = uuid::Uuid::new_v4().to_string();
            let assignment = client
                .assign(&AssignRequest {
                    agent_name: agent.clone(),
                    service: service.clone(),
                    labels: labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                    node_id: node.clone(),
                    request_id: Some(request_id.clone()),
                    resources: None,
                    group: group.clone(),
                    spread_by: spread_by.clone(),
                    anti_affinity: *anti_affinity,
                })
                .await?;
            let placed_now = assignment.request_id.as_deref() == Some(request_id.as_str());
            let why = if placed_now && !as_json {
                placement_reason(client, &assignment).await
            } else {
                None
            };
            render(as_json, &assignment, || {
                if placed_now {
                    let reason = why.map(|w| format!("\n  {w}")).unwrap_or_default();
                    format!(
                        "{} → {} (epoch {}){reason}",
                        assignment.agent_name, assignment.node_id, assignment.epoch
                    )
                } else {
                    format!(
                        "{} is already on {} (since {}, epoch {}): nothing changed; `shoal move {}` moves it",
                        assignment.agent_name,
                        assignment.node_id,
                        crate::output::time(assignment.assigned_at),
                        assignment.epoch,
                        assignment.agent_name
                    )
                }
            })
        }
        Command::Move { agent, node } => {
            let assignment = client
                .move_agent(&MoveRequest {
                    agent_name: agent.clone(),
                    node_id: node.clone(),
                    request_id: None,
                })
                .await?;
            render(as_json, &assignment, || {
                format!(
                    "{} → {} (epoch {})",
                    assignment.agent_name, assignment.node_id, assignment.epoch
                )
            })
        }
        Command::Unassign { agent } => {
            let reply = client.unassign(agent).await?;
            render(as_json, &reply, || {
                format!("{} removed from {}", reply.agent_name, reply.node_id)
            })
        }
        Command::Assignments {
            node,
            group,
            status,
        } => {
            let assignments = client
                .list_all_assignments(&ListAssignmentsRequest {
                    node_id: node.clone(),
                    status: *status,
                    group: group.clone(),
                    ..Default::default()
                })
                .await?;
            let list = AssignmentList {
                count: assignments.len(),
                assignments,
                next: None,
            };
            render(as_json, &list, || {
                let mut t = Table::new(vec!["AGENT", "NODE", "STATUS", "EPOCH", "ASSIGNED"]);
                for a in &list.assignments {
                    t.row(vec![
                        a.agent_name.clone(),
                        a.node_id.clone(),
                        a.status.as_str().to_string(),
                        a.epoch.to_string(),
                        crate::output::time(a.assigned_at),
                    ]);
                }
                let waiting = list
                    .assignments
                    .iter()
                    .filter(|a| a.status.is_waiting())
                    .count();
                let note = match waiting {
                    0 => String::new(),
                    n => format!(
                        "; {n} waiting for a node that can take them (their NODE is where they were)"
                    ),
                };
                format!("{}\n{} assignment(s){note}", t.render(), list.count)
            })
        }
        Command::History {
            agent,
            node,
            since,
            limit,
        } => {
            let reply = client
                .history(&HistoryRequest {
                    agent_name: agent.clone(),
                    node_id: node.clone(),
                    since: *since,
                    until: None,
                    limit: Some(*limit),
                    before: None,
                })
                .await?;
            render(as_json, &reply, || {
                let mut t = Table::new(vec![
                    "AT", "AGENT", "ACTION", "FROM", "TO", "REASON", "LEADER", "EPOCH", "WHY",
                ]);
                for h in &reply.history {
                    t.row(vec![
                        crate::output::time(h.at),
                        h.agent_name.clone(),
                        h.action.as_str().to_string(),
                        opt(&h.previous_node_id),
                        opt(&h.node_id),
                        h.reason.clone(),
                        h.leader_id.clone(),
                        h.epoch.to_string(),
                        h.candidates
                            .as_ref()
                            .and_then(crate::output::why)
                            .unwrap_or_default(),
                    ]);
                }
                format!("{}\n{} row(s)", t.render(), reply.count)
            })
        }
        Command::Rebalance { action } => {
            crate::rebalance::run(client, action.as_ref(), as_json).await?
        }
        Command::Strategy { action } => {
            let reply = match action {
                None => client.get_strategy().await?,
                Some(StrategyAction::Set { name }) => client.set_strategy(*name).await?,
            };
            render(as_json, &reply, || format!("strategy: {}", reply.strategy))
        }
        // Local control-plane commands, `watch`, `replay` and the generated documentation are
        // dispatched before any request is made (see `crate::run`).
        Command::Up { .. }
        | Command::Status
        | Command::Stop { .. }
        | Command::Start { .. }
        | Command::Restart { .. }
        | Command::Down
        | Command::Logs { .. }
        | Command::Watch { .. }
        | Command::Replay(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            return Ok(());
        }
    };
    outln!("{text}");
    Ok(())
}

fn render<T: Serialize>(as_json: bool, value: &T, human: impl FnOnce() -> String) -> String {
    if as_json { json(value) } else { human() }
}

/// A node's address as people read it: without the port when it announced none.
fn address(n: &Node) -> String {
    n.address
        .strip_suffix(":0")
        .unwrap_or(&n.address)
        .to_string()
}

fn nodes_table(nodes: &[Node]) -> String {
    let mut t = Table::new(vec![
        "ID",
        "ROLE",
        "STATUS",
        "AGENTS",
        "CPU%",
        "MEM%",
        "ADDRESS",
        "SERVICES",
        "LAST SEEN",
    ]);
    for n in nodes {
        t.row(vec![
            n.id.clone(),
            n.role.as_str().to_string(),
            n.status.as_str().to_string(),
            format!("{}/{}", n.active_agents, n.max_agents),
            format!("{:.1}", n.cpu_usage),
            format!("{:.1}", n.memory_usage),
            address(n),
            n.services.join(","),
            crate::output::ago(n.last_seen, chrono::Utc::now()),
        ]);
    }
    format!("{}\n{} node(s)", t.render(), nodes.len())
}

fn node_fields(n: &Node) -> String {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    fields(&[
        ("id", n.id.clone()),
        ("hostname", n.hostname.clone()),
        ("address", address(n)),
        ("role", n.role.as_str().to_string()),
        ("status", n.status.as_str().to_string()),
        ("healthy", n.healthy.to_string()),
        ("draining", n.draining.to_string()),
        ("agents", format!("{}/{}", n.active_agents, n.max_agents)),
        ("capacity", format!("{:.2}", n.capacity)),
        ("load", format!("{:.2}", n.load)),
        (
            "cpu/mem/disk %",
            format!(
                "{:.1} / {:.1} / {:.1}",
                n.cpu_usage, n.memory_usage, n.disk_usage
            ),
        ),
        ("load average", format!("{:.2}", n.load_average)),
        ("uptime", n.uptime.clone()),
        (
            "last seen",
            format!(
                "{} ({})",
                crate::output::time(n.last_seen),
                crate::output::ago(n.last_seen, chrono::Utc::now())
            ),
        ),
        ("services", n.services.join(", ")),
        ("labels", labels.join(", ")),
        ("version", n.version.clone()),
    ])
}

/// `12 (10 running, 2 waiting: 2 orphaned, 0 migrating)`.
fn assignments_line(s: &ClusterStats) -> String {
    let count = |status| s.agents_by_status.get(&status).copied().unwrap_or(0);
    if s.waiting_agents == 0 {
        return format!("{} (all running)", s.total_assignments);
    }
    format!(
        "{} ({} running, {} waiting: {} orphaned, {} migrating — see `shoal assignments --status orphaned`)",
        s.total_assignments,
        count(AssignmentStatus::Running),
        s.waiting_agents,
        count(AssignmentStatus::Orphaned),
        count(AssignmentStatus::Migrating),
    )
}

fn stats_text(s: &ClusterStats) -> String {
    let mut pairs = vec![
        ("answered by", s.local_node.clone()),
        (
            "leader",
            s.leader.as_ref().map_or("none".to_string(), |l| {
                format!("{} (epoch {})", l.coordinator_id, l.epoch)
            }),
        ),
        ("assignments", assignments_line(s)),
        (
            "reassignments",
            format!(
                "{}{}",
                s.reassignments,
                if s.reassignments_paused {
                    " (paused)"
                } else {
                    ""
                }
            ),
        ),
    ];
    if let Some(r) = &s.registry {
        pairs.push((
            "nodes",
            format!(
                "{} total, {} online, {} healthy",
                r.total_nodes, r.online_nodes, r.healthy_nodes
            ),
        ));
        pairs.push((
            "agents",
            format!(
                "{}/{} ({:.1}% used)",
                r.total_agents, r.max_agents, r.utilization_pct
            ),
        ));
        pairs.push(("by role", format!("{:?}", r.nodes_by_role)));
        pairs.push(("by status", format!("{:?}", r.nodes_by_status)));
    }
    if let Some(b) = &s.balancer {
        pairs.push(("strategy", b.strategy.to_string()));
        pairs.push((
            "selections",
            format!("{} ({} no capacity)", b.selections, b.no_capacity),
        ));
    }
    fields(&pairs)
}

/// Why the balancer chose `placed`'s node, from its history row (written within
/// moments of the placement; none for a pinned agent, or if the row is slow).
async fn placement_reason(client: &ShoalClient, placed: &Assignment) -> Option<String> {
    client
        .placement_candidates(placed, std::time::Duration::from_secs(2))
        .await
        .as_ref()
        .and_then(crate::output::why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_a_port_shows_its_ip_alone() {
        let mut n = Node::example("n1");
        n.address = "192.0.2.2:0".into();
        assert_eq!(address(&n), "192.0.2.2");
        n.address = "192.0.2.2:8080".into();
        assert_eq!(address(&n), "192.0.2.2:8080");
    }
}
