//! The replay as people read it: a line saying what was replayed, one table row per
//! run (the real one first), and a few decisions each strategy would have made
//! differently.

use crate::output::{Table, time};

use super::engine::{Report, RunReport};
use super::spread::Figure;

pub fn text(report: &Report) -> String {
    let mut out = vec![heading(report)];
    if !report.unknown_nodes.is_empty() {
        out.push(format!(
            "left out: {} node(s) the history names but the registry does not know ({}); --nodes-from-history takes them",
            report.unknown_nodes.len(),
            list(&report.unknown_nodes)
        ));
    }
    out.push(String::new());
    out.push(table(report));
    let examples = examples(&report.runs);
    if !examples.is_empty() {
        out.push(String::new());
        out.push("Decisions that would have differed (the first of each strategy):".to_string());
        out.extend(examples);
    }
    out.push(String::new());
    out.push(legend(report));
    out.join("\n")
}

fn heading(r: &Report) -> String {
    let used: Vec<String> = r
        .strategies_used
        .iter()
        .map(|(s, n)| format!("{s} ({n})"))
        .collect();
    let used = if used.is_empty() {
        "no balanced decisions".to_string()
    } else {
        format!("the balancer used {}", used.join(", "))
    };
    format!(
        "replayed {} change(s) from {} to {} on {} node(s) from the {}; {used}; seed {}",
        r.rows,
        time(r.from),
        time(r.to),
        r.nodes,
        r.node_source,
        r.seed
    )
}

fn table(r: &Report) -> String {
    let mut t = Table::new(vec![
        "RUN",
        "DIFFERED",
        "MOVES",
        "SPREAD mean/max/last",
        "STDDEV AGENTS mean/last",
        "STDDEV LOAD mean/last",
        "WAITING",
    ]);
    for run in &r.runs {
        t.row(vec![
            run.name.clone(),
            differed(run),
            run.moves.to_string(),
            format!(
                "{:.2} / {:.0} / {:.0}",
                run.summary.spread.mean, run.summary.spread.max, run.summary.spread.last
            ),
            mean_last(&run.summary.stddev_agents, 2),
            run.summary
                .stddev_load
                .map_or_else(|| "-".to_string(), |f| mean_last(&f, 3)),
            run.waiting.to_string(),
        ]);
    }
    t.render()
}

fn differed(run: &RunReport) -> String {
    if run.name == "real" {
        return format!("- of {}", run.decisions);
    }
    let share = if run.decisions == 0 {
        0.0
    } else {
        100.0 * run.differed as f64 / run.decisions as f64
    };
    format!("{} of {} ({share:.0}%)", run.differed, run.decisions)
}

fn mean_last(f: &Figure, decimals: usize) -> String {
    format!("{:.decimals$} / {:.decimals$}", f.mean, f.last)
}

fn examples(runs: &[RunReport]) -> Vec<String> {
    let mut t = Table::new(vec![
        "  STRATEGY",
        "AT",
        "AGENT",
        "ACTION",
        "REAL",
        "REPLAYED",
    ]);
    let mut any = false;
    for run in runs {
        for d in &run.examples {
            any = true;
            t.row(vec![
                format!("  {}", run.name),
                time(d.at),
                d.agent_name.clone(),
                d.action.as_str().to_string(),
                d.real.clone(),
                d.replayed
                    .clone()
                    .unwrap_or_else(|| "(waiting)".to_string()),
            ]);
        }
    }
    if any { vec![t.render()] } else { Vec::new() }
}

fn legend(r: &Report) -> String {
    let load = if r.node_source == "history" {
        "; STDDEV LOAD needs the nodes' capacities (the registry's nodes)"
    } else {
        ", LOAD the balancer's estimate"
    };
    format!(
        "DIFFERED: the balancer's decisions put elsewhere. SPREAD: max − min agents per node that could take work, over the history's changes; STDDEV of agents per node{load}."
    )
}

fn list(ids: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut shown: Vec<&str> = ids.iter().take(SHOWN).map(String::as_str).collect();
    if ids.len() > SHOWN {
        shown.push("…");
    }
    shown.join(", ")
}
