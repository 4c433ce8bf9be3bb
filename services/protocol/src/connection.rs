//! The names processes give their NATS connections. The monitoring endpoint
//! (`/connz`) and connection advisories report them, so a peer can tell whose
//! connection closed: `shoal-node:<node id>` for a node's announcer,
//! `<service name>:<instance id>` for a service (`shoal-coordinator:c1`), and
//! `<service name>-sys:<instance id>` for a service's system-account connection.

use crate::ServiceKind;

const NODE_PREFIX: &str = "shoal-node:";

/// A node's connection: `shoal-node:<node id>`.
pub fn node(node_id: &str) -> String {
    format!("{NODE_PREFIX}{node_id}")
}

/// The node a connection belongs to, if it is a node's.
pub fn node_of(name: &str) -> Option<&str> {
    name.strip_prefix(NODE_PREFIX).filter(|id| !id.is_empty())
}

/// A service instance's connection: `<service name>:<instance id>`.
pub fn service(kind: ServiceKind, instance_id: &str) -> String {
    format!("{}:{instance_id}", kind.service_name())
}

/// The instance a connection belongs to, if it is one of `kind`'s.
pub fn instance_of(kind: ServiceKind, name: &str) -> Option<&str> {
    name.strip_prefix(kind.service_name())?
        .strip_prefix(':')
        .filter(|id| !id.is_empty())
}

/// A service instance's system-account connection: `<service name>-sys:<instance id>`.
pub fn system(kind: ServiceKind, instance_id: &str) -> String {
    format!("{}-sys:{instance_id}", kind.service_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_do_not_mix() {
        assert_eq!(node_of(&node("n-1")), Some("n-1"));
        assert_eq!(node_of("shoal-node:"), None);
        let c1 = service(ServiceKind::Coordinator, "c1");
        assert_eq!(c1, "shoal-coordinator:c1");
        assert_eq!(instance_of(ServiceKind::Coordinator, &c1), Some("c1"));
        assert_eq!(instance_of(ServiceKind::Registry, &c1), None);
        assert_eq!(node_of(&c1), None);
        let sys = system(ServiceKind::Coordinator, "c1");
        assert_eq!(instance_of(ServiceKind::Coordinator, &sys), None);
    }
}
