//! The JSON of `/api/cluster/health`: the fields Oxide's health endpoint answered
//! (`status`, `node_id`, `hostname`, `services`, `cpu_percent`, `memory_percent`,
//! `active_tasks`, and `version` for its `oxide_version`), describing the gateway
//! that answers, and the control plane's state: every service's replicas, the
//! coordinator leader, JetStream, how far the history trails, and what is wrong.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::Leader;

/// The verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every service has every replica seen before live, a leader, and JetStream.
    Healthy,
    /// Serving (every service has a live replica, there is a leader and JetStream
    /// answers), but a replica seen before is down: `problems` says which.
    Degraded,
    /// A service has no live replica, there is no leader, or JetStream does not
    /// answer: answered with HTTP 503.
    Unhealthy,
}

/// One replica of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Replica {
    /// The replica's instance id.
    pub instance_id: String,
    pub status: ReplicaStatus,
    /// Its version, as it last reported it.
    pub version: String,
    /// When it last answered `$SRV.PING`.
    pub last_seen: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaStatus {
    /// Answered this check's ping.
    Up,
    /// Answered an earlier one but not this one: crashed, stopped or cut off.
    Down,
}

/// Whether JetStream answers, and what the account holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JetStreamHealth {
    pub reachable: bool,
    /// Why it is not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Streams in the account (KV buckets included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<usize>,
    /// Bytes of file storage in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    /// Bytes of memory storage in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// `GET /api/cluster/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// The answering gateway's instance id.
    pub node_id: String,
    /// The answering gateway's host.
    pub hostname: String,
    /// The services with at least one live replica (`registry`, `balancer`,
    /// `coordinator`).
    pub services: Vec<String>,
    /// CPU in use on the gateway's host, percent.
    pub cpu_percent: f64,
    /// Memory in use on the gateway's host, percent.
    pub memory_percent: f64,
    /// Agents running on nodes, as the coordinator counts them (absent when no
    /// coordinator answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_tasks: Option<u64>,
    /// The gateway's version.
    pub version: String,
    /// Every replica of each service seen answering (a crashed one stays listed as
    /// `down` for a while).
    pub replicas: BTreeMap<String, Vec<Replica>>,
    /// The coordinator holding the leader lease, absent when none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Leader>,
    pub jetstream: JetStreamHealth,
    /// Seconds the oldest assignment change not yet in Postgres has waited (0 when
    /// the history is current; absent when it cannot be told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_lag_s: Option<f64>,
    /// What is wrong, one sentence each; empty when healthy.
    pub problems: Vec<String>,
    pub checked_at: DateTime<Utc>,
}
