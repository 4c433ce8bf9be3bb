//! `shoal replay` against a real control plane (`shoal up`: nats-server, Postgres,
//! the services, three announcers): a few assigns and unassigns, a node failure
//! whose agents the coordinator moves, then the history replayed under every
//! strategy, checked against what was done.

mod up_support;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde_json::Value;
use shoal_protocol::{
    Assignment, AssignmentList, AssignmentStatus, HistoryReply, Node, NodeStatus,
};
use shoal_testkit::wait_for;
use up_support::{DEADLINE, Stack};

const STRATEGIES: [&str; 5] = [
    "round_robin",
    "least_loaded",
    "least_agents",
    "random",
    "weighted",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sets_every_strategy_beside_the_real_history() -> Result<()> {
    let stack = Stack::up(&["--nodes", "3", "--coordinators", "1"]).await?;
    stack.online_nodes(3).await?;

    // An empty history is refused, saying what to do.
    let out = stack.run(&["replay", "--strategy", "all"]).await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no changes") && err.contains("make some"),
        "{err}"
    );

    // Six agents by the balancer, one pinned to node-2 (so the failure has
    // something to move), two of them removed again.
    for i in 0..6 {
        let name = format!("agent-{i}");
        let _: Assignment = wait_for("an assign to be accepted", DEADLINE, || async {
            stack.json(&["assign", &name]).await.ok()
        })
        .await?;
    }
    let _: Assignment = stack
        .json(&["assign", "pinned", "--node", "node-2"])
        .await?;
    stack.text(&["unassign", "agent-0"]).await?;
    stack.text(&["unassign", "agent-1"]).await?;

    // node-2 fails: the coordinator moves its agents to the other nodes.
    let list: AssignmentList = stack.json(&["assignments", "--node", "node-2"]).await?;
    let on_node_2: BTreeSet<String> = list.assignments.into_iter().map(|a| a.agent_name).collect();
    assert!(on_node_2.contains("pinned"), "{on_node_2:?}");
    stack.text(&["stop", "node-2"]).await?;
    wait_for("node-2 to be gone", DEADLINE, || async {
        let n: Node = stack.json(&["node", "node-2"]).await.ok()?;
        (n.status != NodeStatus::Online).then_some(())
    })
    .await?;
    let history: HistoryReply =
        wait_for("node-2's agents moved and recorded", DEADLINE, || async {
            let list: AssignmentList = stack.json(&["assignments"]).await.ok()?;
            let settled = list.count == 5
                && list
                    .assignments
                    .iter()
                    .all(|a| a.status == AssignmentStatus::Running && a.node_id != "node-2");
            let h: HistoryReply = stack.json(&["history", "--limit", "1000"]).await.ok()?;
            // 7 assigns, 2 unassigns, and per moved agent an orphan row and its
            // reassignment (or one row when moved at once).
            let moved = h
                .history
                .iter()
                .filter(|r| r.previous_node_id.as_deref() == Some("node-2") && r.node_id.is_some())
                .count();
            (settled && moved == on_node_2.len()).then_some(h)
        })
        .await?;
    let balanced = history
        .history
        .iter()
        .filter(|r| r.candidates.is_some() && r.node_id.is_some())
        .count() as u64;

    let report: Value = stack.json(&["replay", "--strategy", "all"]).await?;
    assert_eq!(report["rows"], history.count, "{report:#}");
    assert_eq!(report["node_source"], "registry");
    assert_eq!(report["nodes"], 3, "node-2 failed in the history: kept");
    assert_eq!(
        report["strategies_used"]["least_loaded"], balanced,
        "{report:#}"
    );
    let runs = report["runs"].as_array().context("runs")?;
    let names: Vec<&str> = runs.iter().filter_map(|r| r["name"].as_str()).collect();
    let mut want = vec!["real"];
    want.extend(STRATEGIES);
    assert_eq!(names, want);
    let real = &runs[0];
    assert_eq!(
        real["moves"],
        on_node_2.len() as u64,
        "the moves made: {real:#}"
    );
    assert_eq!(real["differed"], 0);
    for run in runs {
        let name = &run["name"];
        assert_eq!(run["decisions"], balanced, "{name}");
        assert!(run["differed"].as_u64() <= Some(balanced), "{run:#}");
        // Every run had at least the pinned agent on node-2 to move, and room for it.
        assert!(run["moves"].as_u64() >= Some(1), "{run:#}");
        assert_eq!(run["waiting"], 0, "{run:#}");
        // Five agents end on two nodes.
        let last = run["spread"]["last"].as_f64().context("spread.last")?;
        assert!((0.0..=5.0).contains(&last), "{run:#}");
        assert!(run["stddev_load"]["mean"].as_f64().is_some(), "{run:#}");
    }

    // The table, the same again (seeded), and the picture.
    let dir = tempfile::tempdir()?;
    let svg = dir.path().join("spread.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    let table = stack
        .text(&["replay", "--strategy", "all", "--svg", &svg_arg])
        .await?;
    for name in &want {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{name} "))),
            "no {name} row in\n{table}"
        );
    }
    println!("{table}");
    let again = stack.text(&["replay", "--strategy", "all"]).await?;
    assert_eq!(table, again, "the same history and seed");
    let picture = std::fs::read_to_string(&svg)?;
    assert_eq!(picture.matches(r#"class="line""#).count(), 6);

    // Bad input is refused with a clear message.
    for (args, says) in [
        (vec!["--strategy", "fastest"], "is not a strategy"),
        (
            vec!["--strategy", "all", "--since", "1m", "--until", "2h"],
            "is not before --until",
        ),
        (
            vec!["--strategy", "all", "--since", "yesterday-ish"],
            "neither an RFC 3339 time",
        ),
        (
            vec!["--strategy", "all", "--until", "2000-01-01T00:00:00Z"],
            "no changes before",
        ),
    ] {
        let mut all = vec!["replay"];
        all.extend(&args);
        let out = stack.run(&all).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let down = stack.run(&["down"]).await?;
    assert!(down.status.success());
    Ok(())
}
