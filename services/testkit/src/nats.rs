//! Real nats-server processes with JetStream: one server, or a routed cluster.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::http;
use crate::nats_config::{NatsOptions, Ports, config, connect_ip};
use crate::ports::free_ports;
use crate::process::{CommandSpec, Proc, log_file, with_log};
use crate::wait::try_wait_for;

const READY_DEADLINE: Duration = Duration::from_secs(20);
const STOP_DEADLINE: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;
const PANIC_TAIL_LINES: usize = 50;
const ERROR_TAIL_LINES: usize = 30;
const MISSING: &str = "nats-server not found: run scripts/deps.sh (or set SHOAL_NATS_SERVER)";

/// The checkout's root, where `scripts/deps.sh` puts `.shoal/tools/`.
pub(crate) fn workspace_root() -> PathBuf {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// The nats-server to run: `$SHOAL_NATS_SERVER`, else the one `scripts/deps.sh`
/// installs in `.shoal/tools/`.
pub fn nats_server_binary() -> Result<PathBuf> {
    nats_server_binary_from(std::env::var_os("SHOAL_NATS_SERVER"), &workspace_root())
}

/// [`nats_server_binary`] with its inputs passed in, so it is testable without
/// changing the process environment.
pub fn nats_server_binary_from(env: Option<OsString>, root: &Path) -> Result<PathBuf> {
    // An explicit path that is wrong is an error, not a reason to quietly run
    // some other nats-server.
    let path = match env.filter(|value| !value.is_empty()) {
        Some(value) => PathBuf::from(value),
        None => root.join(".shoal/tools/nats-server"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(anyhow!("{MISSING}; looked for {}", path.display()))
    }
}

/// One nats-server process with JetStream on, its config, log and file store in
/// its own temporary directory. Dropping it kills the server (paused or not) and
/// deletes the directory.
pub struct NatsServer {
    // Declared before `dir` so the process dies before its directory goes.
    proc: Proc,
    server_name: String,
    ports: Ports,
    /// Where the client port listens (see [`NatsOptions::listen_host`]).
    listen_host: IpAddr,
    store_dir: PathBuf,
    /// Clustered servers only wait for their own JetStream on a restart: full
    /// health needs a meta quorum that may be down on purpose.
    standalone: bool,
    dir: TempDir,
}

impl NatsServer {
    /// A single server with default options.
    pub async fn start() -> Result<NatsServer> {
        NatsServer::start_with(NatsOptions::default()).await
    }

    pub async fn start_with(opts: NatsOptions) -> Result<NatsServer> {
        let binary = nats_server_binary()?;
        let mut attempt = 1;
        loop {
            let [client, monitor] = free_ports(2)[..] else {
                unreachable!("free_ports(2) returns two ports")
            };
            let ports = Ports {
                client,
                monitor,
                cluster: None,
            };
            let mut server = NatsServer::prepare(&binary, &opts, ports, &[])?;
            server.proc.start()?;
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) if attempt < START_ATTEMPTS && server.lost_a_port_race() => {
                    tracing::warn!(error = %e, attempt, "nats-server lost a port race, retrying with new ports");
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    /// Writes the config and sets up the process without starting it.
    fn prepare(
        binary: &Path,
        opts: &NatsOptions,
        ports: Ports,
        routes: &[u16],
    ) -> Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-nats-")
            .tempdir()
            .context("creating a temporary directory for nats-server")?;
        let store_dir = dir.path().join("jetstream");
        std::fs::create_dir(&store_dir)?;
        let name = opts
            .server_name
            .clone()
            .unwrap_or_else(|| format!("shoal-{}", ports.client));
        let config_path = dir.path().join("nats-server.conf");
        std::fs::write(&config_path, config(&name, ports, &store_dir, routes, opts))
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = log_file(dir.path(), "nats-server")?;
        let mut spec = CommandSpec::new(binary);
        spec.arg("-c").arg(&config_path);
        spec.cwd = Some(dir.path().to_path_buf());
        let proc = Proc::new(
            format!("nats-server {name}"),
            spec,
            log_path,
            PANIC_TAIL_LINES,
        );
        Ok(NatsServer {
            proc,
            server_name: name,
            ports,
            listen_host: opts.listen_ip(),
            store_dir,
            standalone: ports.cluster.is_none(),
            dir,
        })
    }

    /// `nats://127.0.0.1:PORT` (or `nats://HOST:PORT` for a server listening
    /// on one other address only): the URL for clients on this host. A process
    /// in a [`crate::NetNs`] uses [`crate::NetNs::nats_url`] instead.
    pub fn url(&self) -> String {
        let addr = SocketAddr::new(connect_ip(self.listen_host), self.ports.client);
        format!("nats://{addr}")
    }

    /// The address the client port listens on: 127.0.0.1 unless
    /// [`NatsOptions::listen_host`] said otherwise.
    pub fn listen_host(&self) -> IpAddr {
        self.listen_host
    }

    pub fn port(&self) -> u16 {
        self.ports.client
    }

    pub fn monitor_port(&self) -> u16 {
        self.ports.monitor
    }

    /// The route port, for a clustered server.
    pub fn cluster_port(&self) -> Option<u16> {
        self.ports.cluster
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.conf")
    }

    /// The pid while the server process exists (it may be paused).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The configured `server_name` (what JetStream reports as leaders and peers).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// A plain connection to this server.
    pub async fn client(&self) -> Result<async_nats::Client> {
        async_nats::connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// SIGTERM and wait for the exit (SIGKILL after 10 s); nothing to do if it
    /// is not running.
    pub async fn stop(&mut self) -> Result<()> {
        self.proc.stop(Signal::SIGTERM, STOP_DEADLINE).await
    }

    /// Stops the server if it runs, then starts it again on the same ports with
    /// the same config and store, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Starts the server after a stop or kill, on the same ports and store, and
    /// waits until it is ready.
    pub async fn start_again(&mut self) -> Result<()> {
        self.proc.start()?;
        self.wait_ready().await
    }

    /// SIGKILL and reap (a crash); nothing to do if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing. Returns once
    /// the process has actually stopped.
    pub fn pause(&self) -> Result<()> {
        self.proc.pause()
    }

    pub fn resume(&self) -> Result<()> {
        self.proc.signal(Signal::SIGCONT)
    }

    /// The server's log so far (all its runs).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    fn lost_a_port_race(&mut self) -> bool {
        !self.proc.is_running() && self.log().to_lowercase().contains("address already in use")
    }

    /// Ready when JetStream is up (and, for a standalone server, fully healthy:
    /// streams recovered) and the monitor port is really this server's.
    async fn wait_ready(&mut self) -> Result<()> {
        let ports = self.ports;
        let full_health = self.standalone;
        let what = format!("{} to be ready", self.proc.name());
        let proc = &mut self.proc;
        let result = try_wait_for(&what, READY_DEADLINE, || {
            let exited = (!proc.is_running()).then(|| proc.describe_exit());
            async move {
                if let Some(exit) = exited {
                    bail!("{exit} while starting");
                }
                Ok(is_ready(ports, full_health).await.then_some(()))
            }
        })
        .await;
        result.map_err(|e| self.with_log_tail(e))
    }

    fn with_log_tail(&self, e: anyhow::Error) -> anyhow::Error {
        let header = format!(
            "last lines of the log of {} ({})",
            self.proc.name(),
            self.proc.log_path().display()
        );
        with_log(e, &header, &self.proc.log_tail(ERROR_TAIL_LINES))
    }
}

async fn healthz_ok(monitor: u16, path: &str) -> bool {
    matches!(http::get(monitor, path).await, Ok(response) if response.status == 200)
}

async fn is_ready(ports: Ports, full_health: bool) -> bool {
    if !healthz_ok(ports.monitor, "/healthz?js-enabled-only=true").await {
        return false;
    }
    if full_health && !healthz_ok(ports.monitor, "/healthz").await {
        return false;
    }
    // A free port can be grabbed by another test's server between our check
    // and our bind; the monitor must report our own client port.
    let Ok(varz) = http::get(ports.monitor, "/varz").await else {
        return false;
    };
    let reported = serde_json::from_str::<serde_json::Value>(&varz.body)
        .ok()
        .and_then(|v| v["port"].as_u64());
    reported == Some(u64::from(ports.client))
}

/// `n` routed nats-servers (cluster `shoal-test`), JetStream on each, started
/// together and ready once JetStream's meta leader is elected.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    pub async fn start(n: usize) -> Result<NatsCluster> {
        NatsCluster::start_with(n, NatsOptions::default()).await
    }

    /// Like [`Self::start`], every server with `opts` (its `server_name` is
    /// ignored: the servers are `s1`, `s2`, ...).
    pub async fn start_with(n: usize, opts: NatsOptions) -> Result<NatsCluster> {
        if n == 0 {
            bail!("a cluster needs at least one server");
        }
        let binary = nats_server_binary()?;
        let mut attempt = 1;
        loop {
            let mut servers = NatsCluster::prepare(&binary, n, &opts)?;
            for server in &mut servers {
                server.proc.start()?;
            }
            let mut cluster = NatsCluster { servers };
            match cluster.wait_ready().await {
                Ok(()) => return Ok(cluster),
                Err(e)
                    if attempt < START_ATTEMPTS
                        && cluster.servers.iter_mut().any(NatsServer::lost_a_port_race) =>
                {
                    tracing::warn!(error = %e, attempt, "nats cluster lost a port race, retrying with new ports");
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    fn prepare(binary: &Path, n: usize, opts: &NatsOptions) -> Result<Vec<NatsServer>> {
        let ports: Vec<Ports> = free_ports(3 * n)
            .chunks(3)
            .map(|p| Ports {
                client: p[0],
                monitor: p[1],
                cluster: Some(p[2]),
            })
            .collect();
        (0..n)
            .map(|i| {
                let routes: Vec<u16> = ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, p)| p.cluster)
                    .collect();
                let opts = NatsOptions {
                    server_name: Some(format!("s{}", i + 1)),
                    ..opts.clone()
                };
                NatsServer::prepare(binary, &opts, ports[i], &routes)
            })
            .collect()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        for server in &mut self.servers {
            server.wait_ready().await?;
        }
        // `/healthz` answers 503 ("JetStream is still recovering meta layer")
        // until the meta leader is elected and known to that server.
        let monitors: Vec<u16> = self.servers.iter().map(NatsServer::monitor_port).collect();
        let servers = &mut self.servers;
        let result = try_wait_for(
            "the nats cluster to elect a JetStream meta leader",
            READY_DEADLINE,
            || {
                let exited: Vec<String> = servers
                    .iter_mut()
                    .filter_map(|s| (!s.proc.is_running()).then(|| s.proc.describe_exit()))
                    .collect();
                let monitors = monitors.clone();
                async move {
                    if !exited.is_empty() {
                        bail!("{} while the cluster was forming", exited.join(", "));
                    }
                    for monitor in monitors {
                        if !healthz_ok(monitor, "/healthz").await {
                            return Ok(None);
                        }
                    }
                    Ok(Some(()))
                }
            },
        )
        .await;
        result.map_err(|e| {
            let logs: Vec<String> = self
                .servers
                .iter()
                .map(|s| {
                    format!(
                        "--- {} ---\n{}",
                        s.proc.name(),
                        s.proc.log_tail(ERROR_TAIL_LINES)
                    )
                })
                .collect();
            with_log(e, "last lines of the servers' logs", &logs.join("\n"))
        })
    }

    /// The client URLs joined with commas, for services that take a NATS URL
    /// list. `async_nats::connect` does not split such a string: use
    /// [`Self::server_addrs`] or [`Self::client`].
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    pub fn url_list(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    pub fn server_addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.servers
            .iter()
            .map(|s| {
                s.url()
                    .parse()
                    .expect("a nats://127.0.0.1:PORT url is a valid server address")
            })
            .collect()
    }

    /// A client that knows every server, so it reconnects elsewhere when one dies.
    pub async fn client(&self) -> Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .connect(self.server_addrs())
            .await
            .with_context(|| format!("connecting to {}", self.urls()))
    }

    pub fn server(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_deps_script() {
        let root = tempfile::tempdir().unwrap();
        let err = nats_server_binary_from(Some("/nonexistent/nats-server".into()), root.path())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(MISSING), "{msg}");
        assert!(
            msg.contains("scripts/deps.sh") && msg.contains("/nonexistent/nats-server"),
            "{msg}"
        );

        let err = nats_server_binary_from(None, root.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scripts/deps.sh") && err.contains(".shoal/tools/nats-server"),
            "{err}"
        );
    }

    #[test]
    fn finds_the_binary_from_env_or_tools() {
        let root = tempfile::tempdir().unwrap();
        let tools = root.path().join(".shoal/tools");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(tools.join("nats-server"), "").unwrap();
        assert_eq!(
            nats_server_binary_from(None, root.path()).unwrap(),
            tools.join("nats-server")
        );
        assert_eq!(
            nats_server_binary_from(Some("".into()), root.path()).unwrap(),
            tools.join("nats-server")
        );

        let explicit = root.path().join("my-nats");
        std::fs::write(&explicit, "").unwrap();
        assert_eq!(
            nats_server_binary_from(Some(explicit.clone().into()), root.path()).unwrap(),
            explicit
        );
    }

    #[test]
    fn async_nats_does_not_split_comma_separated_urls() {
        // Why NatsCluster has server_addrs() and client() besides urls().
        let joined = "nats://127.0.0.1:4222,nats://127.0.0.1:4223";
        assert!(joined.parse::<async_nats::ServerAddr>().is_err());
        assert!(
            "nats://127.0.0.1:4222"
                .parse::<async_nats::ServerAddr>()
                .is_ok()
        );
    }

    #[test]
    fn workspace_root_has_the_deps_script() {
        assert!(workspace_root().join("scripts/deps.sh").is_file());
    }
}
