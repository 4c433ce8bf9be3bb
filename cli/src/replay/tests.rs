//! The replay engine on a recorded history: a small hand-written list of history
//! rows on three nodes, whose figures are worked out by hand below.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use shoal_protocol::{AssignmentAction, HistoryEntry, Node, Strategy};

use super::engine::{Input, ReplayError, Report, replay};
use super::world::NodeSource;
use super::{StrategyChoice, chart, report};

use AssignmentAction::{Assigned, Orphaned, Reassigned, Unassigned};

const NODES: [&str; 3] = ["n1", "n2", "n3"];

fn at(seq: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 10, 8, 0, 0).unwrap() + chrono::Duration::seconds(seq as i64)
}

/// A history row; `chose` is the balancer's strategy when it chose the node.
fn row(
    seq: u64,
    agent: &str,
    action: AssignmentAction,
    from: Option<&str>,
    to: Option<&str>,
    reason: &str,
    chose: Option<Strategy>,
) -> HistoryEntry {
    HistoryEntry {
        event_id: format!("e{seq}"),
        log_seq: seq,
        log_index: 0,
        agent_name: agent.to_string(),
        node_id: to.map(str::to_string),
        previous_node_id: from.map(str::to_string),
        action,
        reason: reason.to_string(),
        leader_id: "coordinator-1".to_string(),
        epoch: 1,
        at: at(seq),
        candidates: chose.map(|s| {
            json!({
                "strategy": s.as_str(),
                "chosen": to,
                "candidates": NODES.map(|n| json!({"node_id": n, "score": 0.0})),
            })
        }),
    }
}

/// Five agents placed by least_agents on three nodes, one removed, then n1 fails
/// and its two agents move to n2 and n3.
fn recorded() -> Vec<HistoryEntry> {
    let la = Some(Strategy::LeastAgents);
    vec![
        row(1, "a1", Assigned, None, Some("n1"), "balanced", la),
        row(2, "a2", Assigned, None, Some("n2"), "balanced", la),
        row(3, "a3", Assigned, None, Some("n3"), "balanced", la),
        row(4, "a4", Assigned, None, Some("n1"), "balanced", la),
        row(5, "a2", Unassigned, Some("n2"), None, "requested", None),
        row(6, "a5", Assigned, None, Some("n2"), "balanced", la),
        row(7, "a1", Orphaned, Some("n1"), None, "orphaned", None),
        row(8, "a4", Orphaned, Some("n1"), None, "orphaned", None),
        row(9, "a1", Reassigned, Some("n1"), Some("n2"), "orphaned", la),
        row(10, "a4", Reassigned, Some("n1"), Some("n3"), "orphaned", la),
    ]
}

fn registry() -> NodeSource {
    NodeSource::Registry(
        NODES
            .iter()
            .rev()
            .map(|id| Node {
                max_agents: 10,
                ..Node::example(id)
            })
            .collect(),
    )
}

