//! Every message on the wire. Field names follow the REST JSON of the systems Shoal
//! replaces where a field exists in both; `schemas/` is generated from these types.

pub mod balancer;
pub mod coordinator;
pub mod history;
pub mod node;
pub mod rebalance;
pub mod registry;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::Validate;

/// A request with no fields (`stats`, `strategy.get`, `leader.get`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

impl Validate for Empty {}

macro_rules! no_validation {
    ($($t:ty),* $(,)?) => { $(impl Validate for $t {})* };
}

// Replies are produced by Shoal itself; decoding them needs no range checks.
no_validation!(
    node::Node,
    registry::NodeList,
    registry::NodeChangeReply,
    registry::RegistryStats,
    balancer::SelectReply,
    balancer::SelectBatchReply,
    balancer::BalancerStats,
    coordinator::Assignment,
    coordinator::UnassignReply,
    coordinator::AssignmentList,
    coordinator::LeaderReply,
    coordinator::PromoteReply,
    history::HistoryReply,
    coordinator::ClusterStats,
    rebalance::RebalanceStatus,
    rebalance::RebalanceReport,
);
