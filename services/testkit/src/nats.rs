//! Real nats-server processes with JetStream ([`NatsServer`]), on the host or
//! inside a [`NetNs`]; a routed cluster of them is in `nats_cluster`.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::http;
use crate::nats_config::{NatsOptions, Network, Ports, config, connect_ip};
use crate::netns::NetNs;
use crate::ports::free_ports;
use crate::process::{CommandSpec, Proc, log_file};
use crate::wait::try_wait_for;

pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(20);
const STOP_DEADLINE: Duration = Duration::from_secs(10);
pub(crate) const START_ATTEMPTS: usize = 3;
const PANIC_TAIL_LINES: usize = 50;
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
///
/// A cluster member may run inside a [`NetNs`] (see
/// [`crate::NatsCluster::start_spread`]); its ports are then reached from the
/// host at [`NetNs::ns_ip`], and [`Self::url`], [`Self::client`] and the
/// monitoring calls use that address.
pub struct NatsServer {
    // Declared before `dir` so the process dies before its directory goes.
    pub(crate) proc: Proc,
    server_name: String,
    ports: Ports,
    /// Where the client port listens (see [`NatsOptions::listen_host`]).
    listen_host: IpAddr,
    /// Where the host dials the client and monitoring ports.
    host_ip: IpAddr,
    /// The [`NetNs::name`] of the namespace it runs in, if any.
    netns: Option<String>,
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
            let net = Network::loopback(Vec::new());
            let mut server = NatsServer::prepare(&binary, &opts, ports, &net, None)?;
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

    /// Writes the config and sets up the process (in `netns`, if given)
    /// without starting it.
    pub(crate) fn prepare(
        binary: &Path,
        opts: &NatsOptions,
        ports: Ports,
        net: &Network,
        netns: Option<&NetNs>,
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
        std::fs::write(&config_path, config(&name, ports, &store_dir, net, opts))
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = log_file(dir.path(), "nats-server")?;
        let mut spec = match netns {
            Some(netns) => netns.exec_spec(binary),
            None => CommandSpec::new(binary),
        };
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
            host_ip: netns.map_or_else(
                || connect_ip(opts.listen_ip()),
                |netns| IpAddr::V4(netns.ns_ip()),
            ),
            netns: netns.map(|netns| netns.name().to_string()),
            store_dir,
            standalone: ports.cluster.is_none(),
            dir,
        })
    }

    /// `nats://127.0.0.1:PORT` (or `nats://HOST:PORT` for a server listening
    /// on one other address only, `nats://<ns_ip>:PORT` for one in a
    /// [`NetNs`]): the URL for clients on this host. A process in a [`NetNs`]
    /// uses [`NetNs::nats_url`] instead.
    pub fn url(&self) -> String {
        format!("nats://{}", self.client_addr())
    }

    /// Where clients on this host connect: the address in [`Self::url`].
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.ports.client)
    }

    /// Where this host reaches the monitoring port: 127.0.0.1, or the
    /// namespace's address for a server in a [`NetNs`].
    pub fn monitor_addr(&self) -> SocketAddr {
        let ip = match self.netns {
            Some(_) => self.host_ip,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        SocketAddr::new(ip, self.ports.monitor)
    }

    /// The address the client port listens on: 127.0.0.1 unless
    /// [`NatsOptions::listen_host`] said otherwise (0.0.0.0 inside a [`NetNs`]
    /// and, by default, on the host beside one).
    pub fn listen_host(&self) -> IpAddr {
        self.listen_host
    }

    /// The [`NetNs::name`] of the namespace the server runs in; `None` on the
    /// host.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
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

    pub(crate) fn lost_a_port_race(&mut self) -> bool {
        !self.proc.is_running() && self.log().to_lowercase().contains("address already in use")
    }

    /// Ready when JetStream is up (and, for a standalone server, fully healthy:
    /// streams recovered) and the monitor port is really this server's.
    pub(crate) async fn wait_ready(&mut self) -> Result<()> {
        let (monitor, client_port) = (self.monitor_addr(), self.ports.client);
        let full_health = self.standalone;
        let what = format!("{} to be ready", self.proc.name());
        let proc = &mut self.proc;
        let result = try_wait_for(&what, READY_DEADLINE, || {
            let exited = (!proc.is_running()).then(|| proc.describe_exit());
            async move {
                if let Some(exit) = exited {
                    bail!("{exit} while starting");
                }
                Ok(is_ready(monitor, client_port, full_health)
                    .await
                    .then_some(()))
            }
        })
        .await;
        result.map_err(|e| self.proc.with_log_tail(e))
    }
}

pub(crate) async fn healthz_ok(monitor: SocketAddr, path: &str) -> bool {
    matches!(http::get_at(monitor, path).await, Ok(response) if response.status == 200)
}

async fn is_ready(monitor: SocketAddr, client_port: u16, full_health: bool) -> bool {
    if !healthz_ok(monitor, "/healthz?js-enabled-only=true").await {
        return false;
    }
    if full_health && !healthz_ok(monitor, "/healthz").await {
        return false;
    }
    // A free port can be grabbed by another test's server between our check
    // and our bind; the monitor must report our own client port.
    let Ok(varz) = http::get_at(monitor, "/varz").await else {
        return false;
    };
    let reported = serde_json::from_str::<serde_json::Value>(&varz.body)
        .ok()
        .and_then(|v| v["port"].as_u64());
    reported == Some(u64::from(client_port))
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
    fn workspace_root_has_the_deps_script() {
        assert!(workspace_root().join("scripts/deps.sh").is_file());
    }
}
