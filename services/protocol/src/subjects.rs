//! Every NATS subject Shoal uses, built in one place.
//!
//! Services, clients and tests never format subject strings themselves: they ask
//! [`Subjects`], so the prefix stays configurable and a rename happens here once.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "shoal";

/// The key of a service instance's id in its NATS micro metadata (`$SRV.PING`,
/// `$SRV.INFO`), so replicas of one service can be told apart.
pub const INSTANCE_ID_METADATA: &str = "instance_id";

/// The Shoal services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    Announcer,
    Registry,
    Balancer,
    Coordinator,
    Gateway,
}

impl ServiceKind {
    /// The subject token after the prefix (`shoal.<token>.…`).
    pub fn token(self) -> &'static str {
        match self {
            ServiceKind::Announcer => "announcer",
            ServiceKind::Registry => "registry",
            ServiceKind::Balancer => "balancer",
            ServiceKind::Coordinator => "coordinator",
            ServiceKind::Gateway => "gateway",
        }
    }

    /// The NATS micro service name (`$SRV.PING.<name>`), also the binary name.
    pub fn service_name(self) -> &'static str {
        match self {
            ServiceKind::Announcer => "shoal-announcer",
            ServiceKind::Registry => "shoal-registry",
            ServiceKind::Balancer => "shoal-balancer",
            ServiceKind::Coordinator => "shoal-coordinator",
            ServiceKind::Gateway => "shoal-gateway",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            ServiceKind::Announcer => "announces this node and sends its heartbeats",
            ServiceKind::Registry => "keeps cluster membership and node health",
            ServiceKind::Balancer => "picks nodes for new work",
            ServiceKind::Coordinator => "leader-elected assignment of agents to nodes",
            ServiceKind::Gateway => "serves the HTTP API, metrics and dashboard",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// A request/reply endpoint of a service. Replicas of a service answer the shared
/// subject in one queue group; each replica also answers a direct subject naming its
/// instance, so tests and operators can ask every replica (consistency checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    RegistryNodesList,
    RegistryNodesGet,
    RegistryNodesRegister,
    RegistryNodesUnregister,
    RegistryNodesDrain,
    RegistryNodesUndrain,
    RegistryStats,
    BalancerSelect,
    BalancerSelectBatch,
    BalancerStrategyGet,
    BalancerStrategySet,
    BalancerStats,
    CoordinatorAssign,
    CoordinatorUnassign,
    CoordinatorMove,
    CoordinatorAssignmentsGet,
    CoordinatorAssignmentsList,
    CoordinatorLeaderGet,
    CoordinatorLeaderPromote,
    CoordinatorHistory,
    CoordinatorStats,
    CoordinatorRebalanceGet,
    CoordinatorRebalanceSet,
    CoordinatorRebalanceNow,
}

impl Endpoint {
    pub const ALL: [Endpoint; 24] = [
        Endpoint::RegistryNodesList,
        Endpoint::RegistryNodesGet,
        Endpoint::RegistryNodesRegister,
        Endpoint::RegistryNodesUnregister,
        Endpoint::RegistryNodesDrain,
        Endpoint::RegistryNodesUndrain,
        Endpoint::RegistryStats,
        Endpoint::BalancerSelect,
        Endpoint::BalancerSelectBatch,
        Endpoint::BalancerStrategyGet,
        Endpoint::BalancerStrategySet,
        Endpoint::BalancerStats,
        Endpoint::CoordinatorAssign,
        Endpoint::CoordinatorUnassign,
        Endpoint::CoordinatorMove,
        Endpoint::CoordinatorAssignmentsGet,
        Endpoint::CoordinatorAssignmentsList,
        Endpoint::CoordinatorLeaderGet,
        Endpoint::CoordinatorLeaderPromote,
        Endpoint::CoordinatorHistory,
        Endpoint::CoordinatorStats,
        Endpoint::CoordinatorRebalanceGet,
        Endpoint::CoordinatorRebalanceSet,
        Endpoint::CoordinatorRebalanceNow,
    ];

    pub fn service(self) -> ServiceKind {
        use Endpoint::*;
        match self {
            RegistryNodesList
            | RegistryNodesGet
            | RegistryNodesRegister
            | RegistryNodesUnregister
            | RegistryNodesDrain
            | RegistryNodesUndrain
            | RegistryStats => ServiceKind::Registry,
            BalancerSelect | BalancerSelectBatch | BalancerStrategyGet | BalancerStrategySet
            | BalancerStats => ServiceKind::Balancer,
            CoordinatorAssign
            | CoordinatorUnassign
            | CoordinatorMove
            | CoordinatorAssignmentsGet
            | CoordinatorAssignmentsList
            | CoordinatorLeaderGet
            | CoordinatorLeaderPromote
            | CoordinatorHistory
            | CoordinatorStats
            | CoordinatorRebalanceGet
            | CoordinatorRebalanceSet
            | CoordinatorRebalanceNow => ServiceKind::Coordinator,
        }
    }

