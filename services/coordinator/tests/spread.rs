//! Group placement rules with the real registry, announcers and balancer: six nodes
//! in zones a, b and c, zones b and c already busy; a group spread by zone and an
//! anti-affinity group keep their rules when zone c is lost, and a placement the
//! rules cannot allow is refused saying why.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use shoal_protocol::{
    AssignRequest, Assignment, AssignmentStatus, ErrorCode, ListAssignmentsRequest, MoveRequest,
    ShoalClient,
};
use shoal_testkit::{NatsServer, ServiceProcess, wait_for};

const NODES: [(&str, &str); 6] = [
    ("za1", "a"),
    ("za2", "a"),
    ("zb1", "b"),
    ("zb2", "b"),
    ("zc1", "c"),
    ("zc2", "c"),
];

fn zone_of(node: &str) -> &'static str {
    NODES
        .iter()
        .find(|(id, _)| *id == node)
        .map_or("?", |(_, zone)| zone)
}

fn member(agent: &str, group: &str, spread: bool, anti: bool) -> AssignRequest {
    AssignRequest {
        agent_name: agent.into(),
        group: Some(group.into()),
        spread_by: spread.then(|| "zone".into()),
        anti_affinity: anti,
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        ..AssignRequest::default()
    }
}

/// Sends every request at once; each must be acknowledged.
async fn assign_all(shoal: &ShoalClient, requests: impl Iterator<Item = AssignRequest>) {
    let placed = futures::future::join_all(requests.map(|r| {
        let shoal = shoal.clone();
        async move { assign_acked(&shoal, &r, LONG).await }
    }))
    .await;
    assert!(placed.iter().all(Result::is_ok), "{placed:?}");
}

async fn group(shoal: &ShoalClient, name: &str) -> Vec<Assignment> {
    shoal
        .list_assignments(&ListAssignmentsRequest {
            group: Some(name.into()),
            ..Default::default()
        })
        .await
        .map(|l| l.assignments)
        .unwrap_or_default()
}

/// Agents per zone, if every agent of the group runs.
fn per_zone(agents: &[Assignment]) -> Option<BTreeMap<&'static str, usize>> {
    let mut zones = BTreeMap::new();
    for a in agents {
        if a.status != AssignmentStatus::Running {
            return None;
        }
        *zones.entry(zone_of(&a.node_id)).or_default() += 1;
    }
    Some(zones)
}

/// The nodes of the group's agents, if every one runs on a node of its own.
fn distinct_nodes(agents: &[Assignment]) -> Option<BTreeSet<String>> {
    let nodes: BTreeSet<String> = agents.iter().map(|a| a.node_id.clone()).collect();
    (agents.iter().all(|a| a.status == AssignmentStatus::Running) && nodes.len() == agents.len())
        .then_some(nodes)
}

