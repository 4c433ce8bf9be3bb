//! `/api/cluster/health` against a real control plane: 200 with Oxide's fields
//! while everything runs; a service killed with SIGKILL shows within 2 s as a 503
//! naming it (its replica listed as down, not just missing); restarted, 200 again.

mod common;

use std::time::{Duration, Instant};

use common::{LONG, Stack};
use reqwest::StatusCode;
use serde_json::Value;
use shoal_testkit::wait_for;

/// The goal: a crashed service shows in health within this.
const DETECTION_GOAL: Duration = Duration::from_secs(2);

fn replica<'a>(health: &'a Value, service: &str, id: &str) -> Option<&'a Value> {
    health["replicas"][service]
        .as_array()?
        .iter()
        .find(|r| r["instance_id"] == id)
}

#[tokio::test]
async fn health_turns_503_within_two_seconds_of_a_crash_and_back_after_a_restart() {
    let mut stack = Stack::start().await.unwrap();

    let health = stack.wait_healthy().await.unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["node_id"], "gateway-1", "{health}");
    assert!(health["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(
        health["services"],
        serde_json::json!(["balancer", "coordinator", "registry"]),
        "{health}"
    );
    for field in ["cpu_percent", "memory_percent"] {
        let v = health[field].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&v), "{field}: {health}");
    }
    assert_eq!(health["active_tasks"], 0, "{health}");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{health}");
    assert_eq!(health["leader"]["id"], "coordinator-1", "{health}");
    assert_eq!(health["jetstream"]["reachable"], true, "{health}");
    assert_eq!(health["history_lag_s"], 0.0, "{health}");
    assert_eq!(health["problems"], serde_json::json!([]), "{health}");
    for (service, id) in [
        ("registry", "registry-1"),
        ("balancer", "balancer-1"),
        ("coordinator", "coordinator-1"),
    ] {
        let r = replica(&health, service, id).unwrap_or_else(|| panic!("{id}: {health}"));
        assert_eq!(r["status"], "up", "{health}");
    }

    // kill -9 the balancer.
    stack.balancer.kill().unwrap();
    let killed = Instant::now();
    let (health, seen_after) = wait_for("health to answer 503", LONG, || async {
        let (status, body) = stack.get("/api/cluster/health").await.ok()?;
        (status == StatusCode::SERVICE_UNAVAILABLE).then(|| (body, killed.elapsed()))
    })
    .await
    .unwrap();
    assert!(
        seen_after <= DETECTION_GOAL,
        "the crash showed in health after {seen_after:?}, over the {DETECTION_GOAL:?} goal: {health}"
    );
    eprintln!("balancer crash seen by health after {seen_after:?}");
    assert_eq!(health["status"], "unhealthy", "{health}");
    let problems = health["problems"].to_string();
    assert!(problems.contains("balancer: no live replica"), "{health}");
    assert!(problems.contains("balancer-1 is down"), "{health}");
    let r = replica(&health, "balancer", "balancer-1").unwrap();
    assert_eq!(r["status"], "down", "{health}");
    assert_eq!(
        health["services"],
        serde_json::json!(["coordinator", "registry"]),
        "{health}"
    );

    // Back again.
    stack.balancer.respawn().unwrap();
    let health = stack.wait_healthy().await.unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(
        replica(&health, "balancer", "balancer-1").unwrap()["status"],
        "up"
    );
}
