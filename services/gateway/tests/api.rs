//! The REST API of the system Shoal replaces, as its usage guide drives it, over
//! real HTTP against a real control plane: register node-2 and node-3 with the
//! guide's bodies, list and get them, heartbeat, assign agents and list them, read
//! the stats and the leader, switch through the five strategies, unregister.

mod common;

use std::collections::BTreeSet;

use common::{LONG, Stack, envelope_message};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_testkit::wait_for;

/// The guide's registration bodies.
fn node_2() -> Value {
    json!({
        "id": "node-2",
        "hostname": "server2",
        "ip_address": "10.0.0.2",
        "port": 8151,
        "max_agents": 20,
        "services": ["wrapper", "database"]
    })
}

fn node_3() -> Value {
    json!({
        "id": "node-3",
        "hostname": "server3",
        "ip_address": "10.0.0.3",
        "port": 8151,
        "max_agents": 15,
        "services": ["wrapper"]
    })
}

/// The fields the guide's node JSON shows, with the values a registration gives.
fn assert_seed_node(node: &Value, id: &str, hostname: &str, ip: &str, max_agents: u64) {
    assert_eq!(node["id"], id, "{node}");
    assert_eq!(node["hostname"], hostname, "{node}");
    assert_eq!(node["address"], format!("{ip}:8151"), "{node}");
    assert_eq!(node["role"], "worker", "{node}");
    assert_eq!(node["status"], "online", "{node}");
    assert_eq!(node["healthy"], true, "{node}");
    assert_eq!(node["max_agents"], max_agents, "{node}");
    for field in [
        "active_agents",
        "capacity",
        "load",
        "cpu_usage",
        "memory_usage",
    ] {
        assert!(node[field].is_number(), "{field} missing: {node}");
    }
    assert!(node["uptime"].is_string(), "{node}");
    assert!(
        node["last_seen"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{node}"
    );
}

#[tokio::test]
async fn the_usage_guides_flow_works_over_http() {
    let stack = Stack::start().await.unwrap();

    // Register node-2 and node-3. node-2 heartbeats from a cron job every 30 s, as
    // in the guide, and says so: the registry counts its missed heartbeats at that
    // pace (node-3, registered and silent, is never judged).
    let mut cron_node_2 = node_2();
    cron_node_2["heartbeat_interval"] = json!(30);
    for (body, ip, max) in [(cron_node_2, "10.0.0.2", 20), (node_3(), "10.0.0.3", 15)] {
        let reply = stack
            .ok(Method::POST, "/api/cluster/nodes", Some(&body))
            .await
            .unwrap();
        assert_eq!(reply["success"], true, "{reply}");
        let id = body["id"].as_str().unwrap();
        let hostname = body["hostname"].as_str().unwrap();
        assert_seed_node(&reply["node"], id, hostname, ip, max);
        assert_eq!(reply["node"]["services"], body["services"], "{reply}");
        assert_eq!(
            reply["node"]["heartbeat_interval"].as_f64(),
            body["heartbeat_interval"].as_f64(),
            "{reply}"
        );
    }

    // List all nodes, and get one.
    let list = stack
        .ok(Method::GET, "/api/cluster/nodes", None)
        .await
        .unwrap();
    assert_eq!(list["count"], 2, "{list}");
    let ids: Vec<&str> = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-2", "node-3"]);
    assert_seed_node(&list["nodes"][0], "node-2", "server2", "10.0.0.2", 20);
    let node = stack
        .ok(Method::GET, "/api/cluster/nodes/node-2", None)
        .await
        .unwrap();
    assert_seed_node(&node, "node-2", "server2", "10.0.0.2", 20);
    let filtered = stack
        .ok(Method::GET, "/api/cluster/nodes?service=database", None)
        .await
        .unwrap();
    assert_eq!(filtered["count"], 1, "{filtered}");
    assert_eq!(filtered["nodes"][0]["id"], "node-2");

    // A heartbeat, with the guide's body: the registry takes its metrics.
    let heartbeat = json!({
        "cpu_usage": 45.3,
        "memory_usage": 62.1,
        "disk_usage": 55.0,
        "load_average": 2.5
    });
    let reply = stack
        .ok(Method::POST, "/api/cluster/nodes/node-2", Some(&heartbeat))
        .await
        .unwrap();
    assert_eq!(reply, json!({ "success": true }));
    let node = wait_for("node-2 to carry the heartbeat's metrics", LONG, || async {
        let (_, node) = stack.get("/api/cluster/nodes/node-2").await.ok()?;
        (node["cpu_usage"] == 45.3).then_some(node)
    })
    .await
    .unwrap();
    assert_eq!(
        (
            &node["memory_usage"],
            &node["disk_usage"],
            &node["load_average"]
        ),
        (&json!(62.1), &json!(55.0), &json!(2.5)),
        "{node}"
    );
    assert_eq!(node["status"], "online", "{node}");

    // Assign agents: the balancer's pick (with why) and a pinned one.
    let mut placed = BTreeSet::new();
    for agent in ["codex", "dev_w1"] {
        let reply = stack
            .ok(
                Method::POST,
                "/api/cluster/assignments",
                Some(&json!({ "agent_name": agent })),
            )
            .await
            .unwrap();
        assert_eq!(reply["agent_name"], agent, "{reply}");
        assert_eq!(reply["status"], "running", "{reply}");
        let node = reply["node_id"].as_str().unwrap().to_string();
        assert!(node == "node-2" || node == "node-3", "{reply}");
        assert_eq!(reply["candidates"]["chosen"], node.as_str(), "{reply}");
        assert!(
            reply["candidates"]["candidates"]
                .as_array()
                .is_some_and(|c| !c.is_empty()),
            "{reply}"
        );
        placed.insert((agent.to_string(), node));
    }
    let pinned = stack
        .ok(
            Method::POST,
            "/api/cluster/assignments",
            Some(&json!({ "agent_name": "comet", "node_id": "node-3" })),
        )
        .await
        .unwrap();
    assert_eq!(pinned["node_id"], "node-3", "{pinned}");
    assert!(pinned.get("candidates").is_none(), "{pinned}");
    placed.insert(("comet".into(), "node-3".into()));

    // List assignments: the guide's fields.
    let list = stack
        .ok(Method::GET, "/api/cluster/assignments", None)
        .await
        .unwrap();
    assert_eq!(list["count"], 3, "{list}");
    let listed: BTreeSet<(String, String)> = list["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["status"], "running", "{a}");
            assert!(a["assigned_at"].is_string(), "{a}");
            (
                a["agent_name"].as_str().unwrap().to_string(),
                a["node_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, placed);
    let one = stack
        .ok(Method::GET, "/api/cluster/assignments/comet", None)
        .await
        .unwrap();
    assert_eq!(one["node_id"], "node-3", "{one}");

    // Stats: the guide's shape.
    let stats = stack
        .ok(Method::GET, "/api/cluster/stats", None)
        .await
        .unwrap();
    assert_eq!(stats["local_node"], "coordinator-1", "{stats}");
    assert_eq!(stats["is_leader"], true, "{stats}");
    assert_eq!(stats["total_assignments"], 3, "{stats}");

    // Metrics: every instance's, in one OpenMetrics scrape, labelled by instance.
    let scrape = stack.http.get(stack.url("/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    let content_type = scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = scrape.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let assigned_ok: f64 = text
        .lines()
        .filter(|l| l.starts_with("shoal_coordinator_assigns_total{"))
        .filter(|l| l.contains("outcome=\"ok\"") && l.contains("instance=\"coordinator-1\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        assigned_ok >= 3.0,
        "3 assigns made, the scrape counts {assigned_ok}:\n{text}"
    );
    for service in ["registry", "balancer", "coordinator"] {
        assert!(
            text.lines().any(|l| l.starts_with("shoal_up{")
                && l.contains(&format!("service=\"{service}\""))
                && l.ends_with(" 1")),
            "no live {service} in the scrape:\n{text}"
        );
    }
    let registry = &stats["registry"];
    assert_eq!(registry["total_nodes"], 2, "{stats}");
    assert_eq!(registry["healthy_nodes"], 2, "{stats}");
    assert_eq!(registry["online_nodes"], 2, "{stats}");
    assert_eq!(registry["max_agents"], 35, "{stats}");
    assert_eq!(registry["nodes_by_role"], json!({ "worker": 2 }), "{stats}");
    assert_eq!(
        registry["nodes_by_status"],
        json!({ "online": 2 }),
        "{stats}"
    );
    let total = registry["total_agents"].as_f64().unwrap();
    let utilization = registry["utilization_pct"].as_f64().unwrap();
    assert!((utilization - total / 35.0 * 100.0).abs() < 0.1, "{stats}");
    assert!(stats["balancer"]["strategy"].is_string(), "{stats}");
    assert!(stats["balancer"]["round_robin_index"].is_u64(), "{stats}");

    // The leader, and promoting it (no body: the current one stays).
    let leader = stack
        .ok(Method::GET, "/api/cluster/leader", None)
        .await
        .unwrap();
    assert_eq!(leader["leader"]["id"], "coordinator-1", "{leader}");
    assert!(leader["leader"]["epoch"].as_u64().unwrap() > 0, "{leader}");
    let promoted = stack
        .ok(Method::POST, "/api/cluster/leader", None)
        .await
        .unwrap();
    assert_eq!(promoted["success"], true, "{promoted}");
    assert_eq!(promoted["is_leader"], true, "{promoted}");
    assert_eq!(promoted["leader"]["id"], "coordinator-1", "{promoted}");

    // Every strategy, as the guide switches them: no body, no content type.
    for strategy in [
        "round_robin",
        "least_loaded",
        "least_agents",
        "random",
        "weighted",
    ] {
        let reply = stack
            .ok(
                Method::POST,
                &format!("/api/cluster/balance?strategy={strategy}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            reply,
            json!({ "success": true, "strategy": strategy }),
            "{strategy}"
        );
        let current = stack
            .ok(Method::GET, "/api/cluster/balance", None)
            .await
            .unwrap();
        assert_eq!(current["strategy"], strategy);
    }

    // The history says why each agent went where it did.
    let history = stack
        .ok(Method::GET, "/api/cluster/history?agent=codex", None)
        .await
        .unwrap();
    assert!(history["count"].as_u64().unwrap() >= 1, "{history}");
    assert_eq!(history["history"][0]["action"], "assigned", "{history}");
    // A full page says where the older rows go on, one row at a time here (the
    // three assigns reach the history within moments).
    let (page, older) = wait_for("two pages of history", LONG, || async {
        let page = stack
            .ok(Method::GET, "/api/cluster/history?limit=1", None)
            .await
            .ok()?;
        let next = page["next"].clone();
        let path = format!(
            "/api/cluster/history?limit=1&before={}.{}",
            next["log_seq"], next["log_index"]
        );
        let older = stack.ok(Method::GET, &path, None).await.ok()?;
        (older["count"] == 1).then_some((page, older))
    })
    .await
    .unwrap();
    assert_eq!(
        page["next"]["log_seq"], page["history"][0]["log_seq"],
        "{page}"
    );
    let (newer, older_row) = (&page["history"][0], &older["history"][0]);
    let position = |r: &Value| (r["log_seq"].as_u64(), r["log_index"].as_u64());
    assert!(position(older_row) < position(newer), "{older_row} {newer}");
    let none = stack
        .ok(Method::GET, "/api/cluster/history?before=1", None)
        .await
        .unwrap();
    assert_eq!(none["count"], 0, "{none}");

    // Unregister node-3: gone.
    let reply = stack
        .ok(Method::DELETE, "/api/cluster/nodes/node-3", None)
        .await
        .unwrap();
    assert_eq!(reply["success"], true, "{reply}");
    let (status, body) = stack.get("/api/cluster/nodes/node-3").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        envelope_message(&body, "not_found").contains("node-3"),
        "{body}"
    );
}
