//! `shoal replay`: what if the balancer had used another strategy? Reads the
//! assignment history (paged, oldest rows last) and the nodes, replays every change
//! under the chosen strategies ([`engine`]), and prints the spread, moves and
//! differing decisions of each beside what really happened; `--svg` draws the
//! spread over time ([`chart`]).

mod chart;
mod engine;
mod report;
mod run;
mod spread;
mod world;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use shoal_protocol::{
    ClientError, HistoryEntry, HistoryRequest, ListNodesRequest, MAX_HISTORY_LIMIT, ShoalClient,
    Strategy,
};

pub use engine::DEFAULT_SEED;
use engine::{Input, ReplayError};
use world::NodeSource;

/// `--strategy`: one strategy, or `all` five.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StrategyChoice {
    All,
    One(Strategy),
}

impl StrategyChoice {
    pub fn parse(s: &str) -> Result<StrategyChoice, String> {
        if s == "all" {
            return Ok(StrategyChoice::All);
        }
        Strategy::parse(s).map(StrategyChoice::One).ok_or_else(|| {
            format!(
                "{s:?} is not a strategy: use one of {}, or all",
                Strategy::ALL.map(Strategy::as_str).join(", ")
            )
        })
    }

    fn strategies(self) -> Vec<Strategy> {
        match self {
            StrategyChoice::All => Strategy::ALL.to_vec(),
            StrategyChoice::One(s) => vec![s],
        }
    }
}

/// The flags of `shoal replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The strategy to replay the history under: round_robin, least_loaded,
    /// least_agents, random, weighted, or all (every one, side by side).
    #[arg(long, value_parser = StrategyChoice::parse)]
    pub strategy: StrategyChoice,
    /// Only changes at or after this time (RFC 3339, e.g. 2026-02-10T08:00:00Z) or
    /// this long ago (e.g. 2h). Default: the whole history.
    #[arg(long, value_parser = crate::args::parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only changes before this time (RFC 3339) or this long ago (e.g. 10m).
    /// Default: up to now.
    #[arg(long, value_parser = crate::args::parse_since)]
    pub until: Option<DateTime<Utc>>,
    /// Replay on the nodes the history names, each from its first appearance (with
    /// room for 1,000 agents each), instead of the registry's nodes now.
    #[arg(long)]
    pub nodes_from_history: bool,
    /// Seed of the random and weighted strategies: the same history and seed give
    /// the same replay.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Also draw the spread over time, real and replayed, into this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// Why `shoal replay` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("--since ({since}) is not before --until ({until}): nothing lies between")]
    Window {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    #[error(
        "the history has no changes {window}: nothing to replay (widen --since/--until, or make some assignments)"
    )]
    EmptyHistory { window: String },
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("writing {path}: {source}")]
    Svg {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub async fn run(client: &ShoalClient, args: &ReplayArgs, as_json: bool) -> Result<(), Error> {
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return Err(Error::Window { since, until });
    }
    let history = read_history(client, args.since, args.until).await?;
    if history.is_empty() {
        return Err(Error::EmptyHistory {
            window: window(args.since, args.until),
        });
    }
    let nodes = if args.nodes_from_history {
        NodeSource::History
    } else {
        NodeSource::Registry(client.list_all_nodes(&ListNodesRequest::default()).await?)
    };
    let strategies = args.strategy.strategies();
    let report = engine::replay(Input {
        history: &history,
        nodes,
        strategies: &strategies,
        seed: args.seed,
    })?;
    if let Some(path) = &args.svg {
        std::fs::write(path, chart::render(&report)).map_err(|source| Error::Svg {
            path: path.clone(),
            source,
        })?;
    }
    if as_json {
        outln!("{}", crate::output::json(&report));
    } else {
        outln!("{}", report::text(&report));
    }
    Ok(())
}

/// The rows between `since` and `until`, oldest first, a page of up to 10,000 at a
/// time; on stderr, how far it has read while there is more than one page.
async fn read_history(
    client: &ShoalClient,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let terminal = std::io::stderr().is_terminal();
    let mut rows: Vec<HistoryEntry> = Vec::new();
    let mut before = None;
    loop {
        let page = client
            .history(&HistoryRequest {
                since,
                until,
                limit: Some(MAX_HISTORY_LIMIT),
                before,
                ..HistoryRequest::default()
            })
            .await?;
        rows.extend(page.history);
        let Some(next) = page.next else { break };
        before = Some(next);
        let back_to = rows.last().map(|r| crate::output::time(r.at));
        let line = format!(
            "reading the history: {} rows so far, back to {}",
            rows.len(),
            back_to.unwrap_or_default()
        );
        if terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if terminal && before.is_some() {
        eprintln!();
    }
    rows.reverse();
    Ok(rows)
}

fn window(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> String {
    let t = crate::output::time;
    match (since, until) {
        (None, None) => "at all".to_string(),
        (Some(s), None) => format!("since {}", t(s)),
        (None, Some(u)) => format!("before {}", t(u)),
        (Some(s), Some(u)) => format!("from {} to {}", t(s), t(u)),
    }
}