fn run_all(history: &[HistoryEntry], nodes: NodeSource, seed: u64) -> Report {
    replay(Input {
        history,
        nodes,
        strategies: &Strategy::ALL,
        seed,
    })
    .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn replaying_under_the_strategy_really_used_reproduces_every_decision() {
    let history = recorded();
    let report = run_all(&history, registry(), 1);
    let real = &report.runs[0];
    let least_agents = report
        .runs
        .iter()
        .find(|r| r.name == "least_agents")
        .unwrap();
    assert_eq!(real.name, "real");
    assert_eq!(report.strategies_used["least_agents"], 7);
    // Five balanced arrivals and two balanced reassignments; the pinned-free
    // unassign and the orphan rows are not the balancer's decisions.
    assert_eq!((real.decisions, least_agents.decisions), (7, 7));
    assert_eq!(least_agents.differed, 0, "{:?}", least_agents.examples);
    assert!(least_agents.examples.is_empty());
    assert_eq!((real.moves, least_agents.moves), (2, 2));
    assert_eq!((real.waiting, least_agents.waiting), (0, 0));
}

#[test]
fn spread_figures_are_the_ones_worked_out_by_hand() {
    let report = run_all(&recorded(), registry(), 1);
    let real = &report.runs[0];
    let la = report
        .runs
        .iter()
        .find(|r| r.name == "least_agents")
        .unwrap();
    // Agents on (n1, n2, n3) after each row, n1 left out once it is down:
    // (1,0,0) (1,1,0) (1,1,1) (2,1,1) (2,0,1) (2,1,1) | (1,1) (1,1) (2,1) (2,2).
    let spreads: Vec<u32> = real.samples.iter().map(|s| s.spread).collect();
    assert_eq!(spreads, [1, 1, 0, 1, 2, 1, 0, 0, 1, 0]);
    assert!(close(real.summary.spread.mean, 0.7));
    assert_eq!(
        (real.summary.spread.max, real.summary.spread.last),
        (2.0, 0.0)
    );
    let third = (2.0f64 / 9.0).sqrt();
    let sds = [
        third,
        third,
        0.0,
        third,
        (2.0f64 / 3.0).sqrt(),
        third,
        0.0,
        0.0,
        0.5,
        0.0,
    ];
    for (sample, sd) in real.samples.iter().zip(sds) {
        assert!(close(sample.stddev_agents, sd), "{sample:?} wants {sd}");
    }
    assert_eq!(real.samples[6].nodes, 2, "n1 is down from row 7");
    assert!(close(
        real.summary.stddev_agents.mean,
        sds.iter().sum::<f64>() / 10.0
    ));
    // The replay moves both of n1's agents when it fails: (2,2) from row 7 on.
    let spreads: Vec<u32> = la.samples.iter().map(|s| s.spread).collect();
    assert_eq!(spreads, [1, 1, 0, 1, 2, 1, 0, 0, 0, 0]);
    // Estimated load per agent on a node of 10 slots, measured idle: 0.3/10 for its
    // slot plus the default cost (2.5 % CPU × 0.4 + 2.5 % memory × 0.3).
    let per_agent = 0.3 / 10.0 + 0.4 * 0.025 + 0.3 * 0.025;
    let load = real.summary.stddev_load.unwrap();
    assert!(
        close(load.mean, per_agent * real.summary.stddev_agents.mean),
        "{load:?}"
    );
}

#[test]
fn other_strategies_differ_and_say_where() {
    let report = run_all(&recorded(), registry(), 1);
    let rr = report
        .runs
        .iter()
        .find(|r| r.name == "round_robin")
        .unwrap();
    // Round robin from n1: a1 n1, a2 n2, a3 n3, a4 n1, a5 n2 — the same arrivals; on
    // the failure it goes on from n3: a1 n3 (real n2), a4 n2 (real n3).
    assert_eq!(rr.differed, 2, "{:?}", rr.examples);
    let ex = &rr.examples[0];
    assert_eq!((ex.agent_name.as_str(), ex.action), ("a1", Reassigned));
    assert_eq!(
        (ex.real.as_str(), ex.replayed.as_deref()),
        ("n2", Some("n3"))
    );
    let text = report::text(&report);
    for want in [
        "real",
        "round_robin",
        "least_loaded",
        "weighted",
        "2 of 7 (29%)",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
}

#[test]
fn the_same_history_and_seed_give_the_same_replay() {
    // A longer history: 40 arrivals, every third one leaving again.
    let mut history = Vec::new();
    for i in 0..40u64 {
        let node = NODES[(i % 3) as usize];
        let agent = format!("a{i}");
        history.push(row(
            2 * i + 1,
            &agent,
            Assigned,
            None,
            Some(node),
            "balanced",
            Some(Strategy::Random),
        ));
        if i % 3 == 0 {
            history.push(row(
                2 * i + 2,
                &agent,
                Unassigned,
                Some(node),
                None,
                "requested",
                None,
            ));
        }
    }
    let one = run_all(&history, registry(), 42);
    assert_eq!(one, run_all(&history, registry(), 42));
    let random = |r: &Report| {
        r.runs
            .iter()
            .find(|r| r.name == "random")
            .unwrap()
            .samples
            .clone()
    };
    let other = run_all(&history, registry(), 43);
    assert_ne!(random(&one), random(&other), "the seed drives random");
}

#[test]
fn pinned_agents_and_operator_moves_go_where_the_operator_said() {
    let history = vec![
        row(1, "p1", Assigned, None, Some("n3"), "pinned", None),
        row(2, "p2", Assigned, None, Some("n3"), "pinned", None),
        row(
            3,
            "p1",
            AssignmentAction::Migrated,
            Some("n3"),
            Some("n1"),
            "operator",
            None,
        ),
    ];
    let report = run_all(&history, registry(), 1);
    for run in &report.runs {
        assert_eq!(
            (run.moves, run.decisions, run.differed),
            (1, 0, 0),
            "{}",
            run.name
        );
        assert_eq!(run.samples.last().unwrap().spread, 1, "{}", run.name);
    }
}

#[test]
fn nodes_from_the_history_join_when_first_named_and_loads_are_not_guessed() {
    let history = vec![
        row(1, "a1", Assigned, None, Some("n1"), "pinned", None),
        row(2, "a2", Assigned, None, Some("n9"), "pinned", None),
    ];
    let report = run_all(&history, NodeSource::History, 1);
    assert_eq!(report.nodes, 2);
    assert_eq!(report.runs[0].samples[0].nodes, 1, "n9 is not named yet");
    assert!(report.runs[0].summary.stddev_load.is_none());
    // The registry does not know n9: left out, and said.
    let report = run_all(&history, registry(), 1);
    assert_eq!(report.unknown_nodes, ["n9"]);
    assert!(report::text(&report).contains("left out: 1 node(s)"));
}

#[test]
fn nothing_to_replay_is_refused_clearly() {
    let input = |history, nodes| Input {
        history,
        nodes,
        strategies: &Strategy::ALL,
        seed: 1,
    };
    assert_eq!(
        replay(input(&[], registry())),
        Err(ReplayError::EmptyHistory)
    );
    let history = recorded();
    let none = replay(input(&history, NodeSource::Registry(Vec::new()))).unwrap_err();
    assert!(none.to_string().contains("--nodes-from-history"), "{none}");
    assert_eq!(StrategyChoice::parse("all"), Ok(StrategyChoice::All));
    let bad = StrategyChoice::parse("fastest").unwrap_err();
    assert!(bad.contains("least_loaded") && bad.contains("all"), "{bad}");
}

#[test]
fn the_picture_has_a_line_and_a_legend_entry_per_run() {
    let report = run_all(&recorded(), registry(), 1);
    let svg = chart::render(&report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches(r#"class="line""#).count(), 6);
    for run in &report.runs {
        assert!(
            svg.contains(&format!(">{} (mean", run.name)),
            "{} missing",
            run.name
        );
    }
}

#[test]
fn help_explains_every_flag_with_examples() {
    use clap::CommandFactory;
    let mut cli = crate::Cli::command();
    let replay = cli.find_subcommand_mut("replay").unwrap();
    let help = replay.render_long_help().to_string();
    assert!(
        help.contains("Examples:\n  shoal replay --strategy"),
        "{help}"
    );
    for flag in [
        "--strategy",
        "--since",
        "--until",
        "--nodes-from-history",
        "--seed",
        "--svg",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    assert!(
        help.contains("round_robin") && help.contains("all"),
        "{help}"
    );
}
