//! The subject catalogue: every subject, who publishes and who subscribes, and its
//! payloads. `schemas/` (one JSON Schema per message and `asyncapi.yaml`) is
//! generated from this table and the protocol types, and checked for drift.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema};
use serde_json::{Value, json};

use crate::ErrorEnvelope;
use crate::subjects::{Endpoint, Subjects};
use crate::types::{
    Empty, balancer::*, coordinator::*, history::*, node::*, rebalance::*, registry::*,
};

/// Gives unsigned integers their largest value (`maximum`) as well as their
/// smallest: schemars leaves it out for 32- and 64-bit ones, and without it a
/// schema would accept numbers the types refuse.
#[derive(Clone, Copy, Debug)]
pub struct UnsignedMaximum;

impl Transform for UnsignedMaximum {
    fn transform(&mut self, schema: &mut Schema) {
        let maximum = match schema.get("format").and_then(Value::as_str) {
            Some("uint32") => Some(json!(u32::MAX)),
            Some("uint64" | "uint") => Some(json!(u64::MAX)),
            _ => None,
        };
        if let (Some(maximum), Some(object)) = (maximum, schema.as_object_mut()) {
            object.entry("maximum").or_insert(maximum);
        }
        transform_subschemas(self, schema);
    }
}

/// How Shoal's schemas are generated: JSON Schema 2020-12 with
/// [`UnsignedMaximum`]. The HTTP gateway's OpenAPI document uses the same.
pub fn schema_settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with_transform(UnsignedMaximum)
}

fn schema_for<T: JsonSchema>() -> Schema {
    schema_settings()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// Every message type, by the name its schema file carries (`schemas/<Name>.json`).
pub fn message_schemas() -> BTreeMap<&'static str, Schema> {
    macro_rules! schemas {
        ($($t:ident),* $(,)?) => { BTreeMap::from([$((stringify!($t), schema_for::<$t>())),*]) };
    }
    schemas!(
        Announce,
        Heartbeat,
        Leave,
        AgentNotice,
        SyncRequest,
        Node,
        ListNodesRequest,
        NodeList,
        NodeIdRequest,
        RegisterNodeRequest,
        NodeChangeReply,
        RegistryStats,
        NodeEvent,
        SelectRequest,
        SelectReply,
        SelectBatchRequest,
        SelectBatchReply,
        SelectOutcome,
        StrategyMessage,
        BalancerStats,
        AssignRequest,
        Assignment,
        AgentNameRequest,
        UnassignRequest,
        UnassignReply,
        MoveRequest,
        ListAssignmentsRequest,
        AssignmentList,
        LeaderReply,
        PromoteRequest,
        PromoteReply,
        HistoryRequest,
        HistoryReply,
        AssignmentEvent,
        AssignmentEvents,
        LeaderChanged,
        ClusterStats,
        RebalanceSettings,
        RebalanceUpdate,
        RebalanceStatus,
        RebalanceNowRequest,
        RebalanceReport,
        Empty,
        ErrorEnvelope,
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Fire-and-forget publication.
    Publish,
    /// Request/reply; the reply is `reply` or an `ErrorEnvelope`.
    Request,
}

/// One row of the catalogue.
#[derive(Clone, Debug)]
pub struct Operation {
    /// A stable identifier (camelCase), used as the AsyncAPI channel/operation id.
    pub id: String,
    /// The subject, with `{node_id}` / `{agent_name}` / `{partition}` placeholders.
    pub subject: String,
    pub kind: Kind,
    pub publishers: &'static [&'static str],
    pub subscribers: &'static [&'static str],
    pub payload: &'static str,
    pub reply: Option<&'static str>,
    pub summary: &'static str,
}

