//! Fixtures for tests of the wire contract, in this crate and in others (feature
//! `test-util`): a valid message of every type the services decode, the decode step
//! for each by name, and [`Node::example`]. Not built into the services.

use serde_json::{Value, json};

use crate::*;

/// A valid message of every type the services decode, by name.
pub fn samples() -> Vec<(&'static str, Value)> {
    let at = "2026-02-10T08:00:00Z";
    vec![
        (
            "Announce",
            json!({"id": "n1", "hostname": "h", "ip_address": "10.0.0.1", "port": 80,
                "role": "worker", "services": ["wrapper"], "labels": {"zone": "a"},
                "max_agents": 5, "version": "1", "features": ["gpu"], "started_at": at,
                "heartbeat_interval": 2.5}),
        ),
        (
            "Heartbeat",
            json!({"id": "n1", "seq": 1, "cpu_usage": 10.0, "memory_usage": 20.0,
                "disk_usage": 30.0, "load_average": 0.5, "active_agents": 1, "uptime_s": 1,
                "sent_at": at, "agents_digest": {"count": 1, "hash": "0123456789abcdef"}}),
        ),
        ("Leave", json!({"id": "n1", "reason": "bye", "sent_at": at})),
        (
            "AgentNotice",
            json!({"action": "start", "agent_name": "a1", "node_id": "n1", "epoch": 1, "at": at}),
        ),
        (
            "AgentSync",
            json!({"action": "sync", "node_id": "n1", "agents": ["a1"], "epoch": 1, "at": at,
                "part": 1, "parts": 1, "digest": {"count": 1, "hash": "0123456789abcdef"}}),
        ),
        ("SyncRequest", json!({"ids": ["n1", "n2"]})),
        (
            "ListNodesRequest",
            json!({"role": "worker", "service": "s", "status": "online", "label": "zone=a",
                "after": "n0", "limit": 10}),
        ),
        ("NodeIdRequest", json!({"id": "n1"})),
        (
            "RegisterNodeRequest",
            json!({"id": "n1", "hostname": "h", "ip_address": "10.0.0.1", "port": 1,
                "role": "standby", "max_agents": 3, "services": ["s"], "labels": {"k": "v"},
                "heartbeat_interval": 30}),
        ),
        (
            "SelectRequest",
            json!({"service": "s", "labels": {"k": "v"}, "strategy": "weighted",
                "exclude": ["n2"], "resources": {"cpu": 1.5, "memory": 2.0}}),
        ),
        (
            "SelectBatchRequest",
            json!({"selections": [{"service": "s"}, {"exclude": ["n1"]}]}),
        ),
        ("StrategyMessage", json!({"strategy": "round_robin"})),
        (
            "AssignRequest",
            json!({"agent_name": "a1", "service": "s", "labels": {"k": "v"}, "node_id": "n1",
                "request_id": "r-1", "resources": {"cpu": 1.0, "memory": 0.5}}),
        ),
        ("AgentNameRequest", json!({"agent_name": "a1"})),
        (
            "UnassignRequest",
            json!({"agent_name": "a1", "request_id": "r-3"}),
        ),
        (
            "MoveRequest",
            json!({"agent_name": "a1", "node_id": "n2", "request_id": "r-2"}),
        ),
        (
            "ListAssignmentsRequest",
            json!({"node_id": "n1", "status": "orphaned", "after": "a0", "limit": 10}),
        ),
        ("PromoteRequest", json!({"coordinator_id": "c2"})),
        (
            "HistoryRequest",
            json!({"agent_name": "a1", "node_id": "n1", "since": at, "until": at, "limit": 10}),
        ),
        (
            "RebalanceUpdate",
            json!({"enabled": true, "max_moves_per_minute": 120, "threshold": 3}),
        ),
        ("RebalanceNowRequest", json!({"dry_run": true})),
        ("Empty", json!({})),
    ]
}

/// Decodes `payload` as the message `name`: Ok, or the error.
pub fn decode_as(name: &str, payload: &[u8]) -> Result<(), ShoalError> {
    match name {
        "Announce" => decode::<Announce>(payload).map(drop),
        "Heartbeat" => decode::<Heartbeat>(payload).map(drop),
        "Leave" => decode::<Leave>(payload).map(drop),
        "AgentNotice" | "AgentSync" => decode::<AgentNotice>(payload).map(drop),
        "SyncRequest" => decode::<SyncRequest>(payload).map(drop),
        "ListNodesRequest" => decode::<ListNodesRequest>(payload).map(drop),
        "NodeIdRequest" => decode::<NodeIdRequest>(payload).map(drop),
        "RegisterNodeRequest" => decode::<RegisterNodeRequest>(payload).map(drop),
        "SelectRequest" => decode::<SelectRequest>(payload).map(drop),
        "SelectBatchRequest" => decode::<SelectBatchRequest>(payload).map(drop),
        "StrategyMessage" => decode::<StrategyMessage>(payload).map(drop),
        "AssignRequest" => decode::<AssignRequest>(payload).map(drop),
        "AgentNameRequest" => decode::<AgentNameRequest>(payload).map(drop),
        "UnassignRequest" => decode::<UnassignRequest>(payload).map(drop),
        "MoveRequest" => decode::<MoveRequest>(payload).map(drop),
        "ListAssignmentsRequest" => decode::<ListAssignmentsRequest>(payload).map(drop),
        "PromoteRequest" => decode::<PromoteRequest>(payload).map(drop),
        "HistoryRequest" => decode::<HistoryRequest>(payload).map(drop),
        "RebalanceUpdate" => decode::<RebalanceUpdate>(payload).map(drop),
        "RebalanceNowRequest" => decode::<RebalanceNowRequest>(payload).map(drop),
        "Empty" => decode::<Empty>(payload).map(drop),
        other => panic!("no decoder for {other}"),
    }
}

/// Values that break some rule in most places: wrong types, invalid ids and times,
/// out-of-range and oversized values.
pub fn hostile_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(""),
        json!("a.b"),
        json!("a/b"),
        json!("n1 n2"),
        json!("2026-1-29T06:26:19Z"),
        json!("x".repeat(300)),
        json!([]),
        json!([1, "two", null]),
        json!({}),
        json!({"nested": {"deep": [1]}}),
    ]
}

impl Node {
    /// An online worker as the registry writes it after the node's first heartbeat:
    /// 10 agent slots, none used, 1 % CPU, memory and disk, no services or labels.
    /// Tests change the fields they care about: `Node { max_agents: 3,
    /// ..Node::example("n1") }`.
    pub fn example(id: &str) -> Node {
        let now = chrono::Utc::now();
        let (cpu_usage, memory_usage, max_agents) = (1.0, 1.0, 10);
        Node {
            id: id.to_string(),
            hostname: format!("host-{id}"),
            ip_address: "10.0.0.1".to_string(),
            port: 8151,
            address: "10.0.0.1:8151".to_string(),
            role: NodeRole::Worker,
            status: NodeStatus::Online,
            healthy: true,
            active_agents: 0,
            max_agents,
            capacity: 1.0,
            load: load_score(cpu_usage, memory_usage, 0, max_agents),
            cpu_usage,
            memory_usage,
            disk_usage: 1.0,
            load_average: 0.1,
            uptime: format_uptime(1),
            uptime_s: 1,
            last_seen: now,
            services: Vec::new(),
            labels: Default::default(),
            version: "0.1.0".to_string(),
            features: Vec::new(),
            started_at: now,
            draining: false,
            manual: false,
            heartbeat_interval: None,
        }
    }
}
