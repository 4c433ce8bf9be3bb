//! Requests and replies of the balancer.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::coordinator::Resources;
use super::node::Node;
use crate::ShoalError;
use crate::validate::{self, Validate};

/// The five balancing strategies of the Go wrapper's LoadBalancer.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Cycles over eligible nodes.
    RoundRobin,
    /// Lowest load score from CPU, memory and agents/max_agents.
    #[default]
    LeastLoaded,
    /// Fewest agents.
    LeastAgents,
    /// Uniformly at random.
    Random,
    /// Random, with probability proportional to free capacity.
    Weighted,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::LeastLoaded,
        Strategy::LeastAgents,
        Strategy::Random,
        Strategy::Weighted,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
            Strategy::LeastAgents => "least_agents",
            Strategy::Random => "random",
            Strategy::Weighted => "weighted",
        }
    }
    pub fn parse(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `select`: pick a node for new work.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectRequest {
    /// Only nodes offering this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::validate::MAX_NAME_LEN), pattern(crate::validate::NOT_BLANK_PATTERN))]
    pub service: Option<String>,
    /// Only nodes carrying all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::labels_schema")]
    pub labels: BTreeMap<String, String>,
    /// Overrides the cluster strategy for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Node ids not to pick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::validate::MAX_IDS), inner(pattern(crate::validate::ID_PATTERN)))]
    pub exclude: Vec<String>,
    /// What the work will use on the node; counted against the picked node's
    /// estimated load at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl Validate for SelectRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        if let Some(s) = &self.service {
            validate::name("service", s)?;
        }
        validate::labels("labels", &self.labels)?;
        validate::ids("exclude", &self.exclude)?;
        self.resources.as_ref().map_or(Ok(()), Validate::validate)
    }
}

/// One node the balancer considered, with its score under the strategy used
/// (lower is better for least_* strategies; the weight for weighted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Candidate {
    pub node_id: String,
    pub score: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectReply {
    pub node_id: String,
    pub node: Node,
    pub strategy: Strategy,
    /// The eligible nodes considered and their scores (compact; may be truncated to
    /// the best few when the cluster is large).
    #[serde(default)]
    pub candidates: Vec<Candidate>,
}

/// Most selections one `select.batch` request may carry.
pub const MAX_SELECT_BATCH: usize = 1024;

/// `select.batch`: several picks in one round trip. They are made in order, each
/// counting against its node for the next, as if sent one by one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectBatchRequest {
    pub selections: Vec<SelectRequest>,
}

impl Validate for SelectBatchRequest {
    fn validate(&self) -> Result<(), ShoalError> {
        if self.selections.is_empty() || self.selections.len() > MAX_SELECT_BATCH {
            return Err(validate::field_error(
                "selections",
                format!(
                    "selections must hold 1 to {MAX_SELECT_BATCH} entries, got {}",
                    self.selections.len()
                ),
            ));
        }
        self.selections.iter().try_for_each(Validate::validate)
    }
}

/// The answer to one selection of a batch: the pick (without the node record,
/// to keep batches small), or the error `select` would have replied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ShoalError>,
}

impl SelectOutcome {
    pub fn new(result: Result<SelectReply, ShoalError>) -> SelectOutcome {
        match result {
            Ok(reply) => SelectOutcome {
                node_id: Some(reply.node_id),
                strategy: Some(reply.strategy),
                candidates: reply.candidates,
                error: None,
            },
            Err(e) => SelectOutcome {
                node_id: None,
                strategy: None,
                candidates: Vec::new(),
                error: Some(e),
            },
        }
    }
}

/// `select.batch` reply: one outcome per selection, in the request's order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectBatchReply {
    pub results: Vec<SelectOutcome>,
}

/// `strategy.set` request; also the reply of `strategy.get` and `strategy.set`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StrategyMessage {
    pub strategy: Strategy,
}

impl Validate for StrategyMessage {}

/// `stats` of the balancer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BalancerStats {
    pub strategy: Strategy,
    /// Total selections answered by this replica.
    pub selections: u64,
    pub selections_by_strategy: BTreeMap<String, u64>,
    pub no_capacity: u64,
    pub round_robin_index: u64,
    /// Nodes in this replica's view.
    #[serde(default)]
    pub nodes: usize,
    /// Nodes with no metrics measured yet (no heartbeat since they announced):
    /// `least_loaded` ranks them as busy until their first heartbeat.
    #[serde(default)]
    pub unmeasured_nodes: usize,
    /// How far apart the eligible nodes' estimated loads are (absent with no
    /// eligible node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_load: Option<LoadSpread>,
}

/// The estimated loads `least_loaded` ranks by (measured load plus the cost of
/// placements the measurements do not show yet), over a replica's eligible nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoadSpread {
    /// The lowest estimated load, 0 (idle) to 1 (saturated) or above when pending
    /// placements would overload the node.
    pub min: f64,
    /// The highest estimated load.
    pub max: f64,
    /// What one more agent without a resource request would add to the least
    /// loaded node's estimate: the unit to read `max - min` in.
    pub agent_cost: f64,
    /// Placements (this replica's picks included) whose cost still counts on top of
    /// the measured load.
    pub pending: u64,
}