    /// The part of the subject after `<prefix>.<service>.`.
    pub fn suffix(self) -> &'static str {
        use Endpoint::*;
        match self {
            RegistryNodesList => "nodes.list",
            RegistryNodesGet => "nodes.get",
            RegistryNodesRegister => "nodes.register",
            RegistryNodesUnregister => "nodes.unregister",
            RegistryNodesDrain => "nodes.drain",
            RegistryNodesUndrain => "nodes.undrain",
            RegistryStats => "stats",
            BalancerSelect => "select",
            BalancerSelectBatch => "select.batch",
            BalancerStrategyGet => "strategy.get",
            BalancerStrategySet => "strategy.set",
            BalancerStats => "stats",
            CoordinatorAssign => "assign",
            CoordinatorUnassign => "unassign",
            CoordinatorMove => "move",
            CoordinatorAssignmentsGet => "assignments.get",
            CoordinatorAssignmentsList => "assignments.list",
            CoordinatorLeaderGet => "leader.get",
            CoordinatorLeaderPromote => "leader.promote",
            CoordinatorHistory => "history",
            CoordinatorStats => "stats",
            CoordinatorRebalanceGet => "rebalance.get",
            CoordinatorRebalanceSet => "rebalance.set",
            CoordinatorRebalanceNow => "rebalance.now",
        }
    }

    /// The NATS micro endpoint name (shown by `$SRV.INFO`): the suffix with dashes.
    pub fn name(self) -> String {
        self.suffix().replace('.', "-")
    }
}

/// What a message on a `<prefix>.node.<id>.<kind>` subject is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeSubjectKind {
    Announce,
    Heartbeat,
    Leave,
    Agents,
}

impl NodeSubjectKind {
    fn token(self) -> &'static str {
        match self {
            NodeSubjectKind::Announce => "announce",
            NodeSubjectKind::Heartbeat => "heartbeat",
            NodeSubjectKind::Leave => "leave",
            NodeSubjectKind::Agents => "agents",
        }
    }
}

/// The last token of an instance's metrics subject.
const METRICS_TOKEN: &str = "metrics";

/// Builds subjects under a prefix (default `shoal`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects {
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }
}

