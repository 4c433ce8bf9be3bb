//! `shoal up` from the outside: the CLI is run as a user runs it (a subprocess, JSON
//! output parsed), against the whole control plane it starts — nats-server,
//! Postgres, registry, balancer, coordinators, announcers — on free ports in a
//! temporary directory. Then `shoal down` (or Ctrl-C) must leave no process behind.

mod up_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shoal_protocol::{
    Assignment, AssignmentAction, AssignmentList, AssignmentStatus, HistoryReply, LeaderReply,
    Node, NodeList, NodeStatus, PromoteReply,
};
use shoal_testkit::wait_for;
use up_support::{DEADLINE, FULL, Stack, all_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_then_operate_then_down() -> Result<()> {
    let started = Instant::now();
    let mut stack = Stack::up(&["--nodes", "3"]).await?;
    let nodes = stack.online_nodes(3).await?;
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["node-1", "node-2", "node-3"]);
    stack.all_healthy(&FULL).await?;
    println!(
        "up: 3 nodes online, all healthy after {:?}",
        started.elapsed()
    );
    // The gateway `up` printed serves the same nodes over HTTP.
    let http_port = stack.layout.3;
    assert!(
        stack
            .up
            .log()
            .contains(&format!("http://127.0.0.1:{http_port}/")),
        "shoal up does not print the gateway's URL:\n{}",
        stack.up.log()
    );
    let listed = shoal_testkit::http::get(http_port, "/api/cluster/nodes").await?;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed: serde_json::Value = serde_json::from_str(&listed.body)?;
    assert_eq!(listed["count"], 3, "{listed}");

    // Raw requests, as `nats req` would send them, and service discovery.
    let stats: serde_json::Value = stack
        .json(&["request", "shoal.registry.stats", "{}"])
        .await?;
    assert_eq!(stats["online_nodes"], 3, "{stats}");
    let refused = stack
        .run(&[
            "request",
            "shoal.registry.nodes.get",
            r#"{"id":"no-such-node"}"#,
        ])
        .await?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no-such-node"),
        "{refused:?}"
    );
    let not_json = stack
        .run(&["request", "shoal.registry.stats", "{nope"])
        .await?;
    assert!(!not_json.status.success());
    assert!(String::from_utf8_lossy(&not_json.stderr).contains("not JSON"));
    // A metrics subject answers with OpenMetrics text, printed as it came.
    let metrics = stack
        .run(&["request", "shoal.registry.instance.registry.metrics"])
        .await?;
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.status.success(), "{metrics:?}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"shoal_registry_nodes{status="online"} 3"#)),
        "{text}"
    );
    let services: Vec<serde_json::Value> = stack.json(&["services"]).await?;
    let instances: BTreeSet<&str> = services
        .iter()
        .filter_map(|s| s["instance_id"].as_str())
        .collect();
    for want in ["registry", "balancer", "coordinator-1", "gateway", "node-1"] {
        assert!(instances.contains(want), "no {want} in {services:?}");
    }

    // Leadership and assignments.
    let leader: LeaderReply = wait_for("a leader", DEADLINE, || async {
        let l: LeaderReply = stack.json(&["leader"]).await.ok()?;
        l.leader.is_some().then_some(l)
    })
    .await?;
    let leader_id = leader.leader.context("leader")?.coordinator_id;
    let mut agents = Vec::new();
    for name in ["a1", "a2", "a3", "a4"] {
        let a: Assignment = stack.json(&["assign", name]).await?;
        assert_eq!(a.agent_name, name);
        assert!(ids.contains(&a.node_id.as_str()), "{a:?}");
        agents.push(a);
    }
    let pinned: Assignment = stack
        .json(&["assign", "pinned", "--node", "node-1"])
        .await?;
    assert_eq!(pinned.node_id, "node-1");
    let list: AssignmentList = stack.json(&["assignments"]).await?;
    assert_eq!(list.count, 5, "{list:?}");

    // Drain: node-1's agents move off, and it takes no new ones.
    let drained: Node = stack.json(&["drain", "node-1"]).await?;
    assert!(drained.draining, "{drained:?}");
    assert_eq!(drained.status, NodeStatus::Draining);
    wait_for("node-1 to have no agents", DEADLINE, || async {
        let on1: AssignmentList = stack
            .json(&["assignments", "--node", "node-1"])
            .await
            .ok()?;
        (on1.count == 0).then_some(())
    })
    .await?;
    let list: AssignmentList = stack.json(&["assignments"]).await?;
    assert_eq!(list.count, 5, "an agent was lost while draining: {list:?}");
    assert!(list.assignments.iter().all(|a| a.node_id != "node-1"));
    let late: Assignment = stack.json(&["assign", "late"]).await?;
    assert_ne!(late.node_id, "node-1", "a draining node took a new agent");

    // History (from Postgres): the pinned agent's assignment and its move.
    let history: HistoryReply = wait_for("the pinned agent's history", DEADLINE, || async {
        let h: HistoryReply = stack.json(&["history", "--agent", "pinned"]).await.ok()?;
        h.history
            .iter()
            .any(|r| r.action == AssignmentAction::Migrated)
            .then_some(h)
    })
    .await?;
    assert!(history.history.iter().any(|r| {
        r.action == AssignmentAction::Assigned && r.node_id.as_deref() == Some("node-1")
    }));
    assert!(history.history.iter().any(|r| {
        r.action == AssignmentAction::Migrated
            && r.previous_node_id.as_deref() == Some("node-1")
            && r.node_id.as_deref() != Some("node-1")
    }));
    let everything: HistoryReply = stack.json(&["history", "--limit", "100"]).await?;
    for a in &agents {
        assert!(
            everything
                .history
                .iter()
                .any(|r| r.agent_name == a.agent_name && r.action == AssignmentAction::Assigned),
            "no history row for {}",
            a.agent_name
        );
    }

    // Promotion hands leadership to the other coordinator.
    let other = if leader_id == "coordinator-1" {
        "coordinator-2"
    } else {
        "coordinator-1"
    };
    let promoted: PromoteReply = stack.json(&["promote", other]).await?;
    assert_eq!(promoted.leader.coordinator_id, other);
    let now: LeaderReply = stack.json(&["leader"]).await?;
    assert_eq!(now.leader.map(|l| l.coordinator_id).as_deref(), Some(other));
    let undrained: Node = stack.json(&["undrain", "node-1"]).await?;
    assert!(!undrained.draining);

    // Logs and errors that say what to do next.
    let logs = stack.run(&["logs", "registry", "-n", "200"]).await?;
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success());
    assert!(text.contains("==> registry"), "{text}");
    assert!(text.contains("registry ready"), "{text}");
    let nope = stack.run(&["node", "nope"]).await?;
    assert!(!nope.status.success());
    let err = String::from_utf8_lossy(&nope.stderr);
    assert!(err.contains("no node with id \"nope\""), "{err}");
    assert!(err.contains("`shoal nodes`"), "{err}");
    // With --json the error is JSON too, with the service's code and details.
    let nope = stack.run(&["--json", "node", "nope"]).await?;
    assert!(!nope.status.success());
    let err: serde_json::Value = serde_json::from_slice(&nope.stderr)
        .with_context(|| String::from_utf8_lossy(&nope.stderr).to_string())?;
    assert_eq!(err["error"]["code"], "not_found", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`shoal nodes`")),
        "{err}"
    );
    let nope = stack.run(&["logs", "nope"]).await?;
    assert!(!nope.status.success());
    assert!(String::from_utf8_lossy(&nope.stderr).contains("coordinator-2"));
    println!("up: operator commands done after {:?}", started.elapsed());

    // One process stopped, started and restarted through `shoal up`, which keeps
    // it: `status` follows it, the cluster sees it go and come back, and `down`
    // stops the new process with the rest.
    let said = stack.text(&["stop", "node-3"]).await?;
    assert_eq!(said.trim(), "node-3 stopped");
    let stopped = stack.instance("node-3").await?;
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    // Stopped with SIGTERM, the node leaves the cluster on its way out.
    wait_for("node-3 to have left", DEADLINE, || async {
        let n: Node = stack.json(&["node", "node-3"]).await.ok()?;
        (n.status == NodeStatus::Left).then_some(())
    })
    .await?;
    let again = stack.run(&["stop", "node-3"]).await?;
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already stopped"));
    let said = stack.text(&["start", "node-3"]).await?;
    assert!(said.starts_with("node-3 started (pid "), "{said}");
    wait_for("node-3 to be online again", DEADLINE, || async {
        let n: Node = stack.json(&["node", "node-3"]).await.ok()?;
        (n.status == NodeStatus::Online).then_some(())
    })
    .await?;
    let running = stack.run(&["start", "node-3"]).await?;
    assert!(!running.status.success());
    let err = String::from_utf8_lossy(&running.stderr);
    assert!(
        err.contains("already running") && err.contains("`shoal restart node-3`"),
        "{err}"
    );
    let before = stack.instance("coordinator-1").await?["pid"].clone();
    let restarted: serde_json::Value = stack.json(&["restart", "coordinator-1"]).await?;
    assert_eq!(restarted["status"], "running", "{restarted}");
    assert_ne!(restarted["pid"], before, "{restarted}");
    let data = stack.run(&["stop", "postgres"]).await?;
    assert!(!data.status.success());
    assert!(String::from_utf8_lossy(&data.stderr).contains("shoal down"));
    let unknown = stack.run(&["restart", "node-9"]).await?;
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("one of: "));
    let pids = stack.all_healthy(&FULL).await?;
    println!(
        "up: stop, start and restart done after {:?}",
        started.elapsed()
    );

    // Down: everything stops, `shoal up` exits cleanly, and the state is gone.
    let down_started = Instant::now();
    let down = stack.run(&["down"]).await?;
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let status = stack.up.wait_exit(Duration::from_secs(60)).await?;
    assert!(status.success(), "shoal up exited with {status}");
    all_gone(&pids).await?;
    println!("up: down took {:?}", down_started.elapsed());
    assert!(!stack.state_file().exists());
    // Stopped: status shows the last run's processes as stopped (and fails, since
    // nothing runs), and its logs are still there.
    let after = stack.run(&["status"]).await?;
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("shoal up"));
    let table = String::from_utf8_lossy(&after.stdout);
    assert!(
        table.contains("registry") && table.contains("stopped"),
        "{table}"
    );
    assert!(!table.contains("running"), "{table}");
    let logs = stack.run(&["logs", "registry"]).await?;
    assert!(logs.status.success());
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.contains("the last run, stopped"), "{text}");
    assert!(text.contains("registry ready"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_everything() -> Result<()> {
    let mut stack = Stack::up(&["--nodes", "1", "--coordinators", "1"]).await?;
    let pids = stack
        .all_healthy(&[
            "nats-server",
            "postgres",
            "registry",
            "balancer",
            "coordinator-1",
            "node-1",
            "gateway",
        ])
        .await?;
    stack.online_nodes(1).await?;
    let stopping = Instant::now();
    stack.up.interrupt()?;
    let status = stack.up.wait_exit(Duration::from_secs(60)).await?;
    assert!(status.success(), "shoal up exited with {status}");
    all_gone(&pids).await?;
    println!("ctrl-c: everything stopped after {:?}", stopping.elapsed());
    assert!(!stack.state_file().exists());
    Ok(())
}

/// Agents per node as `shoal assignments` lists them (running ones only) and as
/// `shoal nodes` reports them (the nodes' own counts), once both agree and every
/// agent is running on an online node.
async fn converged(stack: &Stack, agents: usize) -> Option<BTreeMap<String, u32>> {
    let list: AssignmentList = stack.json(&["assignments"]).await.ok()?;
    let nodes: NodeList = stack.json(&["nodes"]).await.ok()?;
    let online: BTreeMap<&str, u32> = nodes
        .nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Online)
        .map(|n| (n.id.as_str(), n.active_agents))
        .collect();
    let mut assigned: BTreeMap<String, u32> = online.keys().map(|id| (id.to_string(), 0)).collect();
    for a in &list.assignments {
        if a.status != AssignmentStatus::Running || !online.contains_key(a.node_id.as_str()) {
            return None;
        }
        *assigned.entry(a.node_id.clone()).or_default() += 1;
    }
    let reported: BTreeMap<String, u32> =
        online.iter().map(|(id, n)| (id.to_string(), *n)).collect();
    (list.count == agents && assigned == reported).then_some(assigned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_then_up_keeps_every_agent_running_where_its_node_says() -> Result<()> {
    let mut stack = Stack::up(&["--nodes", "3"]).await?;
    stack.online_nodes(3).await?;
    stack.all_healthy(&FULL).await?;
    let names: Vec<String> = (0..7).map(|i| format!("agent-{i}")).collect();
    for name in &names {
        let _: Assignment = wait_for("an assign to be accepted", DEADLINE, || async {
            stack.json(&["assign", name]).await.ok()
        })
        .await?;
    }
    let before = wait_for("nodes to report their agents", DEADLINE, || {
        converged(&stack, names.len())
    })
    .await?;

    let down = stack.run(&["down"]).await?;
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    stack.up.wait_exit(Duration::from_secs(60)).await?;

    let again = stack.again(&["--nodes", "3"]).await?;
    // The first run's logs are kept beside the new run's.
    let kept = again.dir.path().join("run/logs.previous/registry.log");
    let kept = std::fs::read_to_string(&kept).with_context(|| kept.display().to_string())?;
    assert!(kept.contains("registry ready"), "{kept}");
    let started = Instant::now();
    let after = wait_for("every agent running where its node says", DEADLINE, || {
        converged(&again, names.len())
    })
    .await?;
    let took = started.elapsed();
    println!(
        "MEASURED down then up: {} agents running and reported by their nodes {took:?} after up",
        names.len()
    );
    assert!(took <= Duration::from_secs(5), "converged after {took:?}");
    assert_eq!(after, before, "agents moved on a clean stop and start");
    // Nothing was reassigned: the coordinators stopped before the nodes.
    let history: HistoryReply = again.json(&["history", "--limit", "100"]).await?;
    let moved: Vec<_> = history
        .history
        .iter()
        .filter(|r| r.action != AssignmentAction::Assigned)
        .collect();
    assert!(moved.is_empty(), "{moved:?}");
    let down = again.run(&["down"]).await?;
    assert!(down.status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_conflicts_and_moves_from_the_command_line() -> Result<()> {
    let stack = Stack::up(&["--nodes", "2", "--coordinators", "1"]).await?;
    stack.online_nodes(2).await?;
    let placed: Assignment = wait_for("an assign to be accepted", DEADLINE, || async {
        stack
            .json(&["assign", "mover", "--node", "node-1"])
            .await
            .ok()
    })
    .await?;
    assert_eq!(placed.node_id, "node-1");
    // Pinning it elsewhere is refused, saying where it is and what to run.
    let out = stack.run(&["assign", "mover", "--node", "node-2"]).await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already on node \"node-1\""), "{err}");
    assert!(err.contains("shoal move mover --node node-2"), "{err}");
    let moved: Assignment = stack.json(&["move", "mover", "--node", "node-2"]).await?;
    assert_eq!(moved.node_id, "node-2");
    let back: Assignment = stack.json(&["move", "mover"]).await?;
    assert_eq!(
        back.node_id, "node-1",
        "the balancer's pick among the others"
    );
    // Assigning it again changes nothing, and says so.
    let out = stack.run(&["assign", "mover"]).await?;
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("mover is already on node-1"), "{said}");
    assert!(said.contains("nothing changed"), "{said}");
    let fresh = stack.run(&["assign", "newcomer"]).await?;
    let said = String::from_utf8_lossy(&fresh.stdout);
    assert!(said.starts_with("newcomer → node-"), "{said}");
    // And why that node: the strategy and the candidates it scored, in the assign's
    // output and in the history table.
    assert!(said.contains("least_loaded chose node-"), "{said}");
    wait_for("the history table to say why", DEADLINE, || async {
        let out = stack.run(&["history", "--agent", "newcomer"]).await.ok()?;
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        (table.contains("WHY") && table.contains(" chose node-")).then_some(())
    })
    .await?;
    let out = stack.run(&["move", "mover", "--node", "node-99"]).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("`shoal nodes`"), "{err}");
    let history: HistoryReply = wait_for("the moves in history", DEADLINE, || async {
        let h: HistoryReply = stack.json(&["history", "--agent", "mover"]).await.ok()?;
        (h.history
            .iter()
            .filter(|r| r.action == AssignmentAction::Migrated && r.reason == "operator")
            .count()
            == 2)
            .then_some(h)
    })
    .await?;
    assert_eq!(history.count, 3, "{history:?}");
    let down = stack.run(&["down"]).await?;
    assert!(down.status.success());
    Ok(())
}