fn endpoint_messages(e: Endpoint) -> (&'static str, &'static str, &'static str) {
    use Endpoint::*;
    match e {
        RegistryNodesList => (
            "ListNodesRequest",
            "NodeList",
            "list nodes, filtered by role, service, status, label",
        ),
        RegistryNodesGet => ("NodeIdRequest", "Node", "one node by id"),
        RegistryNodesRegister => (
            "RegisterNodeRequest",
            "NodeChangeReply",
            "register a node by hand (no announcer)",
        ),
        RegistryNodesUnregister => ("NodeIdRequest", "NodeChangeReply", "remove a node"),
        RegistryNodesDrain => (
            "NodeIdRequest",
            "Node",
            "drain a node: its agents move off, it takes no new ones",
        ),
        RegistryNodesUndrain => ("NodeIdRequest", "Node", "end a drain"),
        RegistryStats => ("Empty", "RegistryStats", "membership statistics"),
        BalancerSelect => ("SelectRequest", "SelectReply", "pick a node for new work"),
        BalancerSelectBatch => (
            "SelectBatchRequest",
            "SelectBatchReply",
            "many picks in one request, made in order (the coordinator batches its picks)",
        ),
        BalancerStrategyGet => (
            "Empty",
            "StrategyMessage",
            "the cluster's balancing strategy",
        ),
        BalancerStrategySet => (
            "StrategyMessage",
            "StrategyMessage",
            "switch the balancing strategy at runtime",
        ),
        BalancerStats => ("Empty", "BalancerStats", "selection statistics"),
        CoordinatorAssign => (
            "AssignRequest",
            "Assignment",
            "assign an agent to a node (leader only)",
        ),
        CoordinatorUnassign => (
            "UnassignRequest",
            "UnassignReply",
            "remove an agent's assignment (leader only)",
        ),
        CoordinatorMove => (
            "MoveRequest",
            "Assignment",
            "move a placed agent to a named node or the balancer's pick (leader only)",
        ),
        CoordinatorAssignmentsGet => (
            "AgentNameRequest",
            "Assignment",
            "an agent's current assignment",
        ),
        CoordinatorAssignmentsList => (
            "ListAssignmentsRequest",
            "AssignmentList",
            "current assignments, by node or status",
        ),
        CoordinatorLeaderGet => ("Empty", "LeaderReply", "the current coordinator leader"),
        CoordinatorLeaderPromote => (
            "PromoteRequest",
            "PromoteReply",
            "hand leadership to a named coordinator",
        ),
        CoordinatorHistory => (
            "HistoryRequest",
            "HistoryReply",
            "assignment history from Postgres",
        ),
        CoordinatorStats => ("Empty", "ClusterStats", "cluster statistics"),
        CoordinatorRebalanceGet => (
            "Empty",
            "RebalanceStatus",
            "the rebalance settings and how even the cluster is",
        ),
        CoordinatorRebalanceSet => (
            "RebalanceUpdate",
            "RebalanceStatus",
            "change the rebalance settings (kept in shoal_config, followed by every coordinator)",
        ),
        CoordinatorRebalanceNow => (
            "RebalanceNowRequest",
            "RebalanceReport",
            "one rebalance round at once, or its plan with dry_run (leader only)",
        ),
    }
}

fn camel(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, part) in parts
        .iter()
        .flat_map(|p| p.split(['.', '_', '-']))
        .enumerate()
    {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                out.push(first);
            } else {
                out.extend(first.to_uppercase());
            }
            out.extend(chars);
        }
    }
    out
}

