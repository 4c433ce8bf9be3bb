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
        Command::Assign { .. } | Command::Unassign { .. } | Command::Promote { .. }
    )
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
            let hint = match e.code {
                ErrorCode::NotFound => match command {
                    Command::Node { .. } | Command::Drain { .. } | Command::Undrain { .. } => {
                        " — list nodes with `shoal nodes`"
                    }
                    Command::Promote { .. } => " — see the coordinators with `shoal status`",
                    _ => " — list assignments with `shoal assignments`",
                },
                ErrorCode::NoCapacity => " — see node status and capacity with `shoal nodes`",
                ErrorCode::NotLeader => " — a leader election is under way; retry in a few seconds (`shoal leader`)",
                ErrorCode::Unavailable => " — a dependency is down; see `shoal status` and `shoal logs`",
                ErrorCode::BadRequest | ErrorCode::Conflict | ErrorCode::Internal => "",
            };
            format!("{} ({}){hint}", e.message, e.code)
        }
        ClientError::BadReply { .. } | ClientError::Nats(_) => format!("{error}"),
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
    fn not_found_points_at_the_listing() {
        let cmd = Command::Node { id: "n9".into() };
        let text = explain(
            &cmd,
            &ClientError::Service(ShoalError::not_found("no node with id \"n9\"")),
        );
        assert_eq!(
            text,
            "no node with id \"n9\" (not_found) — list nodes with `shoal nodes`"
        );
    }
}
