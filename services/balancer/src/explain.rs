//! Why no node could take the work: the `no_capacity` error names the first filter
//! that left nothing (no online node, no node offering the service, none matching
//! the labels, all excluded, all full), with counts in `details`. Only failed
//! selections pay for this scan.

use std::collections::BTreeMap;

use serde_json::json;
use shoal_protocol::{NodeStatus, SelectRequest, ShoalError};

use crate::view::View;

impl View {
    pub(crate) fn explain_no_capacity(&self, req: &SelectRequest) -> ShoalError {
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut online, mut with_service, mut with_labels, mut not_excluded) = (0, 0, 0, 0);
        for slot in self.slots.iter().flatten() {
            let n = &slot.node;
            let status = if n.draining {
                NodeStatus::Draining
            } else {
                n.status
            };
            *by_status.entry(status.as_str()).or_default() += 1;
            if status != NodeStatus::Online {
                continue;
            }
            online += 1;
            if req.service.as_deref().is_some_and(|s| !n.has_service(s)) {
                continue;
            }
            with_service += 1;
            if !n.matches_labels(&req.labels) {
                continue;
            }
            with_labels += 1;
            if req.exclude.contains(&n.id) {
                continue;
            }
            not_excluded += 1;
        }
        let known = self.len();
        let service = req
            .service
            .as_deref()
            .map(|s| format!(" offering service {s:?}"))
            .unwrap_or_default();
        let labels = req
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let (reason, message) = if known == 0 {
            (
                "no_nodes",
                "no node is known: membership is empty".to_string(),
            )
        } else if online == 0 {
            (
                "no_online_node",
                format!(
                    "no online node: none of the {known} known nodes is online and accepting work"
                ),
            )
        } else if with_service == 0 {
            (
                "no_service",
                format!(
                    "no online node offers service {:?}",
                    req.service.as_deref().unwrap_or("")
                ),
            )
        } else if with_labels == 0 {
            (
                "no_labels",
                format!("no online node{service} matches labels {{{labels}}}"),
            )
        } else if not_excluded == 0 {
            (
                "all_excluded",
                format!("every online node{service} that matches the request is excluded"),
            )
        } else {
            (
                "all_full",
                format!("all {not_excluded} online nodes{service} that match the request are full"),
            )
        };
        ShoalError::no_capacity(message).with_details(json!({
            "reason": reason,
            "known_nodes": known,
            "online_nodes": online,
            "matching_service": with_service,
            "matching_labels": with_labels,
            "not_excluded": not_excluded,
            "nodes_by_status": by_status,
        }))
    }
}