/// The whole catalogue under the given subjects.
pub fn catalogue(subjects: &Subjects) -> Vec<Operation> {
    const NODE: &str = "{node_id}";
    const AGENT: &str = "{agent_name}";
    let publish =
        |id: &str, subject: String, publishers, subscribers, payload, summary| Operation {
            id: id.to_string(),
            subject,
            kind: Kind::Publish,
            publishers,
            subscribers,
            payload,
            reply: None,
            summary,
        };
    let mut ops = vec![
        publish(
            "nodeAnnounce",
            subjects.node_announce(NODE),
            &["announcer"],
            &["registry", "coordinator"],
            "Announce",
            "a node's identity: at start, on metadata change, and when a registry asks",
        ),
        publish(
            "nodeHeartbeat",
            subjects.node_heartbeat(NODE),
            &["announcer"],
            &["registry", "balancer", "coordinator"],
            "Heartbeat",
            "a node's metrics, every interval",
        ),
        publish(
            "nodeHeartbeatPartitioned",
            format!("{}.{{partition}}", subjects.node_heartbeat(NODE)),
            &["nats-server mapping"],
            &["registry", "balancer", "coordinator"],
            "Heartbeat",
            "the same heartbeat where the server maps heartbeats into partitions shared by the registry replicas (shoal-registry --print-heartbeat-mapping)",
        ),
        publish(
            "nodeLeave",
            subjects.node_leave(NODE),
            &["announcer"],
            &["registry"],
            "Leave",
            "a graceful goodbye",
        ),
        publish(
            "nodeAgents",
            subjects.node_agents(NODE),
            &["coordinator"],
            &["announcer"],
            "AgentNotice",
            "start/stop of an agent assigned to this node; sync: every agent it runs, after each announce or a digest mismatch",
        ),
        publish(
            "registrySync",
            subjects.registry_sync(),
            &["registry"],
            &["announcer"],
            "SyncRequest",
            "asks nodes to announce again",
        ),
        publish(
            "registryEvents",
            subjects.registry_event(NODE),
            &["registry"],
            &["balancer", "coordinator"],
            "NodeEvent",
            "a node joined, changed status, left or was pruned",
        ),
        publish(
            "coordinatorEvents",
            subjects.coordinator_event(AGENT),
            &["coordinator"],
            &[],
            "AssignmentEvent",
            "an agent was assigned, unassigned, orphaned, reassigned or migrated",
        ),
        publish(
            "coordinatorPlacements",
            subjects.coordinator_placements(),
            &["coordinator"],
            &["balancer"],
            "AssignmentEvents",
            "the events of one log record, in log order: one message for many agents",
        ),
        publish(
            "coordinatorLeaderChanged",
            subjects.coordinator_leader_changed(),
            &["coordinator"],
            &[],
            "LeaderChanged",
            "a coordinator won or lost the leader lease",
        ),
    ];
    for e in Endpoint::ALL {
        let (payload, reply, summary) = endpoint_messages(e);
        let service: &'static [&'static str] = match e.service() {
            crate::ServiceKind::Registry => &["registry"],
            crate::ServiceKind::Balancer => &["balancer"],
            _ => &["coordinator"],
        };
        ops.push(Operation {
            id: camel(&[e.service().token(), e.suffix()]),
            subject: subjects.endpoint(e),
            kind: Kind::Request,
            publishers: &["clients"],
            subscribers: service,
            payload,
            reply: Some(reply),
            summary,
        });
    }
    ops
}

/// `asyncapi.yaml` (AsyncAPI 3.0) for the default prefix.
pub fn asyncapi() -> Value {
    let ops = catalogue(&Subjects::default());
    let mut channels = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let mut messages = serde_json::Map::new();
    let message_ref = |name: &str| json!({ "$ref": format!("#/components/messages/{name}") });
    let mut reply_names = vec!["ErrorEnvelope"];
    for op in &ops {
        let mut params = serde_json::Map::new();
        for (placeholder, what) in [
            ("node_id", "the node's id"),
            ("agent_name", "the agent's name"),
            (
                "partition",
                "the heartbeat partition the server mapped the node id to",
            ),
        ] {
            if op.subject.contains(&format!("{{{placeholder}}}")) {
                params.insert(placeholder.into(), json!({ "description": what }));
            }
        }
        let mut channel = json!({
            "address": op.subject,
            "description": op.summary,
            "messages": { op.payload: message_ref(op.payload) },
            "x-publishers": op.publishers,
            "x-subscribers": op.subscribers,
        });
        if !params.is_empty() {
            channel["parameters"] = Value::Object(params);
        }
        channels.insert(op.id.clone(), channel);
        let mut operation = json!({
            "action": "receive",
            "channel": { "$ref": format!("#/channels/{}", op.id) },
            "summary": op.summary,
            "messages": [{ "$ref": format!("#/channels/{}/messages/{}", op.id, op.payload) }],
        });
        if let Some(reply) = op.reply {
            reply_names.push(reply);
            operation["reply"] = json!({
                "address": { "location": "$message.header#/reply_to", "description": "the requester's inbox" },
                "channel": { "$ref": "#/channels/inbox" },
                "messages": [
                    { "$ref": format!("#/channels/inbox/messages/{reply}") },
                    { "$ref": "#/channels/inbox/messages/ErrorEnvelope" },
                ],
            });
        }
        operations.insert(op.id.clone(), operation);
        messages.insert(op.payload.to_string(), message_component(op.payload));
    }
    reply_names.sort_unstable();
    reply_names.dedup();
    let inbox_messages: serde_json::Map<String, Value> = reply_names
        .iter()
        .map(|name| (name.to_string(), message_ref(name)))
        .collect();
    for name in &reply_names {
        messages.insert(name.to_string(), message_component(name));
    }
    channels.insert(
        "inbox".into(),
        json!({
            "address": null,
            "description": "the requester's reply inbox; error replies carry the Nats-Service-Error and Nats-Service-Error-Code headers",
            "messages": inbox_messages,
        }),
    );
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Shoal",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Shoal's NATS subject contract. Subjects are shown with the default prefix `shoal`; \
                every request endpoint is also served per instance at `<prefix>.<service>.instance.<instance_id>.<endpoint>`, \
                and every instance answers `<prefix>.<service>.instance.<instance_id>.metrics` with its Prometheus metrics \
                (OpenMetrics text, not JSON; see docs/metrics.md).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": { "host": "127.0.0.1:4222", "protocol": "nats" },
        },
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    })
}

