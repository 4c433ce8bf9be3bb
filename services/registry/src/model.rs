//! Node records: built from announces and registrations, refreshed from heartbeats,
//! filtered for `nodes.list`, summed for `stats`. Pure functions, no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shoal_protocol::{
    Announce, ListNodesRequest, Node, NodeStatus, RegisterNodeRequest, RegistryStats, load_score,
    slot_share,
};

/// The metrics of the last heartbeat.
pub use shoal_protocol::NodeMetrics as Metrics;

/// A fresh node record for a node that announced itself.
pub fn from_announce(a: &Announce, now: DateTime<Utc>) -> Node {
    let mut node = Node {
        started_at: a.started_at,
        ..Node::blank(&a.id, now)
    };
    apply_identity(&mut node, a);
    node
}

/// Copies an announce's identity onto `node`; true if anything changed.
pub fn apply_identity(node: &mut Node, a: &Announce) -> bool {
    let before = node.clone();
    node.hostname.clone_from(&a.hostname);
    node.ip_address.clone_from(&a.ip_address);
    node.port = a.port;
    node.address = address(&a.ip_address, a.port);
    node.role = a.role;
    node.services.clone_from(&a.services);
    node.labels.clone_from(&a.labels);
    node.max_agents = a.max_agents;
    node.version.clone_from(&a.version);
    node.features.clone_from(&a.features);
    node.started_at = a.started_at;
    node.heartbeat_interval = a.heartbeat_interval;
    node.manual = false;
    derive(node);
    *node != before
}

/// A node record for a manual registration, or `existing` with its identity replaced.
pub fn from_registration(
    r: &RegisterNodeRequest,
    existing: Option<&Node>,
    now: DateTime<Utc>,
) -> Node {
    let mut node = existing.cloned().unwrap_or_else(|| {
        let mut node = from_announce(
            &Announce {
                id: r.id.clone(),
                hostname: r.hostname.clone(),
                ip_address: r.ip_address.clone(),
                port: r.port,
                role: r.role,
                services: Vec::new(),
                labels: BTreeMap::new(),
                max_agents: r.max_agents,
                version: String::new(),
                features: Vec::new(),
                started_at: now,
                heartbeat_interval: None,
            },
            now,
        );
        node.manual = true;
        node
    });
    node.hostname.clone_from(&r.hostname);
    node.ip_address.clone_from(&r.ip_address);
    node.port = r.port;
    node.address = address(&r.ip_address, r.port);
    node.role = r.role;
    node.max_agents = r.max_agents;
    node.services.clone_from(&r.services);
    node.labels.clone_from(&r.labels);
    node.heartbeat_interval = r.heartbeat_interval;
    derive(&mut node);
    node
}

fn address(ip: &str, port: u16) -> String {
    format!("{ip}:{port}")
}

/// Puts heartbeat metrics on a node record.
pub fn apply_metrics(node: &mut Node, m: &Metrics, seen: DateTime<Utc>) {
    node.set_metrics(m);
    if seen > node.last_seen {
        node.last_seen = seen;
    }
    derive(node);
}

/// Whether the stored metrics differ from the last heartbeat's.
pub fn metrics_differ(node: &Node, m: &Metrics) -> bool {
    node.cpu_usage != m.cpu_usage
        || node.memory_usage != m.memory_usage
        || node.disk_usage != m.disk_usage
        || node.load_average != m.load_average
        || node.active_agents != m.active_agents
}

/// Sets a status and what follows from it.
pub fn set_status(node: &mut Node, status: NodeStatus) {
    node.status = status;
    derive(node);
}

/// Online or draining, per the persisted `draining` flag.
pub fn alive_status(node: &Node) -> NodeStatus {
    if node.draining {
        NodeStatus::Draining
    } else {
        NodeStatus::Online
    }
}

pub fn is_alive(status: NodeStatus) -> bool {
    matches!(status, NodeStatus::Online | NodeStatus::Draining)
}

