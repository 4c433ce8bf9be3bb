//! shoal-loadtest: measures a Shoal control plane and proves what it measured.

mod args;
mod baseline;
mod cost;
mod measure;
mod report;
mod scenarios;
mod stack;
mod svg;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use args::{Args, Scenario};
use report::Report;

/// Exit status of a run that passed its verification but missed a goal, with
/// `--check-goals`.
const GOALS_MISSED: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber_init();
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build, several times slower than a release build: its figures are not the project's. Build with `cargo build --release -p shoal-loadtest` and run target/release/shoal-loadtest"
        );
    }
    let name = format!("{:?}", args.scenario).to_lowercase();
    let mut report = Report::new(&name);
    // Ctrl-C or SIGTERM ends the run by dropping it, and with it the private
    // stack: every process it started is stopped, every directory removed.
    let interrupted = shoal_runtime::shutdown_on_signals();
    let outcome = tokio::select! {
        outcome = run(&args, &mut report) => outcome,
        _ = interrupted.cancelled() => {
            eprintln!("interrupted: stopping what this run started…");
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    println!("{}", report.render());
    if let Err(e) = write_outputs(&args, &report, outcome.is_err()) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    match outcome {
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Ok(()) if !report.passed() => {
            eprintln!("error: verification failed");
            ExitCode::FAILURE
        }
        Ok(()) if args.check_goals && !report.missed_goals().is_empty() => {
            eprintln!(
                "error: goals missed (--check-goals): {}",
                report.missed_goals().join(", ")
            );
            ExitCode::from(GOALS_MISSED)
        }
        Ok(()) => ExitCode::SUCCESS,
    }
}

async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Assign => scenarios::assign::run(args, report).await,
        Scenario::Burst => scenarios::burst::run(args, report).await,
        Scenario::Select => scenarios::select::run(args, report).await,
        Scenario::Discovery => scenarios::discovery::run(args, report).await,
        Scenario::Heartbeats => scenarios::heartbeats::run(args, report).await,
        Scenario::Failover => scenarios::failover::run(args, report).await,
        Scenario::Compaction => scenarios::compaction::run(args, report).await,
        Scenario::Partition => scenarios::partition::run(args, report).await,
        Scenario::Join => scenarios::join::run(args, report).await,
    }
}

/// Writes the JSON report and the SVG; no SVG from a run that failed before it
/// measured anything.
fn write_outputs(args: &Args, report: &Report, failed: bool) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg
        && failed
        && report.measurements.is_empty()
    {
        eprintln!(
            "{} not written: the run failed before it measured anything",
            path.display()
        );
    } else if let Some(path) = &args.svg {
        std::fs::write(
            path,
            svg::render(
                &format!("shoal-loadtest {}", report.scenario),
                &report.measurements,
            ),
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Quiet by default: the report is the output. RUST_LOG turns logs on.
fn tracing_subscriber_init() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}