#[tokio::test]
async fn groups_spread_over_zones_and_stay_apart_when_a_zone_is_lost() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let _services = registry_and_balancer(&url);
    let mut nodes: BTreeMap<&str, ServiceProcess> = NODES
        .iter()
        .map(|(id, zone)| {
            let labels = format!("zone={zone}");
            let process = announcer_with(&url, id, 10, &[("SHOAL_NODE_LABELS", &labels)]);
            (*id, process)
        })
        .collect();
    let _c1 = coordinator(&url, "c1", &[]).unwrap();
    let client = nats.client().await.unwrap();
    let shoal = shoal(&client);
    wait_online(&shoal, 6).await;
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    // The coordinator knows a node once a pin to it takes.
    for (id, _) in NODES {
        let probe = format!("probe-{id}");
        wait_for("the coordinator to know every node", LONG, || async {
            shoal.assign(&pinned(&probe, id)).await.ok()
        })
        .await
        .unwrap();
        shoal.unassign(&probe).await.unwrap();
    }

    // Agents of no group fill zones b and c, so the balancer (on least_agents)
    // would put every new agent in zone a but for the rules.
    for id in ["zb1", "zb2", "zc1", "zc2"] {
        for i in 0..3 {
            shoal
                .assign(&pinned(&format!("fill-{id}-{i}"), id))
                .await
                .unwrap();
        }
    }

    // Six agents spread by zone, asked for all at once: two per zone.
    assign_all(
        &shoal,
        (0..6).map(|i| member(&format!("web-{i}"), "web", true, false)),
    )
    .await;
    let zones = per_zone(&group(&shoal, "web").await).unwrap();
    assert_eq!(zones, BTreeMap::from([("a", 2), ("b", 2), ("c", 2)]));

    // Three agents with anti-affinity, at once: three nodes.
    assign_all(
        &shoal,
        (0..3).map(|i| member(&format!("db-{i}"), "db", false, true)),
    )
    .await;
    let db_nodes = distinct_nodes(&group(&shoal, "db").await).unwrap();
    // A pin onto one of them is refused, naming the agent already there.
    let taken = db_nodes.iter().next().unwrap().clone();
    let pin = AssignRequest {
        node_id: Some(taken.clone()),
        ..member("db-pinned", "db", false, true)
    };
    let e = shoal.assign(&pin).await.unwrap_err();
    assert_eq!(e.service_code(), Some(ErrorCode::NoCapacity), "{e}");
    assert!(e.to_string().contains("anti_affinity"), "{e}");

    // Zone c goes: its agents move, the web group now three per zone over a and b,
    // the db group still on three distinct nodes outside c.
    for id in ["zc1", "zc2"] {
        nodes.get_mut(id).unwrap().kill().unwrap();
    }
    let zones = wait_for("web to spread over zones a and b", LONG, || async {
        let zones = per_zone(&group(&shoal, "web").await)?;
        (!zones.contains_key("c") && zones.values().sum::<usize>() == 6).then_some(zones)
    })
    .await
    .unwrap();
    assert_eq!(zones, BTreeMap::from([("a", 3), ("b", 3)]));
    let db_nodes = wait_for(
        "db to run on distinct nodes outside zone c",
        LONG,
        || async {
            let nodes = distinct_nodes(&group(&shoal, "db").await)?;
            nodes.iter().all(|n| zone_of(n) != "c").then_some(nodes)
        },
    )
    .await
    .unwrap();
    assert_eq!(db_nodes.len(), 3);

    // Four nodes are left: a fourth db agent fits, a fifth has nowhere to go.
    assign_acked(&shoal, &member("db-3", "db", false, true), LONG)
        .await
        .unwrap();
    assert!(distinct_nodes(&group(&shoal, "db").await).is_some());
    let e = shoal
        .assign(&member("db-4", "db", false, true))
        .await
        .unwrap_err();
    assert_eq!(e.service_code(), Some(ErrorCode::NoCapacity), "{e}");
    assert!(
        e.to_string().contains(
            "anti_affinity: all 4 node(s) with a free slot already run an agent of group \"db\""
        ),
        "{e}"
    );

    // An operator's move keeps the spread: a web agent of zone a moves to the other
    // node of zone a, the zone with one agent fewer once it leaves.
    let web = group(&shoal, "web").await;
    let mover = web.iter().find(|a| zone_of(&a.node_id) == "a").unwrap();
    let moved = shoal
        .move_agent(&MoveRequest {
            agent_name: mover.agent_name.clone(),
            node_id: None,
            request_id: None,
        })
        .await
        .unwrap();
    assert_ne!(moved.node_id, mover.node_id);
    assert_eq!(zone_of(&moved.node_id), "a", "{moved:?}");

    // A drain keeps the group apart: with db-3's node freed, db-0 leaves its draining
    // node for exactly that one; the web agents there stay spread.
    let freed = shoal.get_assignment("db-3").await.unwrap().node_id;
    shoal.unassign("db-3").await.unwrap();
    let drained = shoal.get_assignment("db-0").await.unwrap().node_id;
    shoal.drain_node(&drained).await.unwrap();
    wait_for("db-0 to move to the freed node", LONG, || async {
        let a = shoal.get_assignment("db-0").await.ok()?;
        (a.node_id == freed && a.status == AssignmentStatus::Running).then_some(())
    })
    .await
    .unwrap();
    assert!(distinct_nodes(&group(&shoal, "db").await).is_some());
    let zones = wait_for("web to leave the drained node", LONG, || async {
        let web = group(&shoal, "web").await;
        let off = web.iter().all(|a| a.node_id != drained);
        per_zone(&web).filter(|_| off)
    })
    .await
    .unwrap();
    assert_eq!(zones, BTreeMap::from([("a", 3), ("b", 3)]));
}
