//! Samples of the rebalance messages for the schema round-trip test.

use std::collections::BTreeMap;

use serde_json::Value;
use shoal_protocol::*;

use super::round_trip;

pub fn samples() -> BTreeMap<&'static str, Value> {
    let settings = RebalanceSettings {
        enabled: true,
        max_moves_per_minute: 600,
        threshold: 2,
    };
    let moved = RebalanceMove {
        agent_name: "codex".into(),
        from: "node-1".into(),
        to: "node-4".into(),
    };
    BTreeMap::from([
        ("RebalanceSettings", round_trip(settings)),
        (
            "RebalanceUpdate",
            round_trip(RebalanceUpdate {
                enabled: Some(true),
                max_moves_per_minute: None,
                threshold: Some(3),
            }),
        ),
        (
            "RebalanceNowRequest",
            round_trip(RebalanceNowRequest { dry_run: true }),
        ),
        (
            "RebalanceStatus",
            round_trip(RebalanceStatus {
                settings,
                nodes: 4,
                spread: 5,
                max_agents_per_node: 5,
                min_agents_per_node: 0,
                pending_moves: 3,
                moves_total: 12,
                held: Some("waiting agents are placed first".into()),
            }),
        ),
        (
            "RebalanceReport",
            round_trip(RebalanceReport {
                dry_run: false,
                moves: vec![moved],
                spread_before: 5,
                spread_after: 3,
                deferred: 2,
                held: None,
            }),
        ),
    ])
}