/// An offline or departed node runs nothing: its agents are moved off, whatever it
/// last reported.
pub fn runs_nothing(status: NodeStatus) -> bool {
    matches!(status, NodeStatus::Offline | NodeStatus::Left)
}

/// Fields computed from others: healthy, capacity, load; an offline or departed
/// node runs nothing (its agents are moved off), whatever it last reported.
fn derive(node: &mut Node) {
    node.healthy = is_alive(node.status);
    if runs_nothing(node.status) {
        node.active_agents = 0;
    }
    node.capacity = 1.0 - slot_share(node.active_agents, node.max_agents);
    node.load = load_score(
        node.cpu_usage,
        node.memory_usage,
        node.active_agents,
        node.max_agents,
    );
}

/// Whether `node` passes every filter of a `nodes.list` request.
pub fn matches(node: &Node, filter: &ListNodesRequest) -> bool {
    filter.role.is_none_or(|r| node.role == r)
        && filter.status.is_none_or(|s| node.status == s)
        && filter
            .service
            .as_deref()
            .is_none_or(|s| node.has_service(s))
        && filter
            .label
            .as_deref()
            .is_none_or(|l| match l.split_once('=') {
                Some((k, v)) => node.labels.get(k).is_some_and(|x| x == v),
                None => node.labels.contains_key(l),
            })
}

