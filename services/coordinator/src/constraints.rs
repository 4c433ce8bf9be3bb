//! Placement rules of agent groups: `spread_by` spreads a group's agents evenly over
//! the values of a node label (the least-filled value first; nodes without the label
//! are not eligible), `anti_affinity` keeps them on distinct nodes. Pure: given the
//! nodes that could take an agent and where the rest of its group runs, [`narrow`]
//! says which selections to ask the balancer for, in order, or why none can succeed;
//! [`selections`] and [`check_node`] read those inputs from the state and membership.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use shoal_protocol::{AssignRequest, Assignment, Node, SelectRequest, ShoalError, validate};

use crate::members::Members;
use crate::state::State;

/// An agent's group and the rules its placements follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub group: String,
    pub spread_by: Option<String>,
    pub anti_affinity: bool,
}

impl Rules {
    /// The rules an assign asks for; `None` when it asks for none.
    pub fn of_request(req: &AssignRequest) -> Option<Rules> {
        Rules::new(
            req.group.as_ref(),
            req.spread_by.as_ref(),
            req.anti_affinity,
        )
    }

    /// The rules a placed agent keeps through its moves.
    pub fn of_assignment(a: &Assignment) -> Option<Rules> {
        Rules::new(a.group.as_ref(), a.spread_by.as_ref(), a.anti_affinity)
    }

    fn new(group: Option<&String>, spread_by: Option<&String>, anti: bool) -> Option<Rules> {
        let group = group?;
        (spread_by.is_some() || anti).then(|| Rules {
            group: group.clone(),
            spread_by: spread_by.cloned(),
            anti_affinity: anti,
        })
    }
}

/// Another running agent of the group: its name, node, and that node's value of
/// the `spread_by` label (if the node is known and has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer<'a> {
    pub agent: &'a str,
    pub node: &'a str,
    pub value: Option<&'a str>,
}

/// One selection to ask the balancer for: only nodes whose `spread_by` label has
/// this value (when spreading), none of `exclude`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub label: Option<(String, String)>,
    pub exclude: Vec<String>,
}

