//! Every protocol type round-trips through JSON and validates against its committed
//! schema in `schemas/`; the drift check fails when a committed schema changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shoal_protocol::catalogue::{check_schemas, message_schemas, write_schemas};
use shoal_protocol::*;

#[path = "schemas/rebalance.rs"]
mod rebalance;

fn committed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn node() -> Node {
    Node {
        hostname: "server1".into(),
        role: NodeRole::Leader,
        active_agents: 5,
        capacity: 0.5,
        load: 0.52,
        cpu_usage: 42.5,
        memory_usage: 65.2,
        disk_usage: 55.0,
        load_average: 2.5,
        uptime: "2h15m30s".into(),
        uptime_s: 8130,
        last_seen: Utc.with_ymd_and_hms(2026, 2, 10, 8, 18, 55).unwrap(),
        services: vec!["wrapper".into(), "database".into()],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        features: vec!["gpu".into()],
        started_at: Utc.with_ymd_and_hms(2026, 2, 10, 6, 3, 25).unwrap(),
        ..Node::example("node-1")
    }
}

fn leader() -> LeaderInfo {
    LeaderInfo {
        coordinator_id: "coord-a".into(),
        epoch: 7,
        since: Utc.with_ymd_and_hms(2026, 2, 10, 8, 0, 0).unwrap(),
    }
}

fn assignment() -> Assignment {
    Assignment {
        agent_name: "codex".into(),
        node_id: "node-1".into(),
        assigned_at: Utc.with_ymd_and_hms(2026, 2, 10, 8, 0, 0).unwrap(),
        status: AssignmentStatus::Running,
        epoch: 7,
        service: Some("wrapper".into()),
        labels: BTreeMap::new(),
        request_id: Some("r-1".into()),
        resources: Some(Resources {
            cpu: 2.5,
            memory: 1.0,
        }),
        group: Some("codex-pool".into()),
        spread_by: Some("zone".into()),
        anti_affinity: true,
        pinned: true,
    }
}