/// The REST API's cluster statistics over `nodes`, each with the agent count it is
/// served with (its latest heartbeat's): no node is copied to count it.
pub fn stats<'a>(
    nodes: impl Iterator<Item = (&'a Node, u32)>,
    rejected_messages: u64,
) -> RegistryStats {
    let mut s = RegistryStats {
        rejected_messages,
        ..RegistryStats::default()
    };
    let mut by_role: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for (node, active_agents) in nodes {
        s.total_nodes += 1;
        s.healthy_nodes += usize::from(node.healthy);
        s.online_nodes += usize::from(node.status == NodeStatus::Online);
        s.total_agents += u64::from(active_agents);
        s.max_agents += u64::from(node.max_agents);
        *by_role.entry(node.role.as_str()).or_default() += 1;
        *by_status.entry(node.status.as_str()).or_default() += 1;
    }
    let named = |counts: BTreeMap<&str, usize>| {
        counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    };
    s.nodes_by_role = named(by_role);
    s.nodes_by_status = named(by_status);
    s.utilization_pct = if s.max_agents == 0 {
        0.0
    } else {
        // One decimal, as the REST API shows it (26.7).
        (s.total_agents as f64 / s.max_agents as f64 * 1000.0).round() / 10.0
    };
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use shoal_protocol::NodeRole;

    use super::*;

    pub fn announce(id: &str) -> Announce {
        Announce {
            id: id.into(),
            hostname: format!("{id}.host"),
            ip_address: "10.0.0.1".into(),
            port: 8151,
            role: NodeRole::Worker,
            services: vec!["wrapper".into()],
            labels: BTreeMap::from([("zone".into(), "eu".into())]),
            max_agents: 10,
            version: "1.0".into(),
            features: vec![],
            started_at: Utc::now(),
            heartbeat_interval: None,
        }
    }

    #[test]
    fn announce_builds_a_rest_api_shaped_node() {
        let node = from_announce(&announce("n1"), Utc::now());
        assert_eq!(node.address, "10.0.0.1:8151");
        assert_eq!(node.status, NodeStatus::Online);
        assert!(node.healthy);
        assert_eq!(node.capacity, 1.0);
        let mut again = node.clone();
        assert!(!apply_identity(
            &mut again,
            &announce("n1").clone_with_time(node.started_at)
        ));
    }

    trait WithTime {
        fn clone_with_time(&self, t: DateTime<Utc>) -> Announce;
    }
    impl WithTime for Announce {
        fn clone_with_time(&self, t: DateTime<Utc>) -> Announce {
            Announce {
                started_at: t,
                ..self.clone()
            }
        }
    }

    #[test]
    fn metrics_drive_capacity_and_load() {
        let mut node = from_announce(&announce("n1"), Utc::now());
        let m = Metrics {
            cpu_usage: 50.0,
            memory_usage: 40.0,
            disk_usage: 10.0,
            load_average: 1.0,
            active_agents: 5,
            uptime_s: 8130,
        };
        apply_metrics(&mut node, &m, Utc::now());
        assert_eq!(node.capacity, 0.5);
        assert_eq!(node.uptime, "2h15m30s");
        assert!((node.load - (0.20 + 0.12 + 0.15)).abs() < 1e-9);
        assert!(!metrics_differ(&node, &m));
        assert!(metrics_differ(
            &node,
            &Metrics {
                active_agents: 6,
                ..m
            }
        ));
    }

    #[test]
    fn filters_match_role_service_status_and_label() {
        let node = from_announce(&announce("n1"), Utc::now());
        let f = |json: &str| serde_json::from_str::<ListNodesRequest>(json).unwrap();
        assert!(matches(&node, &f("{}")));
        assert!(matches(
            &node,
            &f(r#"{"role":"worker","service":"wrapper"}"#)
        ));
        assert!(!matches(&node, &f(r#"{"role":"leader"}"#)));
        assert!(!matches(&node, &f(r#"{"service":"db"}"#)));
        assert!(matches(&node, &f(r#"{"status":"online"}"#)));
        assert!(!matches(&node, &f(r#"{"status":"offline"}"#)));
        assert!(matches(&node, &f(r#"{"label":"zone=eu"}"#)));
        assert!(matches(&node, &f(r#"{"label":"zone"}"#)));
        assert!(!matches(&node, &f(r#"{"label":"zone=us"}"#)));
    }

    #[test]
    fn stats_follow_the_rest_api() {
        let mut a = from_announce(&announce("a"), Utc::now());
        a.role = NodeRole::Leader;
        a.active_agents = 5;
        let mut b = from_announce(&announce("b"), Utc::now());
        b.active_agents = 3;
        let mut c = from_announce(&announce("c"), Utc::now());
        set_status(&mut c, NodeStatus::Offline);
        let s = stats([&a, &b, &c].map(|n| (n, n.active_agents)).into_iter(), 2);
        assert_eq!((s.total_nodes, s.healthy_nodes, s.online_nodes), (3, 2, 2));
        assert_eq!((s.total_agents, s.max_agents), (8, 30));
        assert_eq!(s.utilization_pct, 26.7);
        assert_eq!(s.nodes_by_role["leader"], 1);
        assert_eq!(s.nodes_by_status["offline"], 1);
        assert_eq!(s.rejected_messages, 2);
    }

    #[test]
    fn registration_keeps_the_existing_status() {
        let r = RegisterNodeRequest {
            id: "m1".into(),
            hostname: "h".into(),
            ip_address: "10.0.0.2".into(),
            port: 1,
            role: NodeRole::Standby,
            max_agents: 20,
            services: vec!["db".into()],
            labels: BTreeMap::new(),
            heartbeat_interval: Some(30.0),
        };
        let node = from_registration(&r, None, Utc::now());
        assert!(node.manual);
        assert_eq!(node.address, "10.0.0.2:1");
        assert_eq!(node.heartbeat_interval, Some(30.0));
        let mut drained = node.clone();
        drained.draining = true;
        set_status(&mut drained, NodeStatus::Draining);
        let again = from_registration(&r, Some(&drained), Utc::now());
        assert_eq!(again.status, NodeStatus::Draining);
        assert!(again.draining);
        // A registration replaces the identity: leaving the interval out resets it.
        let unpaced = RegisterNodeRequest {
            heartbeat_interval: None,
            ..r
        };
        let reset = from_registration(&unpaced, Some(&again), Utc::now());
        assert_eq!(reset.heartbeat_interval, None);
    }
}
