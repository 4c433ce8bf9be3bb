//! Error messages that say what to do next.

use shoal_protocol::{ClientError, ErrorCode};

use crate::Command;

/// Which service a command talks to, for naming it in hints.
fn service_of(command: &Command) -> &'static str {
    match command {
        Command::Nodes { .. }
        | Command::Node { .. }
        | Command::Drain { .. }
        | Command::Undrain { .. } => "registry",
        Command::Strategy { .. } => "balancer",
        _ => "coordinator",
    }
}

fn writes_through_leader(command: &Command) -> bool {
    matches!(
        command,
        Command::Assign { .. }
            | Command::Unassign { .. }
            | Command::Move { .. }
            | Command::Promote { .. }
            | Command::Rebalance {
                action: Some(crate::rebalance::RebalanceAction::Now { .. })
            }
    )
}

/// Whether an error's details name a node (`node_id`) rather than only an agent.
fn names_a_node(e: &shoal_protocol::ShoalError) -> bool {
    e.details
        .as_ref()
        .is_some_and(|d| d.get("node_id").is_some())
}

/// The group whose placement rules an error is about, if any.
fn group_of(e: &shoal_protocol::ShoalError) -> Option<&str> {
    e.details.as_ref()?.get("group")?.as_str()
}

/// The error as a user should read it: what happened, then what to try.
pub fn explain(command: &Command, error: &ClientError) -> String {
    let service = service_of(command);
    match error {
        ClientError::NoResponders { .. } if writes_through_leader(command) => {
            "no coordinator leader yet — is the coordinator running? check with `shoal status` (or `shoal leader`)"
                .to_string()
        }
        ClientError::NoResponders { subject } => format!(
            "no {service} is answering on {subject} — is it running? check with `shoal status`, start with `shoal up`"
        ),
        ClientError::Timeout { subject, timeout } => format!(
            "the {service} did not answer on {subject} within {timeout:?} — it may be overloaded or stuck; see `shoal logs {service}` or retry with --timeout"
        ),
        ClientError::Service(e) => {
            let pinned_elsewhere = e
                .details
                .as_ref()
                .is_some_and(|d| d.get("requested_node_id").is_some());
            let hint = match e.code {
                ErrorCode::NotFound => match command {
                    Command::Node { .. } | Command::Drain { .. } | Command::Undrain { .. } => {
                        " — list nodes with `shoal nodes`"
                    }
                    Command::Promote { .. } => " — see the coordinators with `shoal status`",
                    _ if names_a_node(e) => " — list nodes with `shoal nodes`",
                    _ => " — list assignments with `shoal assignments`",
                },
                ErrorCode::Conflict if pinned_elsewhere => {
                    " — see where it runs with `shoal assignments`"
                }
                ErrorCode::Conflict => {
                    " — the node cannot take agents now; see its status with `shoal nodes`, or let the balancer pick (drop --node)"
                }
                ErrorCode::NoCapacity => match group_of(e) {
                    Some(group) => {
                        return format!(
                            "{} ({}) — see where the group runs with `shoal assignments --group {group}`, and the nodes' labels and capacity with `shoal nodes`",
                            e.message, e.code
                        );
                    }
                    None => " — see node status and capacity with `shoal nodes`",
                },
                ErrorCode::NotLeader => " — a leader election is under way; retry in a few seconds (`shoal leader`)",
                ErrorCode::Unavailable => " — a dependency is down; see `shoal status` and `shoal logs`",
                ErrorCode::BadRequest | ErrorCode::Internal => "",
            };
            format!("{} ({}){hint}", e.message, e.code)
        }
        ClientError::BadReply { .. }
        | ClientError::NotText { .. }
        | ClientError::Encode { .. }
        | ClientError::Nats { .. } => format!("{error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::ShoalError;

    #[test]
    fn missing_leader_says_what_to_check() {
        let cmd = Command::Unassign { agent: "a".into() };
        let text = explain(
            &cmd,
            &ClientError::NoResponders {
                subject: "shoal.coordinator.unassign".into(),
            },
        );
        assert!(text.contains("no coordinator leader yet"), "{text}");
        assert!(text.contains("shoal status"), "{text}");
    }

    #[test]
    fn a_group_rule_refusal_points_at_the_group() {
        let assign = Command::Assign {
            agent: "db-4".into(),
            service: None,
            labels: vec![],
            node: None,
            group: Some("db".into()),
            spread_by: None,
            anti_affinity: true,
        };
        let e = ShoalError::no_capacity(
            "anti_affinity: all 4 node(s) with a free slot already run an agent of group \"db\"",
        )
        .with_details(serde_json::json!({ "group": "db" }));
        let text = explain(&assign, &ClientError::Service(e));
        assert!(text.starts_with("anti_affinity: all 4 node(s)"), "{text}");
        assert!(text.contains("`shoal assignments --group db`"), "{text}");
    }

    #[test]
    fn every_pin_error_points_where_to_look() {
        let assign = Command::Assign {
            agent: "agent-9".into(),
            service: None,
            labels: vec![],
            node: Some("node-99".into()),
            group: None,
            spread_by: None,
            anti_affinity: false,
        };
        let unknown_node = ShoalError::no_node("node-99");
        let text = explain(&assign, &ClientError::Service(unknown_node.clone()));
        assert!(text.ends_with("list nodes with `shoal nodes`"), "{text}");
        let moving = Command::Move {
            agent: "agent-9".into(),
            node: Some("node-99".into()),
        };
        let text = explain(&moving, &ClientError::Service(unknown_node));
        assert!(text.ends_with("list nodes with `shoal nodes`"), "{text}");
        let unknown_agent = ShoalError::not_found("agent \"ghost\" has no assignment")
            .with_details(serde_json::json!({ "agent_name": "ghost" }));
        let text = explain(&moving, &ClientError::Service(unknown_agent));
        assert!(text.ends_with("`shoal assignments`"), "{text}");
        let offline = ShoalError::conflict("node \"node-2\" is offline and cannot take agents")
            .with_details(serde_json::json!({ "node_id": "node-2" }));
        let text = explain(&assign, &ClientError::Service(offline));
        assert!(text.contains("see its status with `shoal nodes`"), "{text}");
        let elsewhere = ShoalError::conflict(
            "agent \"agent-9\" is already on node \"node-1\": to move it, use move (shoal move agent-9 --node node-2)",
        )
        .with_details(serde_json::json!({ "node_id": "node-1", "requested_node_id": "node-2" }));
        let text = explain(&assign, &ClientError::Service(elsewhere));
        assert!(text.contains("shoal move agent-9 --node node-2"), "{text}");
        assert!(text.ends_with("`shoal assignments`"), "{text}");
    }

    #[test]
    fn not_found_points_at_the_listing() {
        let cmd = Command::Node { id: "n9".into() };
        let text = explain(&cmd, &ClientError::Service(ShoalError::no_node("n9")));
        assert_eq!(
            text,
            "no node with id \"n9\" (not_found) — list nodes with `shoal nodes`"
        );
    }
}