/// One sample of every message type, round-tripped through its Rust type.
fn samples() -> BTreeMap<&'static str, Value> {
    let at = Utc.with_ymd_and_hms(2026, 2, 10, 8, 0, 0).unwrap();
    let registry_stats = RegistryStats {
        total_nodes: 3,
        healthy_nodes: 3,
        online_nodes: 3,
        total_agents: 8,
        max_agents: 30,
        utilization_pct: 26.7,
        nodes_by_role: BTreeMap::from([("leader".into(), 1), ("worker".into(), 2)]),
        nodes_by_status: BTreeMap::from([("online".into(), 3)]),
        rejected_messages: 0,
    };
    let balancer_stats = BalancerStats {
        strategy: Strategy::LeastLoaded,
        selections: 12,
        selections_by_strategy: BTreeMap::from([("least_loaded".into(), 12)]),
        no_capacity: 1,
        round_robin_index: 0,
        nodes: 3,
        unmeasured_nodes: 0,
        estimated_load: Some(LoadSpread {
            min: 0.21,
            max: 0.228,
            agent_cost: 0.0073,
            pending: 40,
        }),
    };
    let mut out = BTreeMap::new();
    macro_rules! sample {
        ($t:ident, $v:expr) => {
            out.insert(stringify!($t), round_trip::<$t>($v));
        };
    }
    sample!(
        Announce,
        Announce {
            id: "node-1".into(),
            hostname: "server1".into(),
            ip_address: "10.0.0.1".into(),
            port: 8151,
            role: NodeRole::Worker,
            services: vec!["wrapper".into()],
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            max_agents: 20,
            version: "0.1.0".into(),
            features: vec![],
            started_at: at,
            heartbeat_interval: None,
        }
    );
    sample!(
        Heartbeat,
        Heartbeat {
            id: "node-1".into(),
            seq: 42,
            cpu_usage: 45.3,
            memory_usage: 62.1,
            disk_usage: 55.0,
            load_average: 2.5,
            active_agents: 3,
            uptime_s: 100,
            sent_at: at,
            agents_digest: Some(DigestSum::of(["a1", "a2", "a3"]).digest()),
        }
    );
    sample!(
        Leave,
        Leave {
            id: "node-1".into(),
            reason: Some("shutdown".into()),
            sent_at: at
        }
    );
    sample!(
        AgentNotice,
        AgentNotice::Sync(AgentSync {
            node_id: "node-1".into(),
            agents: vec!["codex".into(), "claude".into()],
            epoch: 7,
            at,
            part: 1,
            parts: 1,
            digest: DigestSum::of(["codex", "claude"]).digest(),
        })
    );
    sample!(
        SyncRequest,
        SyncRequest {
            ids: vec!["node-1".into()]
        }
    );
    sample!(Node, node());
    sample!(
        ListNodesRequest,
        ListNodesRequest {
            role: Some(NodeRole::Worker),
            service: Some("wrapper".into()),
            status: Some(NodeStatus::Online),
            label: Some("zone=a".into()),
            after: Some("node-0".into()),
            limit: Some(100),
        }
    );
    sample!(
        NodeList,
        NodeList {
            nodes: vec![node()],
            count: 1,
            next: Some("node-1".into()),
        }
    );
    sample!(
        NodeIdRequest,
        NodeIdRequest {
            id: "node-1".into()
        }
    );
    sample!(
        RegisterNodeRequest,
        RegisterNodeRequest {
            id: "node-2".into(),
            hostname: "server2".into(),
            ip_address: "10.0.0.2".into(),
            port: 8151,
            role: NodeRole::Worker,
            max_agents: 20,
            services: vec!["wrapper".into(), "database".into()],
            labels: BTreeMap::new(),
            heartbeat_interval: Some(30.0),
        }
    );
    sample!(
        NodeChangeReply,
        NodeChangeReply {
            success: true,
            node: Some(node())
        }
    );
    sample!(RegistryStats, registry_stats.clone());
    sample!(
        NodeEvent,
        NodeEvent {
            event: NodeEventKind::Offline,
            node_id: "node-1".into(),
            status: NodeStatus::Offline,
            previous_status: Some(NodeStatus::Suspect),
            reason: Some("3 heartbeats missed".into()),
            node: Some(node()),
            at,
        }
    );
    sample!(
        SelectRequest,
        SelectRequest {
            service: Some("wrapper".into()),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            strategy: Some(Strategy::Weighted),
            exclude: vec!["node-3".into()],
            resources: Some(Resources {
                cpu: 5.0,
                memory: 2.0,
            }),
        }
    );
    sample!(
        SelectReply,
        SelectReply {
            node_id: "node-1".into(),
            node: node(),
            strategy: Strategy::LeastAgents,
            candidates: vec![Candidate {
                node_id: "node-1".into(),
                score: 5.0
            }],
        }
    );
    let picked = SelectOutcome::new(Ok(SelectReply {
        node_id: "node-1".into(),
        node: node(),
        strategy: Strategy::LeastAgents,
        candidates: vec![Candidate {
            node_id: "node-1".into(),
            score: 5.0,
        }],
    }));
    let failed = SelectOutcome::new(Err(ShoalError::no_capacity("no node offers wrapper")));
    sample!(
        SelectBatchRequest,
        SelectBatchRequest {
            selections: vec![
                SelectRequest::default(),
                SelectRequest {
                    service: Some("wrapper".into()),
                    ..SelectRequest::default()
                },
            ],
        }
    );
    sample!(SelectOutcome, failed.clone());
    sample!(
        SelectBatchReply,
        SelectBatchReply {
            results: vec![picked, failed],
        }
    );
    sample!(
        StrategyMessage,
        StrategyMessage {
            strategy: Strategy::RoundRobin
        }
    );
    sample!(BalancerStats, balancer_stats.clone());
    sample!(
        AssignRequest,
        AssignRequest {
            agent_name: "codex".into(),
            service: Some("wrapper".into()),
            labels: BTreeMap::new(),
            node_id: None,
            request_id: Some("r-1".into()),
            resources: None,
            group: Some("codex-pool".into()),
            spread_by: Some("zone".into()),
            anti_affinity: true,
        }
    );
    sample!(
        MoveRequest,
        MoveRequest {
            agent_name: "codex".into(),
            node_id: Some("node-2".into()),
            request_id: Some("r-2".into()),
        }
    );
    sample!(Assignment, assignment());
    sample!(
        AgentNameRequest,
        AgentNameRequest {
            agent_name: "codex".into()
        }
    );
    sample!(
        UnassignRequest,
        UnassignRequest {
            agent_name: "codex".into(),
            request_id: Some("r-3".into()),
        }
    );
    sample!(
        UnassignReply,
        UnassignReply {
            success: true,
            agent_name: "codex".into(),
            node_id: "node-1".into(),
            epoch: 7,
        }
    );
    sample!(
        ListAssignmentsRequest,
        ListAssignmentsRequest {
            node_id: Some("node-1".into()),
            status: Some(AssignmentStatus::Orphaned),
            group: Some("codex-pool".into()),
            after: Some("agent-0".into()),
            limit: Some(100),
        }
    );
    sample!(
        AssignmentList,
        AssignmentList {
            assignments: vec![assignment()],
            count: 1,
            next: Some("codex".into()),
        }
    );
    sample!(
        LeaderReply,
        LeaderReply {
            leader: Some(leader()),
            coordinator_id: "coord-b".into(),
            is_leader: false
        }
    );
    sample!(
        PromoteRequest,
        PromoteRequest {
            coordinator_id: "coord-b".into()
        }
    );
    sample!(
        PromoteReply,
        PromoteReply {
            success: true,
            leader: leader()
        }
    );
    sample!(
        HistoryRequest,
        HistoryRequest {
            agent_name: Some("codex".into()),
            node_id: None,
            since: Some(at),
            until: None,
            limit: Some(50),
            before: Some(HistoryCursor {
                log_seq: 40,
                log_index: 2,
            }),
        }
    );
    sample!(
        HistoryReply,
        HistoryReply {
            history: vec![HistoryEntry {
                event_id: "e-1".into(),
                log_seq: 12,
                log_index: 0,
                agent_name: "codex".into(),
                node_id: Some("node-2".into()),
                previous_node_id: Some("node-1".into()),
                action: AssignmentAction::Orphaned,
                reason: "node node-1 offline".into(),
                leader_id: "coord-a".into(),
                epoch: 7,
                at,
                candidates: Some(json!([{"node_id": "node-2", "score": 1.0}])),
            }],
            count: 1,
            next: Some(HistoryCursor {
                log_seq: 12,
                log_index: 0,
            }),
        }
    );
    sample!(
        AssignmentEvent,
        AssignmentEvent {
            event: AssignmentAction::Migrated,
            agent_name: "codex".into(),
            node_id: Some("node-2".into()),
            previous_node_id: Some("node-1".into()),
            reason: "drained".into(),
            epoch: 7,
            at,
            resources: None,
        }
    );
    sample!(
        AssignmentEvents,
        AssignmentEvents {
            events: vec![AssignmentEvent {
                event: AssignmentAction::Assigned,
                agent_name: "codex-2".into(),
                node_id: Some("node-1".into()),
                previous_node_id: None,
                reason: "balanced".into(),
                epoch: 7,
                at,
                resources: Some(Resources {
                    cpu: 2.5,
                    memory: 1.0,
                }),
            }],
        }
    );
    sample!(
        LeaderChanged,
        LeaderChanged {
            leader: Some(leader()),
            previous: Some("coord-b".into()),
            at
        }
    );
    sample!(
        ClusterStats,
        ClusterStats {
            local_node: "coord-a".into(),
            is_leader: true,
            leader: Some(leader()),
            total_assignments: 8,
            registry: Some(registry_stats),
            balancer: Some(balancer_stats),
            reassignments_paused: false,
            reassignments: 0,
            agents_by_status: BTreeMap::from([
                (AssignmentStatus::Running, 7),
                (AssignmentStatus::Orphaned, 1),
                (AssignmentStatus::Migrating, 0),
            ]),
            waiting_agents: 1,
            log_seq: 42,
        }
    );
    sample!(Empty, Empty {});
    out.extend(rebalance::samples());
    sample!(
        ErrorEnvelope,
        ShoalError::no_capacity("no online node offers service \"gpu\"")
            .with_details(json!({"service": "gpu"}))
            .envelope()
    );
    out
}