impl Subjects {
    /// A prefix is one or more dot-separated NATS tokens with no wildcards.
    pub fn new(prefix: &str) -> Result<Subjects, crate::ShoalError> {
        if prefix.is_empty()
            || prefix
                .split('.')
                .any(|t| crate::validate::token_problem(t).is_some())
        {
            return Err(crate::ShoalError::bad_request(format!(
                "subject prefix {prefix:?} is not valid: use dot-separated tokens without spaces, `*` or `>`"
            )));
        }
        Ok(Subjects {
            prefix: prefix.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared subject of an endpoint, answered by one replica of the queue group.
    pub fn endpoint(&self, endpoint: Endpoint) -> String {
        format!(
            "{}.{}.{}",
            self.prefix,
            endpoint.service().token(),
            endpoint.suffix()
        )
    }

    /// The subject of an endpoint on one named instance (no queue group).
    pub fn direct(&self, endpoint: Endpoint, instance_id: &str) -> String {
        format!(
            "{}.{}.instance.{}.{}",
            self.prefix,
            endpoint.service().token(),
            instance_id,
            endpoint.suffix()
        )
    }

    /// Where one instance of a service answers with its Prometheus metrics
    /// (OpenMetrics text): `<prefix>.<service>.instance.<instance_id>.metrics`.
    pub fn metrics(&self, service: ServiceKind, instance_id: &str) -> String {
        format!(
            "{}.{}.instance.{}.{METRICS_TOKEN}",
            self.prefix,
            service.token(),
            instance_id
        )
    }

    /// Whether `subject` is an instance's metrics subject (under any prefix): its
    /// reply is OpenMetrics text, not JSON.
    pub fn is_metrics(subject: &str) -> bool {
        let mut tokens = subject.rsplit('.');
        tokens.next() == Some(METRICS_TOKEN) && tokens.nth(1) == Some("instance")
    }

    fn node(&self, id: &str, kind: NodeSubjectKind) -> String {
        format!("{}.node.{}.{}", self.prefix, id, kind.token())
    }

    pub fn node_announce(&self, id: &str) -> String {
        self.node(id, NodeSubjectKind::Announce)
    }
    pub fn node_heartbeat(&self, id: &str) -> String {
        self.node(id, NodeSubjectKind::Heartbeat)
    }
    pub fn node_leave(&self, id: &str) -> String {
        self.node(id, NodeSubjectKind::Leave)
    }
    pub fn node_agents(&self, id: &str) -> String {
        self.node(id, NodeSubjectKind::Agents)
    }

    /// Everything nodes publish or receive: `<prefix>.node.>`. NATS permissions confine
    /// a node to `<prefix>.node.<its id>.>`.
    pub fn node_all(&self) -> String {
        format!("{}.node.>", self.prefix)
    }
    pub fn node_announce_all(&self) -> String {
        self.node("*", NodeSubjectKind::Announce)
    }
    pub fn node_heartbeat_all(&self) -> String {
        self.node("*", NodeSubjectKind::Heartbeat)
    }
    pub fn node_leave_all(&self) -> String {
        self.node("*", NodeSubjectKind::Leave)
    }

    /// Splits `<prefix>.node.<id>.<kind>` into the id and the kind; a heartbeat may
    /// carry its partition after the kind (`….heartbeat.<p>`).
    pub fn parse_node_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, NodeSubjectKind)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".node.")?;
        let (id, kind) = rest.split_once('.')?;
        let kind = match kind {
            "announce" => NodeSubjectKind::Announce,
            "heartbeat" => NodeSubjectKind::Heartbeat,
            // As mapped to a partition (crate::partition).
            k if k
                .strip_prefix("heartbeat.")
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                NodeSubjectKind::Heartbeat
            }
            "leave" => NodeSubjectKind::Leave,
            "agents" => NodeSubjectKind::Agents,
            _ => return None,
        };
        (!id.is_empty()).then_some((id, kind))
    }

    /// Broadcast by a registry that wants every node to announce itself again (a
    /// registry starting with an empty view must not wait for metadata changes).
    pub fn registry_sync(&self) -> String {
        format!("{}.registry.sync", self.prefix)
    }

    pub fn registry_event(&self, node_id: &str) -> String {
        format!("{}.registry.events.{}", self.prefix, node_id)
    }
    pub fn registry_events_all(&self) -> String {
        format!("{}.registry.events.*", self.prefix)
    }

    pub fn coordinator_event(&self, agent_name: &str) -> String {
        format!("{}.coordinator.events.{}", self.prefix, agent_name)
    }
    pub fn coordinator_events_all(&self) -> String {
        format!("{}.coordinator.events.*", self.prefix)
    }

    /// The events of each log record in one message, in log order: what the balancer
    /// counts placements from (one delivery per record instead of one per agent).
    pub fn coordinator_placements(&self) -> String {
        format!("{}.coordinator.placements", self.prefix)
    }

    /// Published by a coordinator when it wins or loses the leader lease.
    pub fn coordinator_leader_changed(&self) -> String {
        format!("{}.coordinator.leader.changed", self.prefix)
    }

    /// The subject of the coordinator's fenced assignment log (a JetStream stream):
    /// only coordinators append to it and read it.
    pub fn coordinator_log(&self) -> String {
        format!("{}.coordinator.log", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_subjects_follow_the_contract() {
        let s = Subjects::default();
        assert_eq!(
            s.endpoint(Endpoint::RegistryNodesList),
            "shoal.registry.nodes.list"
        );
        assert_eq!(
            s.endpoint(Endpoint::BalancerStrategySet),
            "shoal.balancer.strategy.set"
        );
        assert_eq!(
            s.endpoint(Endpoint::CoordinatorAssignmentsGet),
            "shoal.coordinator.assignments.get"
        );
        assert_eq!(s.node_heartbeat("n1"), "shoal.node.n1.heartbeat");
        assert_eq!(
            s.direct(Endpoint::RegistryStats, "r-1"),
            "shoal.registry.instance.r-1.stats"
        );
        assert_eq!(
            s.metrics(ServiceKind::Coordinator, "c-1"),
            "shoal.coordinator.instance.c-1.metrics"
        );
        assert!(Subjects::is_metrics(
            &s.metrics(ServiceKind::Registry, "registry")
        ));
        assert!(Subjects::is_metrics("other.balancer.instance.b.metrics"));
        assert!(!Subjects::is_metrics("shoal.registry.stats"));
        assert!(!Subjects::is_metrics("shoal.node.metrics.heartbeat"));
        assert!(!Subjects::is_metrics("metrics"));
    }

    #[test]
    fn prefix_is_configurable_and_checked() {
        let s = Subjects::new("acme.prod").unwrap();
        assert_eq!(s.node_agents("a"), "acme.prod.node.a.agents");
        assert!(Subjects::new("bad prefix").is_err());
        assert!(Subjects::new("a.*").is_err());
        assert!(Subjects::new("").is_err());
        assert!(Subjects::new("a..b").is_err());
    }

    #[test]
    fn node_subjects_parse_back() {
        let s = Subjects::new("x").unwrap();
        assert_eq!(
            s.parse_node_subject("x.node.n-7.heartbeat"),
            Some(("n-7", NodeSubjectKind::Heartbeat))
        );
        assert_eq!(
            s.parse_node_subject("x.node.n-7.heartbeat.12"),
            Some(("n-7", NodeSubjectKind::Heartbeat))
        );
        assert_eq!(s.parse_node_subject("x.node.n-7.heartbeat.x"), None);
        assert_eq!(s.parse_node_subject("x.node.n-7.leave.1"), None);
        assert_eq!(s.parse_node_subject("x.node.n-7.other"), None);
        assert_eq!(s.parse_node_subject("y.node.n-7.leave"), None);
    }

    #[test]
    fn every_endpoint_has_a_unique_subject() {
        let s = Subjects::default();
        let mut seen = std::collections::HashSet::new();
        for e in Endpoint::ALL {
            assert!(seen.insert(s.endpoint(e)), "duplicate subject for {e:?}");
        }
    }
}
