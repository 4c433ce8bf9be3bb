//! `shoal`: operate a Shoal cluster over NATS.
//!
//! Operator commands (`nodes`, `assign`, `drain`, …) are NATS requests through the
//! shared client helper; output is a table for people or JSON with `--json`; every
//! error says what to do next.

/// `println!` for the command's output: a closed pipe ends the command quietly
/// ([`output::write`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

mod args;
mod control;
mod hints;
mod local;
mod manual;
mod ops;
mod output;
mod rebalance;
mod replay;
mod up;
mod watch;

use std::time::Duration;

use clap::CommandFactory;
use shoal_protocol::{ClientError, ShoalClient};
use shoal_runtime::NatsArgs;

pub use args::{Cli, Command, StrategyAction};
pub use hints::explain;

impl Cli {
    /// Parses the command line, noting whether a NATS URL was given (flag or
    /// environment, before or after the subcommand) or left at its default.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.nats_url_given = given(&matches, "nats_url");
        cli.dir_given = given(&matches, "dir");
        if !cli.dir_given
            && let Ok(here) = std::env::current_dir()
        {
            cli.dir = local::find_dir(&here, &cli.dir);
        }
        cli
    }
}

fn given(matches: &clap::ArgMatches, id: &str) -> bool {
    use clap::parser::ValueSource;
    let here = matches!(
        matches
            .try_get_raw(id)
            .ok()
            .flatten()
            .and(matches.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    here || matches.subcommand().is_some_and(|(_, sub)| given(sub, id))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let paths = local::Paths::new(&cli.dir);
    match &cli.command {
        Command::Up {
            nodes,
            coordinators,
            database_url,
            nats_port,
            monitor_port,
            pg_port,
            http_port,
        } => {
            return up::up(up::UpArgs {
                dir: cli.dir.clone(),
                nodes: *nodes,
                coordinators: *coordinators,
                nats_url: cli.nats_url_given.then(|| cli.nats.nats_url.clone()),
                database_url: database_url.clone(),
                nats_port: *nats_port,
                monitor_port: *monitor_port,
                pg_port: *pg_port,
                http_port: *http_port,
            })
            .await;
        }
        Command::Completions { shell } => {
            // Into a buffer first: the generator panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "shoal", &mut script);
            output::write(&script);
            return Ok(());
        }
        Command::Man { dir } => return manual::write(dir),
        Command::Status => return control::status(&paths, &cli.nats, cli.json).await,
        Command::Down => return control::down(&paths).await,
        Command::Stop { instance } => {
            return control::instance(&paths, up::Action::Stop, instance, cli.json).await;
        }
        Command::Start { instance } => {
            return control::instance(&paths, up::Action::Start, instance, cli.json).await;
        }
        Command::Restart { instance } => {
            return control::instance(&paths, up::Action::Restart, instance, cli.json).await;
        }
        Command::Logs { service, lines } => {
            return control::logs(&paths, service.as_deref(), *lines);
        }
        _ => {}
    }
    let subjects = cli.nats.subjects()?;
    let nats = connect(&cli.nats, cli.timeout).await?;
    let client = ShoalClient::new(nats.clone(), subjects).with_timeout(cli.timeout);
    if let Command::Watch { refreshes } = &cli.command {
        return watch::watch(&client, *refreshes, cli.json).await;
    }
    if let Command::Replay(args) = &cli.command {
        return match replay::run(&client, args, cli.json).await {
            Err(replay::Error::Client(e)) => Err(failure(&cli.command, e)),
            other => Ok(other?),
        };
    }
    let result = ops::run(&client, &cli.command, cli.json).await;
    // Flush anything published before exiting.
    let _ = nats.flush().await;
    result.map_err(|e| failure(&cli.command, e))
}

/// A request of `command` that failed, with what to try next.
fn failure(command: &Command, e: ClientError) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code: e.code().to_string(),
        message: explain(command, &e),
        details: match &e {
            ClientError::Service(service) => service.details.clone(),
            _ => None,
        },
    })
}

/// A command that failed, as `--json` prints it on stderr (`{"error": …}`): the
/// service's error code (`not_found`, `conflict`, … or `timeout`,
/// `no_responders`), the message with what to try next, and the service's details.
#[derive(Clone, Debug, serde::Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Failure {
    /// Any error as a failure: a command's own, or `error` with its message.
    pub fn of(e: &anyhow::Error) -> Failure {
        e.downcast_ref::<Failure>()
            .cloned()
            .unwrap_or_else(|| Failure {
                code: "error".to_string(),
                message: format!("{e:#}"),
                details: None,
            })
    }
}

async fn connect(args: &NatsArgs, timeout: Duration) -> anyhow::Result<async_nats::Client> {
    let (opts, urls) = shoal_runtime::connect_options(args, "shoal-cli").await?;
    opts.connection_timeout(timeout).connect(urls).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach NATS at {} ({e}) — start a local control plane with `shoal up`, or pass --nats-url",
            args.nats_url
        )
    })
}
