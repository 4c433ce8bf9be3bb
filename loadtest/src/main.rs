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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber_init();
    let name = format!("{:?}", args.scenario).to_lowercase();
    let mut report = Report::new(&name);
    let outcome = match args.scenario {
        Scenario::Assign => scenarios::assign::run(&args, &mut report).await,
        Scenario::Burst => scenarios::burst::run(&args, &mut report).await,
        Scenario::Select => scenarios::select::run(&args, &mut report).await,
        Scenario::Discovery => scenarios::discovery::run(&args, &mut report).await,
        Scenario::Heartbeats => scenarios::heartbeats::run(&args, &mut report).await,
        Scenario::Failover => scenarios::failover::run(&args, &mut report).await,
        Scenario::Compaction => scenarios::compaction::run(&args, &mut report).await,
    };
    println!("{}", report.render());
    if let Err(e) = write_outputs(&args, &report) {
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
        Ok(()) => ExitCode::SUCCESS,
    }
}

fn write_outputs(args: &Args, report: &Report) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
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
