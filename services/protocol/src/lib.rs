//! Shoal's wire contract, shared by every service, client and test:
//!
//! - [`Subjects`]: every subject, built in one place under a configurable prefix;
//! - [`types`]: every message, with the contract's JSON field names;
//! - [`ShoalError`]: the error envelope and its NATS service error headers;
//! - [`decode()`]: the one decode step turning bad input into `bad_request`;
//! - [`ShoalClient`]: request/reply with timeout and retries, and service discovery
//!   ([`discover`]);
//! - [`catalogue`]: the subject catalogue from which `schemas/` is generated;
//! - [`connection`]: the names processes give their NATS connections;
//! - [`partition`]: how heartbeats are partitioned across registry replicas.

pub mod catalogue;
pub mod client;
pub mod connection;
pub mod decode;
pub mod digest;
pub mod discover;
pub mod error;
pub mod partition;
pub mod reply;
pub mod size;
pub mod subjects;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod time;
pub mod types;
pub mod validate;

pub use client::{ClientError, ShoalClient};
pub use decode::{MAX_PAYLOAD_BYTES, decode};
pub use digest::{AgentsDigest, DigestSum};
pub use discover::ServiceInstance;
pub use error::{ErrorCode, ErrorEnvelope, ShoalError};
pub use reply::{respond, respond_to};
pub use subjects::{Endpoint, NodeSubjectKind, ServiceKind, Subjects};
pub use types::{
    Empty, balancer::*, coordinator::*, history::*, node::*, rebalance::*, registry::*,
};
pub use validate::Validate;

/// The KV bucket holding membership (key = node id).
pub const MEMBERS_BUCKET: &str = "shoal_members";
/// The KV bucket holding the coordinator's leader lease (key [`LEADER_KEY`]).
pub const LEADER_BUCKET: &str = "shoal_leader";
pub const LEADER_KEY: &str = "coordinator";
/// The KV bucket holding cluster settings such as the balancing strategy.
pub const CONFIG_BUCKET: &str = "shoal_config";
/// The KV bucket where registry replicas announce themselves (key = instance id),
/// each key expiring unless refreshed: from it every replica derives who owns which
/// heartbeat partition ([`partition`]).
pub const REGISTRY_REPLICAS_BUCKET: &str = "shoal_registry_replicas";

/// The JetStream stream behind a KV bucket (`KV_<bucket>`), for the requests that
/// name the stream (its info, as the NATS permissions in compose/nats/auth.conf
/// allow).
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}
/// Key of the cluster balancing strategy in [`CONFIG_BUCKET`]; the value is
/// `{"strategy": "<name>"}`.
pub const STRATEGY_KEY: &str = "balancer.strategy";

/// Key of the rebalance settings in [`CONFIG_BUCKET`]; the value is a
/// [`RebalanceSettings`].
pub const REBALANCE_KEY: &str = "coordinator.rebalance";
/// The JetStream stream holding the coordinator's fenced assignment log.
pub const LOG_STREAM: &str = "SHOAL_ASSIGNMENTS";
/// The durable consumer of [`LOG_STREAM`] that copies it into Postgres.
pub const HISTORY_CONSUMER: &str = "shoal_history";
/// The object store bucket holding the coordinator's snapshot of the assignments
/// (object [`SNAPSHOT_OBJECT`]), from which the log below it is purged.
pub const SNAPSHOT_BUCKET: &str = "shoal_snapshots";
pub const SNAPSHOT_OBJECT: &str = "assignments";
