//! What every Shoal service binary shares, so each `main.rs` stays a few lines:
//! common flags ([`CommonConfig`]), tracing, the NATS connection, shutdown on ctrl-c
//! or SIGTERM, registration as a NATS micro service, and the request loop.

pub mod advisory;
mod config;
pub mod error;
pub mod jetstream;
pub mod kv;
pub mod metrics;
mod rate_log;
pub mod reach;
pub mod retry;
mod serve;
pub mod settings;

use std::collections::HashMap;
use std::future::Future;

use async_nats::service::{Service, ServiceExt};
use async_nats::{Client, ConnectOptions, Event};
use shoal_protocol::ServiceKind;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

pub use config::{CommonConfig, JetStreamArgs, NatsArgs, SystemAccountArgs};
pub use error::{ConfigError, ConnectError, JetStreamContext, JetStreamError, NatsError};
pub use rate_log::RateLog;
pub use serve::{DrainableEndpoints, EndpointRequests, Endpoints, add_endpoint, serve};

/// The version every service reports in `$SRV.INFO`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Sets up logging: human text by default, JSON lines with `--log-json`. RUST_LOG,
/// when set and valid, wins over `--log-level`, which must parse.
pub fn init_tracing(cfg: &CommonConfig) -> Result<(), ConfigError> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => log_filter(&cfg.log_level)?,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests running a service in-process) is harmless: keep the first.
    let _ = if cfg.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// The filter `--log-level` asks for.
fn log_filter(level: &str) -> Result<EnvFilter, ConfigError> {
    EnvFilter::try_new(level)
        .map(|f| quiet_client(f, level))
        .map_err(|source| ConfigError::LogLevel {
            level: level.to_string(),
            source,
        })
}

/// async-nats logs every event it reports at info, a line for each message a slow
/// subscription drops among them; [`connect`] logs those events itself, at a bounded
/// rate. So unless `level` asks for debug, or names the client, the client speaks at
/// warn.
fn quiet_client(filter: EnvFilter, level: &str) -> EnvFilter {
    if level.contains("async_nats") || level.contains("debug") || level.contains("trace") {
        return filter;
    }
    filter.add_directive("async_nats=warn".parse().expect("a constant directive"))
}

/// The machine's host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Connection options and server list from the flags: credentials, user/password,
/// token, TLS. Shared by the services and the CLI.
pub async fn connect_options(
    cfg: &NatsArgs,
    connection_name: &str,
) -> Result<(ConnectOptions, Vec<async_nats::ServerAddr>), ConfigError> {
    let mut opts = match &cfg.nats_creds {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| ConfigError::Credentials {
                path: path.clone(),
                source,
            })?,
        None => ConnectOptions::new(),
    };
    match (&cfg.nats_user, &cfg.nats_password) {
        (Some(user), Some(password)) => {
            opts = opts.user_and_password(user.clone(), password.clone())
        }
        (None, None) => {}
        _ => {
            return Err(ConfigError::invalid(
                "--nats-user and --nats-password go together: give both or neither",
            ));
        }
    }
    if let Some(token) = &cfg.nats_token {
        opts = opts.token(token.clone());
    }
    if let Some(ca) = &cfg.nats_tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.nats_tls_cert, &cfg.nats_tls_key) {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = cfg
        .nats_url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|source| ConfigError::NatsUrl {
            urls: cfg.nats_url.clone(),
            source,
        })?;
    if cfg.nats_ping_interval.is_zero() || cfg.nats_connect_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "--nats-ping-interval and --nats-connect-timeout must be above zero",
        ));
    }
    Ok((
        opts.name(connection_name)
            .ping_interval(cfg.nats_ping_interval)
            .connection_timeout(cfg.nats_connect_timeout),
        urls,
    ))
}

/// Returns once the server has processed everything this client sent before the
/// call, its subscriptions included: `Client::flush` only empties the socket's
/// buffer, so another client's request may still find no responders. A request on
/// `subject` (one this client may publish to) makes the round trip: its answer, or
/// its *no responders*, comes back after what was sent before it. False if nothing
/// came back within `timeout`.
pub async fn round_trip(client: &Client, subject: String, timeout: std::time::Duration) -> bool {
    let request = async_nats::Request::new().timeout(Some(timeout));
    match client.send_request(subject, request).await {
        Ok(_) => true,
        Err(e) => e.kind() == async_nats::RequestErrorKind::NoResponders,
    }
}