/// Serialises, deserialises and serialises again: the JSON must not change.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) -> Value {
    let json = serde_json::to_value(&value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, value, "{json}");
    json
}

#[test]
fn every_message_round_trips_and_validates_against_its_committed_schema() {
    let samples = samples();
    let names: BTreeSet<_> = message_schemas().keys().copied().collect();
    let sampled: BTreeSet<_> = samples.keys().copied().collect();
    assert_eq!(names, sampled, "every message type needs a sample here");
    for (name, value) in samples {
        let path = committed_dir().join(format!("{name}.json"));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{name} sample does not match {}: {errors:?}",
            path.display()
        );
    }
}

#[test]
fn schemas_reject_what_the_types_reject() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(committed_dir().join("StrategyMessage.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&json!({"strategy": "weighted"})));
    assert!(!validator.is_valid(&json!({"strategy": "fastest"})));
    assert!(!validator.is_valid(&json!({})));
}

#[test]
fn committed_schemas_match_the_protocol_types() {
    let drift = check_schemas(&committed_dir()).unwrap();
    assert!(
        drift.is_empty(),
        "schemas/ is out of date ({drift:?}); run: cargo run -p shoal-protocol --bin shoal-schemas -- write"
    );
}

#[test]
fn drift_check_fails_on_a_changed_missing_or_stale_schema() {
    let dir = tempfile::tempdir().unwrap();
    write_schemas(dir.path()).unwrap();
    assert_eq!(check_schemas(dir.path()).unwrap(), Vec::<String>::new());

    let heartbeat = dir.path().join("Heartbeat.json");
    let edited = std::fs::read_to_string(&heartbeat)
        .unwrap()
        .replace("\"seq\"", "\"sequence\"");
    std::fs::write(&heartbeat, edited).unwrap();
    std::fs::remove_file(dir.path().join("Node.json")).unwrap();
    std::fs::write(dir.path().join("Retired.json"), "{}").unwrap();

    let drift = check_schemas(dir.path()).unwrap();
    assert_eq!(
        drift,
        vec![
            "Heartbeat.json: differs from the generated schema".to_string(),
            "Node.json: missing".to_string(),
            "Retired.json: stale, no protocol type generates it".to_string(),
        ]
    );

    // The command CI runs exits non-zero on that drift, and zero once rewritten.
    let bin = env!("CARGO_BIN_EXE_shoal-schemas");
    let status = std::process::Command::new(bin)
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("Heartbeat.json"));
    write_schemas(dir.path()).unwrap();
    let status = std::process::Command::new(bin)
        .arg("check")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn asyncapi_lists_every_subject_with_publishers_and_subscribers() {
    let text = std::fs::read_to_string(committed_dir().join("asyncapi.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let channels = doc["channels"].as_object().unwrap();
    let subjects = Subjects::default();
    for e in Endpoint::ALL {
        let subject = subjects.endpoint(e);
        let channel = channels
            .values()
            .find(|c| c["address"] == subject)
            .unwrap_or_else(|| panic!("{subject} missing from asyncapi.yaml"));
        assert!(!channel["x-subscribers"].as_array().unwrap().is_empty());
    }
    for subject in [
        "shoal.node.{node_id}.heartbeat",
        "shoal.registry.events.{node_id}",
        "shoal.coordinator.events.{agent_name}",
        "shoal.coordinator.placements",
    ] {
        assert!(
            channels.values().any(|c| c["address"] == subject),
            "{subject}"
        );
    }
    // Every operation's reply may be the error envelope.
    for (id, op) in doc["operations"].as_object().unwrap() {
        if let Some(reply) = op.get("reply") {
            let refs = reply["messages"].to_string();
            assert!(refs.contains("ErrorEnvelope"), "{id}");
        }
    }
}

#[test]
fn start_and_stop_notices_keep_their_wire_form_and_match_the_schema() {
    let at = Utc.with_ymd_and_hms(2026, 2, 10, 8, 0, 0).unwrap();
    let start = AgentNotice::Start(AgentChange {
        agent_name: "codex".into(),
        node_id: "node-1".into(),
        epoch: 7,
        at,
    });
    let json = serde_json::to_value(&start).unwrap();
    assert_eq!(
        json,
        json!({"action": "start", "agent_name": "codex", "node_id": "node-1", "epoch": 7, "at": "2026-02-10T08:00:00Z"})
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(committed_dir().join("AgentNotice.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&json));
    let mut stop = json.clone();
    stop["action"] = json!("stop");
    assert!(validator.is_valid(&stop));
    // A sync without its list is not a notice.
    assert!(!validator.is_valid(
        &json!({"action": "sync", "node_id": "node-1", "epoch": 7, "at": "2026-02-10T08:00:00Z"})
    ));
    let decoded: AgentNotice = decode(serde_json::to_vec(&stop).unwrap().as_slice()).unwrap();
    assert_eq!(decoded.action(), "stop");
}

#[test]
fn limits_are_the_same_in_the_schemas_and_the_decode_step() {
    let validator = |name: &str| {
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(committed_dir().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        jsonschema::validator_for(&schema).unwrap()
    };
    let assign = validator("AssignRequest");
    let labels = |n: usize, key: usize, value: usize| -> Value {
        (0..n)
            .map(|i| (format!("{i:0>key$}"), json!("v".repeat(value))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let cases = [
        (json!({"agent_name": "a-1_B"}), true),
        (json!({"agent_name": "a/b"}), false),
        (json!({"agent_name": "a=b"}), false),
        (json!({"agent_name": "x".repeat(129)}), false),
        (
            json!({"agent_name": "a", "labels": labels(64, 128, 255)}),
            true,
        ),
        (
            json!({"agent_name": "a", "labels": labels(65, 8, 1)}),
            false,
        ),
        (
            json!({"agent_name": "a", "labels": labels(1, 129, 1)}),
            false,
        ),
        (
            json!({"agent_name": "a", "labels": labels(1, 8, 256)}),
            false,
        ),
        (
            json!({"agent_name": "a", "service": "s".repeat(129)}),
            false,
        ),
        (
            json!({"agent_name": "a", "request_id": "r".repeat(256)}),
            false,
        ),
        // Lengths count characters, in the schema and in the check alike.
        (
            json!({"agent_name": "a", "request_id": "é".repeat(255)}),
            true,
        ),
        (
            json!({"agent_name": "a", "labels": {"k": "日".repeat(255)}}),
            true,
        ),
        // Blank is not a name, a request id or a label key.
        (json!({"agent_name": "a", "request_id": ""}), false),
        (json!({"agent_name": "a", "request_id": " \t"}), false),
        (json!({"agent_name": "a", "request_id": "\u{3000}"}), false),
        (json!({"agent_name": "a", "request_id": " x "}), true),
        (json!({"agent_name": "a", "service": " "}), false),
        (json!({"agent_name": "a", "labels": {" ": "v"}}), false),
        // A whole number written with a fraction is an integer to both.
        (json!({"agent_name": "a", "resources": {"cpu": 1.0}}), true),
    ];
    for (request, ok) in cases {
        let bytes = serde_json::to_vec(&request).unwrap();
        assert_eq!(assign.is_valid(&request), ok, "schema: {request}");
        assert_eq!(
            decode::<AssignRequest>(&bytes).is_ok(),
            ok,
            "decode: {request}"
        );
    }
    let select = validator("SelectRequest");
    let many: Vec<String> = (0..1025).map(|i| format!("n{i}")).collect();
    let request = json!({"exclude": many});
    assert!(!select.is_valid(&request));
    assert!(decode::<SelectRequest>(&serde_json::to_vec(&request).unwrap()).is_err());
    let announce = validator("Announce");
    let services: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let request = json!({"id": "n1", "hostname": "h", "ip_address": "", "max_agents": 1,
        "started_at": "2026-02-10T08:00:00Z", "services": services});
    assert!(!announce.is_valid(&request));
    assert!(decode::<Announce>(&serde_json::to_vec(&request).unwrap()).is_err());
    let register = validator("RegisterNodeRequest");
    let with_interval = |interval: Value| {
        json!({"id": "n1", "hostname": "h", "ip_address": "10.0.0.1",
            "max_agents": 1, "heartbeat_interval": interval})
    };
    let mut cases: Vec<(Value, bool)> = [
        (json!(30), true),
        (json!(0.01), true),
        (json!(3600), true),
        (json!(0), false),
        (json!(-30), false),
        (json!(0.001), false),
        (json!(3601), false),
        (json!("30s"), false),
    ]
    .into_iter()
    .map(|(interval, ok)| (with_interval(interval), ok))
    .collect();
    cases.extend([
        (json!({"id": "n1", "hostname": "h", "max_agents": 1}), true),
        (json!({"id": "n1", "hostname": " ", "max_agents": 1}), false),
        (
            json!({"id": "n1", "hostname": "h", "max_agents": 1.0, "port": 8151.0}),
            true,
        ),
        (
            json!({"id": "n1", "hostname": "h", "max_agents": 1.5}),
            false,
        ),
        (
            json!({"id": "n1", "hostname": "h", "max_agents": 1, "services": ["\n"]}),
            false,
        ),
    ]);
    for (request, ok) in cases {
        let bytes = serde_json::to_vec(&request).unwrap();
        assert_eq!(register.is_valid(&request), ok, "schema: {request}");
        assert_eq!(
            decode::<RegisterNodeRequest>(&bytes).is_ok(),
            ok,
            "decode: {request}"
        );
    }
}