/// The selections that follow `rules`, best first, for an agent that any of
/// `candidates` (the nodes with a free slot matching its service and labels) could
/// otherwise take, while `peers` run elsewhere. `wanted` describes the candidates'
/// filter for messages (" offering service \"wrapper\"", or empty). Refused with
/// `no_capacity`, saying why, when no candidate follows the rules.
pub fn narrow(
    rules: &Rules,
    candidates: &[&Node],
    peers: &[Peer<'_>],
    wanted: &str,
) -> Result<Vec<Step>, ShoalError> {
    let group = &rules.group;
    let details = || json!({ "group": group, "candidates": candidates.len() });
    if candidates.is_empty() {
        return Err(ShoalError::no_capacity(format!(
            "group {group:?}: no node{wanted} has a free slot"
        ))
        .with_details(details()));
    }
    let held: BTreeSet<&str> = if rules.anti_affinity {
        peers.iter().map(|p| p.node).collect()
    } else {
        BTreeSet::new()
    };
    let eligible = |n: &&&Node| match &rules.spread_by {
        Some(key) => n.labels.contains_key(key),
        None => true,
    };
    let keyed: Vec<&Node> = candidates.iter().filter(eligible).copied().collect();
    let Some(key) = &rules.spread_by else {
        return match candidates.iter().all(|n| held.contains(n.id.as_str())) {
            true => Err(all_held(rules, candidates.len(), wanted).with_details(details())),
            false => Ok(vec![Step {
                label: None,
                exclude: held.iter().map(|n| n.to_string()).collect(),
            }]),
        };
    };
    if keyed.is_empty() {
        return Err(ShoalError::no_capacity(format!(
            "spread_by {key:?}: none of the {} node(s){wanted} with a free slot carries the label {key:?}",
            candidates.len()
        ))
        .with_details(details()));
    }
    // The values some node could take the agent in, with the group's count there.
    let mut counts: BTreeMap<&str, usize> = keyed
        .iter()
        .filter(|n| !held.contains(n.id.as_str()))
        .map(|n| (n.labels[key].as_str(), 0))
        .collect();
    if counts.is_empty() {
        let wanted = format!("{wanted} carrying the label {key:?}");
        return Err(all_held(rules, keyed.len(), &wanted).with_details(details()));
    }
    for value in peers.iter().filter_map(|p| p.value) {
        if let Some(n) = counts.get_mut(value) {
            *n += 1;
        }
    }
    let mut values: Vec<(&str, usize)> = counts.into_iter().collect();
    values.sort_by_key(|(value, n)| (*n, *value));
    Ok(values
        .into_iter()
        .map(|(value, _)| Step {
            label: Some((key.clone(), value.to_string())),
            // A peer's node not known here may still carry the value.
            exclude: peers
                .iter()
                .filter(|p| held.contains(p.node) && p.value.is_none_or(|v| v == value))
                .map(|p| p.node.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        })
        .collect())
}

fn all_held(rules: &Rules, n: usize, wanted: &str) -> ShoalError {
    ShoalError::no_capacity(format!(
        "anti_affinity: all {n} node(s){wanted} with a free slot already run an agent of group {:?}",
        rules.group
    ))
}

/// `base` narrowed by `rules` for `agent`: the selections to try in order.
pub fn selections(
    state: &State,
    members: &Members,
    rules: &Rules,
    agent: &str,
    base: &SelectRequest,
) -> Result<Vec<SelectRequest>, ShoalError> {
    if !members.is_loaded() {
        return Err(ShoalError::unavailable(
            "the coordinator is still reading the membership: retry",
        ));
    }
    let candidates =
        members.candidates(base.service.as_deref(), &base.labels, &base.exclude, |id| {
            state.count_on(id)
        });
    let peers = peers(state, members, rules, agent);
    let steps = narrow(
        rules,
        &candidates,
        &peers,
        &describe(base.service.as_deref(), &base.labels),
    )?;
    Ok(steps
        .into_iter()
        .map(|step| {
            let mut select = base.clone();
            if let Some((key, value)) = step.label {
                select.labels.insert(key, value);
            }
            let room = validate::MAX_IDS.saturating_sub(select.exclude.len());
            // Past the cap the leader's own check catches a pick of a held node.
            select.exclude.extend(step.exclude.into_iter().take(room));
            select
        })
        .collect())
}

/// Whether `node` follows `rules` for `agent`: it runs no other agent of the group
/// (anti_affinity) and carries the `spread_by` label (an unknown node is trusted).
pub fn check_node(
    state: &State,
    members: &Members,
    rules: &Rules,
    agent: &str,
    node: &str,
) -> Result<(), ShoalError> {
    if rules.anti_affinity
        && let Some(peer) = peers(state, members, rules, agent)
            .into_iter()
            .find(|p| p.node == node)
    {
        return Err(ShoalError::no_capacity(format!(
            "anti_affinity: node {node:?} already runs agent {:?} of group {:?}",
            peer.agent, rules.group
        ))
        .with_details(json!({ "group": rules.group, "node_id": node, "agent_name": peer.agent })));
    }
    if let Some(key) = &rules.spread_by
        && members
            .get(node)
            .is_some_and(|n| !n.labels.contains_key(key))
    {
        return Err(ShoalError::no_capacity(format!(
            "spread_by {key:?}: node {node:?} carries no label {key:?}"
        ))
        .with_details(json!({ "group": rules.group, "node_id": node })));
    }
    Ok(())
}

/// The group's running agents other than `agent`.
fn peers<'a>(state: &'a State, members: &'a Members, rules: &Rules, agent: &str) -> Vec<Peer<'a>> {
    state
        .group_members(&rules.group)
        .filter(|a| a.agent_name != agent && !a.status.is_waiting())
        .map(|a| Peer {
            agent: &a.agent_name,
            node: &a.node_id,
            value: rules.spread_by.as_ref().and_then(|key| {
                members
                    .get(&a.node_id)
                    .and_then(|n| n.labels.get(key))
                    .map(String::as_str)
            }),
        })
        .collect()
}

/// " offering service \"s\" with labels k=v" for messages; empty without a filter.
fn describe(service: Option<&str>, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    if let Some(s) = service {
        out.push_str(&format!(" offering service {s:?}"));
    }
    if !labels.is_empty() {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(" with labels {}", pairs.join(",")));
    }
    out
}

#[cfg(test)]
#[path = "constraints_tests.rs"]
mod tests;