fn message_component(name: &str) -> Value {
    json!({ "name": name, "payload": { "$ref": format!("./{name}.json") } })
}

/// Every generated file: name → contents.
pub fn generated_files() -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = message_schemas()
        .into_iter()
        .map(|(name, schema)| {
            let text = serde_json::to_string_pretty(&schema).expect("schemas serialise");
            (format!("{name}.json"), text + "\n")
        })
        .collect();
    let yaml = serde_yaml::to_string(&asyncapi()).expect("asyncapi serialises");
    files.insert(
        "asyncapi.yaml".into(),
        format!("# Generated by `cargo run -p shoal-protocol --bin shoal-schemas -- write`. Do not edit.\n{yaml}"),
    );
    files
}

/// Writes every generated file into `dir` and removes stale `.json`/`.yaml` files.
pub fn write_schemas(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let files = generated_files();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if is_generated_kind(name) && !files.contains_key(name) {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// Files in `schemas/` that other generators write and check: the HTTP gateway's
/// OpenAPI document (`shoal-openapi` in services/gateway).
pub const GENERATED_ELSEWHERE: [&str; 1] = ["openapi.json"];

fn is_generated_kind(name: &str) -> bool {
    (name.ends_with(".json") || name.ends_with(".yaml")) && !GENERATED_ELSEWHERE.contains(&name)
}

/// The files in `dir` that differ from what the protocol types generate: changed,
/// missing, or stale. Empty means no drift.
pub fn check_schemas(dir: &Path) -> std::io::Result<Vec<String>> {
    let files = generated_files();
    let mut drift = Vec::new();
    for (name, text) in &files {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if &committed == text => {}
            Ok(_) => drift.push(format!("{name}: differs from the generated schema")),
            Err(_) => drift.push(format!("{name}: missing")),
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if is_generated_kind(&name) && !files.contains_key(&name) {
                drift.push(format!("{name}: stale, no protocol type generates it"));
            }
        }
    }
    drift.sort();
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_in_the_catalogue_has_a_schema() {
        let schemas = message_schemas();
        for op in catalogue(&Subjects::default()) {
            assert!(
                schemas.contains_key(op.payload),
                "{} has no schema",
                op.payload
            );
            if let Some(reply) = op.reply {
                assert!(schemas.contains_key(reply), "{reply} has no schema");
            }
        }
    }

    #[test]
    fn catalogue_covers_every_endpoint_once() {
        let ops = catalogue(&Subjects::default());
        for e in Endpoint::ALL {
            let subject = Subjects::default().endpoint(e);
            assert_eq!(
                ops.iter().filter(|o| o.subject == subject).count(),
                1,
                "{subject}"
            );
        }
        let mut ids: Vec<_> = ops.iter().map(|o| o.id.as_str()).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "operation ids must be unique");
    }

    #[test]
    fn ids_are_camel_case() {
        assert_eq!(camel(&["registry", "nodes.list"]), "registryNodesList");
        assert_eq!(
            camel(&["coordinator", "leader.promote"]),
            "coordinatorLeaderPromote"
        );
    }
}