/// Connects a service to NATS. The client reconnects forever with backoff, and
/// retries the first connection too, so a service started before its NATS server
/// waits instead of exiting.
pub async fn connect(cfg: &NatsArgs, connection_name: &str) -> Result<Client, ConnectError> {
    let (opts, urls) = connect_options(cfg, connection_name).await?;
    let client = opts
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Connected => {
                    CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    info!("connected to nats")
                }
                Event::Disconnected => warn!("disconnected from nats, reconnecting"),
                Event::ClientError(e) => warn!(error = %e, "nats client error"),
                Event::SlowConsumer(sid) => slow_consumer(sid),
                other => info!(event = %other, "nats event"),
            }
        })
        .connect(urls)
        .await
        .map_err(ConnectError::Nats)?;
    Ok(client)
}

/// Connections the NATS clients of this process made (first and re-made) since it
/// started. A rise past the first means a reconnection, even one so quick that no
/// poll of the connection state saw the client disconnected, and even where the new
/// server numbers its clients as the old one did.
pub fn connections() -> u64 {
    CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed)
}

static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Messages this process's NATS client dropped because a subscription's queue was
/// full (a slow consumer), since it started; `shoal_<service>_nats_slow_consumer_drops`.
pub fn slow_consumer_drops() -> u64 {
    SLOW_CONSUMER_DROPS.load(std::sync::atomic::Ordering::Relaxed)
}

static SLOW_CONSUMER_DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SLOW_CONSUMER_LOG: RateLog = RateLog::new(std::time::Duration::from_secs(5));

/// The client reports each message it drops: counted, and logged at a bounded rate.
fn slow_consumer(subscription: u64) {
    let total = SLOW_CONSUMER_DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if let Some(suppressed) = SLOW_CONSUMER_LOG.admit() {
        warn!(
            subscription,
            suppressed, total, "nats messages dropped: a subscription is not read fast enough"
        );
    }
}

/// A token cancelled on ctrl-c or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops this process");
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "shutting down"),
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
        }
        cancel.cancel();
    });
    token
}

/// Registers this process as a NATS micro service (`$SRV.PING/INFO/STATS`), with its
/// instance id in the metadata so replicas can be told apart.
pub async fn start_service(
    client: &Client,
    kind: ServiceKind,
    instance_id: &str,
) -> Result<Service, NatsError> {
    client
        .service_builder()
        .description(kind.description())
        .metadata(HashMap::from([(
            shoal_protocol::subjects::INSTANCE_ID_METADATA.to_string(),
            instance_id.to_string(),
        )]))
        .start(kind.service_name(), VERSION)
        .await
        .map_err(|source| NatsError::Service {
            service: kind.service_name(),
            source,
        })
}

/// Stops the micro service (its endpoints stop answering).
pub async fn stop_service(service: Service) -> Result<(), NatsError> {
    service.stop().await.map_err(NatsError::StopService)
}

/// The body of every service's `main`: tracing, connection, `run` until a signal,
/// then a bounded wait for `run` to finish and a NATS drain so nothing published is
/// dropped. Exits with `run`'s result.
pub async fn main<F, Fut, E>(
    cfg: &CommonConfig,
    kind: ServiceKind,
    connection_name: &str,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Client, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    init_tracing(cfg)?;
    let client = connect(&cfg.nats, connection_name).await?;
    let shutdown = shutdown_on_signals();
    info!(service = kind.service_name(), version = VERSION, nats_url = %cfg.nats.nats_url, "starting");
    let task = run(client.clone(), shutdown.clone());
    tokio::pin!(task);
    let result = tokio::select! {
        result = &mut task => result.map_err(Into::into),
        _ = shutdown.cancelled() => match tokio::time::timeout(cfg.shutdown_grace, &mut task).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(anyhow::anyhow!("did not stop within the {:?} shutdown grace period", cfg.shutdown_grace)),
        },
    };
    match tokio::time::timeout(cfg.shutdown_grace, client.drain()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "nats drain failed"),
        Err(_) => warn!("nats drain did not finish within the grace period"),
    }
    if result.is_ok() {
        info!(service = kind.service_name(), "stopped");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_speaks_at_warn_unless_debug_or_named() {
        let quiet = |level: &str| {
            quiet_client(EnvFilter::try_new(level).unwrap(), level)
                .to_string()
                .contains("async_nats=warn")
        };
        assert!(quiet("info"));
        assert!(quiet("warn"));
        assert!(quiet("shoal_registry=info,info"));
        assert!(!quiet("debug"));
        assert!(!quiet("info,async_nats=info"));
    }

    #[test]
    fn a_log_level_that_does_not_parse_is_refused_by_name() {
        let e = log_filter("info,shoal=[").unwrap_err();
        assert!(
            e.to_string().contains("--log-level \"info,shoal=[\""),
            "{e}"
        );
        assert!(log_filter("shoal_registry=debug,warn").is_ok());
    }
}
