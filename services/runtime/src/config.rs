//! Flags every service (and the CLI) shares. Each has an `SHOAL_…` environment variable and a doc
//! comment that becomes its `--help`.

use std::path::PathBuf;
use std::time::Duration;

use shoal_protocol::Subjects;

use crate::error::ConfigError;

/// A second NATS connection, in the system account, that reads connection
/// advisories: NATS reports a closed client connection there at once. Without it a
/// service learns of a peer's loss from its own signals alone (missed heartbeats,
/// unanswered probes).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SystemAccountArgs {
    /// Credentials file of a NATS system-account user: with it (or --sys-nats-user
    /// and --sys-nats-password) this service follows connection advisories and
    /// learns the moment a peer's connection closes (the registry: a node's; a
    /// coordinator: the leader's).
    #[arg(long, env = "SHOAL_SYS_NATS_CREDS")]
    pub sys_nats_creds: Option<PathBuf>,

    /// System-account user name (with --sys-nats-password).
    #[arg(long, env = "SHOAL_SYS_NATS_USER", requires = "sys_nats_password")]
    pub sys_nats_user: Option<String>,

    /// System-account password (with --sys-nats-user).
    #[arg(
        long,
        env = "SHOAL_SYS_NATS_PASSWORD",
        hide_env_values = true,
        requires = "sys_nats_user"
    )]
    pub sys_nats_password: Option<String>,
}

impl SystemAccountArgs {
    /// Whether system-account credentials were given.
    pub fn is_set(&self) -> bool {
        self.sys_nats_creds.is_some() || self.sys_nats_user.is_some()
    }

    /// `nats` with this account's credentials in place of its own.
    pub fn nats_args(&self, nats: &NatsArgs) -> NatsArgs {
        let mut sys = nats.clone();
        sys.nats_creds = self.sys_nats_creds.clone();
        sys.nats_user = self.sys_nats_user.clone();
        sys.nats_password = self.sys_nats_password.clone();
        sys.nats_token = None;
        sys
    }
}

/// How to reach NATS: shared by the services and the `shoal` CLI (`global` so the
/// CLI takes them before or after its subcommand).
#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS server URL; several may be given comma-separated (a cluster).
    #[arg(
        long,
        global = true,
        env = "SHOAL_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// NATS credentials file (JWT and nkey seed, as made by `nsc`).
    #[arg(long, global = true, env = "SHOAL_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// NATS user name (with --nats-password).
    #[arg(long, global = true, env = "SHOAL_NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS password (with --nats-user).
    #[arg(
        long,
        global = true,
        env = "SHOAL_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,

    /// NATS authentication token.
    #[arg(long, global = true, env = "SHOAL_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// CA certificate (PEM) to verify the NATS server's TLS certificate; turns TLS on.
    #[arg(long, global = true, env = "SHOAL_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS, with --nats-tls-key.
    #[arg(
        long,
        global = true,
        env = "SHOAL_NATS_TLS_CERT",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS, with --nats-tls-cert.
    #[arg(
        long,
        global = true,
        env = "SHOAL_NATS_TLS_KEY",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,

    /// How often the client PINGs a server it has heard nothing from. Two PINGs
    /// unanswered and the connection counts as dead: the client reconnects (to
    /// another server of a cluster) within about three intervals instead of
    /// waiting for TCP to notice. Raise it for very large fleets of idle nodes.
    #[arg(long, global = true, env = "SHOAL_NATS_PING_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub nats_ping_interval: Duration,

    /// How long connecting to one server may take before the client tries the next.
    /// A server that is stopped or cut off accepts the TCP connection and then says
    /// nothing; without a bound the client would wait on it instead of moving on.
    #[arg(long, global = true, env = "SHOAL_NATS_CONNECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub nats_connect_timeout: Duration,

    /// First token(s) of every Shoal subject, e.g. `shoal` → `shoal.registry.stats`.
    #[arg(long, global = true, env = "SHOAL_PREFIX", default_value = shoal_protocol::subjects::DEFAULT_PREFIX)]
    pub prefix: String,
}

impl NatsArgs {
    pub fn subjects(&self) -> Result<Subjects, ConfigError> {
        Subjects::new(&self.prefix).map_err(|source| ConfigError::Refused {
            what: "--prefix",
            source,
        })
    }
}

/// How the services that create JetStream buckets and streams make them.
#[derive(clap::Args, Debug, Clone)]
pub struct JetStreamArgs {
    /// Replicas of the KV buckets and streams this service creates when they are
    /// missing, 1 to 5 (3 on a 3-server NATS cluster). Existing ones are used as
    /// they are.
    #[arg(
        long,
        env = "SHOAL_KV_REPLICAS",
        default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5)
    )]
    pub kv_replicas: usize,
}

/// Flags every service shares.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonConfig {
    /// A settings file (TOML) with the same keys as these flags (`nats-url = "…"`);
    /// flags and environment variables win over it.
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Name of this instance among replicas of the same service (default: hostname-pid).
    /// Each instance also answers `<prefix>.<service>.instance.<instance_id>.<endpoint>`.
    #[arg(long, env = "SHOAL_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Log filter: a level (`info`, `debug`) or a tracing directive list
    /// (`shoal_registry=debug,async_nats=warn`). RUST_LOG, when set, wins.
    #[arg(long, env = "SHOAL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log JSON lines instead of human-readable text.
    #[arg(long, env = "SHOAL_LOG_JSON")]
    pub log_json: bool,

    /// Also serve this process's Prometheus metrics over HTTP at
    /// `http://ADDR/metrics` (e.g. `127.0.0.1:9464`; port 0 picks a free one).
    /// Registries, balancers and coordinators serve them on NATS at
    /// `<prefix>.<service>.instance.<instance_id>.metrics` in any case; an announcer
    /// (whose NATS user may be confined to its node's subjects) only here.
    #[arg(long, env = "SHOAL_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// How long to wait for in-flight work after SIGTERM / ctrl-c before giving up.
    #[arg(long, env = "SHOAL_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl CommonConfig {
    pub fn subjects(&self) -> Result<Subjects, ConfigError> {
        self.nats.subjects()
    }

    /// The configured instance id, or `<hostname>-<pid>`.
    pub fn instance_id(&self) -> Result<String, ConfigError> {
        let id = match &self.instance_id {
            Some(id) => id.clone(),
            None => format!("{}-{}", crate::hostname(), std::process::id()),
        };
        shoal_protocol::validate::id("instance_id", &id).map_err(|source| {
            ConfigError::Refused {
                what: "--instance-id",
                source,
            }
        })?;
        Ok(id)
    }
}
