//! Rebalancing: the settings every coordinator follows (kept in `shoal_config`), the
//! requests that read and change them, and the leader's report of the moves it made
//! or would make.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ShoalError;
use crate::validate::{Validate, field_error};

/// Most moves a rebalance may make per minute.
pub const MAX_REBALANCE_MOVES_PER_MINUTE: u32 = 60_000;
/// Largest agent-count spread a threshold may name.
pub const MAX_REBALANCE_THRESHOLD: u32 = 1_000_000;

/// Rebalance settings, stored in `shoal_config` under
/// [`crate::REBALANCE_KEY`] and followed at runtime by every coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RebalanceSettings {
    /// Whether the leader evens the cluster by itself (off unless turned on).
    pub enabled: bool,
    /// The most agents moved in any minute, so a large imbalance is evened
    /// gradually instead of restarting many agents at once.
    #[schemars(range(min = 1, max = 60_000))]
    pub max_moves_per_minute: u32,
    /// The agent-count spread (most agents on one node minus fewest, over the online
    /// nodes that take agents) above which agents are moved; they are moved until
    /// the spread is at most this.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub threshold: u32,
}

impl Default for RebalanceSettings {
    fn default() -> Self {
        RebalanceSettings {
            enabled: false,
            max_moves_per_minute: 600,
            threshold: 2,
        }
    }
}

impl Validate for RebalanceSettings {
    fn validate(&self) -> Result<(), ShoalError> {
        moves_per_minute(self.max_moves_per_minute)?;
        threshold(self.threshold)
    }
}

fn moves_per_minute(value: u32) -> Result<(), ShoalError> {
    if (1..=MAX_REBALANCE_MOVES_PER_MINUTE).contains(&value) {
        Ok(())
    } else {
        Err(field_error(
            "max_moves_per_minute",
            format!(
                "max_moves_per_minute must be from 1 to {MAX_REBALANCE_MOVES_PER_MINUTE}, got {value}"
            ),
        ))
    }
}

fn threshold(value: u32) -> Result<(), ShoalError> {
    if (1..=MAX_REBALANCE_THRESHOLD).contains(&value) {
        Ok(())
    } else {
        Err(field_error(
            "threshold",
            format!("threshold must be from 1 to {MAX_REBALANCE_THRESHOLD} agents, got {value}"),
        ))
    }
}

/// `rebalance.set`: changes the named settings and keeps the others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RebalanceUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60_000))]
    pub max_moves_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub threshold: Option<u32>,
}

impl RebalanceUpdate {
    /// `current` with this update's settings in place.
    pub fn apply(&self, current: RebalanceSettings) -> RebalanceSettings {
        RebalanceSettings {
            enabled: self.enabled.unwrap_or(current.enabled),
            max_moves_per_minute: self
                .max_moves_per_minute
                .unwrap_or(current.max_moves_per_minute),
            threshold: self.threshold.unwrap_or(current.threshold),
        }
    }
}

impl Validate for RebalanceUpdate {
    fn validate(&self) -> Result<(), ShoalError> {
        if let Some(m) = self.max_moves_per_minute {
            moves_per_minute(m)?;
        }
        if let Some(t) = self.threshold {
            threshold(t)?;
        }
        Ok(())
    }
}

/// `rebalance.now`: one rebalance round at once, whether or not rebalancing is on and
/// whatever the spread (the per-minute budget still applies).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RebalanceNowRequest {
    /// Plan the moves and report them without making any.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl Validate for RebalanceNowRequest {}

/// One move a rebalance made or would make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RebalanceMove {
    pub agent_name: String,
    pub from: String,
    pub to: String,
}

/// Reply of `rebalance.get` and `rebalance.set`: the settings and how even the
/// cluster is now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RebalanceStatus {
    pub settings: RebalanceSettings,
    /// Online nodes that take agents (not draining).
    pub nodes: usize,
    /// Most agents on one of those nodes minus fewest.
    pub spread: u32,
    pub max_agents_per_node: u32,
    pub min_agents_per_node: u32,
    /// Moves the planner would make now to bring the spread to the threshold (those
    /// it can find: pins, services, labels and group rules may leave fewer).
    pub pending_moves: usize,
    /// Rebalance moves recorded in the log since it was last compacted from empty.
    pub moves_total: u64,
    /// Why the leader is not moving agents now although the spread is above the
    /// threshold, if it is not (e.g. `waiting agents are placed first`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Reply of `rebalance.now`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RebalanceReport {
    pub dry_run: bool,
    /// The moves made (or, in a dry run, that would be made), in order.
    pub moves: Vec<RebalanceMove>,
    pub spread_before: u32,
    /// The spread once these moves are made.
    pub spread_after: u32,
    /// Moves still needed after these that the per-minute budget held back (dry runs
    /// plan every move and hold none back).
    pub deferred: usize,
    /// Why no move was made, when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}
