//! `shoal up`: the whole control plane on this machine, in the foreground. Starts
//! what is not given by URL (nats-server with JetStream, Postgres), then registry,
//! balancer, two coordinators, N announcers and the HTTP gateway; Ctrl-C (or `shoal down`) stops them
//! in order: coordinators (so a clean stop moves no agent), nodes, services, then the
//! servers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::local::{Instance, Kind, Paths, State, alive, tail};

mod postgres;
mod requests;
mod supervise;

pub use requests::{Action, ask};
use supervise::{stop_all, supervise};

pub struct UpArgs {
    pub dir: PathBuf,
    pub nodes: usize,
    pub nats_url: Option<String>,
    pub database_url: Option<String>,
    pub nats_port: u16,
    pub monitor_port: u16,
    pub pg_port: u16,
    pub http_port: u16,
    pub coordinators: usize,
}

struct Running {
    instance: Instance,
    child: Child,
    /// How to start it again (`shoal start|restart`); Shoal's own processes only.
    recipe: Option<Recipe>,
    /// Stopped on request (`shoal stop`): not reported as an exit, not signalled.
    stopped: bool,
    /// Its unrequested exit has been reported.
    reported: bool,
}

/// A Shoal process's command line and environment.
#[derive(Clone)]
struct Recipe {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Recipe {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args).envs(self.env.iter().cloned());
        cmd
    }
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let paths = Paths::new(&args.dir);
    if let Some(state) = paths.load()? {
        if alive(state.up_pid) {
            bail!(
                "a control plane is already running here (shoal up, pid {}) — see `shoal status`, stop it with `shoal down`",
                state.up_pid
            );
        }
        paths.clear();
    }
    paths.rotate_logs()?;
    // Listen before starting anything: a Ctrl-C during startup must still stop what
    // was started (the children are in their own process group and do not see it).
    let mut signals = Signals::new()?;
    let mut running: Vec<Running> = Vec::new();
    let result = tokio::select! {
        result = start_all(&args, &paths, &mut running) => result,
        _ = signals.recv() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    let mut state = State {
        up_pid: std::process::id(),
        nats_url: result.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
        monitor_port: result.as_ref().ok().and_then(|r| r.2),
        database_url: result.as_ref().ok().and_then(|r| r.1.clone()),
        instances: running.iter().map(|r| r.instance.clone()).collect(),
    };
    if let Err(e) = result {
        stop_all(&mut running).await;
        return Err(e);
    }
    paths.save(&state)?;
    print_summary(&state);
    let listener = match requests::listen(&paths.control_socket()) {
        Ok(listener) => listener,
        Err(e) => {
            stop_all(&mut running).await;
            return Err(e);
        }
    };
    let (ask_tx, mut asked) = tokio::sync::mpsc::channel(8);
    let serving = tokio::spawn(requests::serve(listener, ask_tx));
    outln!("running; Ctrl-C (or `shoal down`) stops everything");
    supervise(&mut running, &mut signals, &mut asked, &paths, &mut state).await;
    serving.abort();
    outln!("stopping…");
    stop_all(&mut running).await;
    let _ = std::fs::remove_file(paths.control_socket());
    paths.clear();
    outln!("stopped; data kept in {}", paths.run().display());
    Ok(())
}

/// Returns (nats url, database url, monitoring port).
async fn start_all(
    args: &UpArgs,
    paths: &Paths,
    running: &mut Vec<Running>,
) -> anyhow::Result<(String, Option<String>, Option<u16>)> {
    if !port_free(args.http_port) {
        bail!(
            "port {} is in use — is another shoal-gateway or `shoal up` running? try `shoal down` or --http-port",
            args.http_port
        );
    }
    let (nats_url, monitor, sys_password) = match &args.nats_url {
        Some(url) => (url.clone(), None, None),
        None => {
            let (url, sys) = start_nats(args, paths, running).await?;
            (url, Some(args.monitor_port), Some(sys))
        }
    };
    let database_url = match &args.database_url {
        Some(url) => Some(url.clone()),
        None => Some(postgres::start_postgres(args, paths, running).await?),
    };
    let env = |instance: &str, kind: Kind| {
        let mut env = vec![
            ("SHOAL_NATS_URL".to_string(), nats_url.clone()),
            ("SHOAL_INSTANCE_ID".to_string(), instance.to_string()),
        ];
        if let Some(db) = &database_url {
            env.push(("SHOAL_DATABASE_URL".to_string(), db.clone()));
        }
        if let Some(password) = &sys_password
            && matches!(kind, Kind::Registry | Kind::Coordinator)
        {
            env.push(("SHOAL_SYS_NATS_USER".to_string(), "sys".to_string()));
            env.push(("SHOAL_SYS_NATS_PASSWORD".to_string(), password.clone()));
        }
        env
    };
    let mut services = vec![
        ("registry".to_string(), Kind::Registry, vec![]),
        ("balancer".to_string(), Kind::Balancer, vec![]),
    ];
    for i in 1..=args.coordinators {
        services.push((format!("coordinator-{i}"), Kind::Coordinator, vec![]));
    }
    for i in 1..=args.nodes {
        let id = format!("node-{i}");
        services.push((
            id.clone(),
            Kind::Announcer,
            vec!["--node-id".to_string(), id],
        ));
    }
    for (name, kind, args) in services {
        let recipe = Recipe {
            bin: sibling_binary(kind.service_name().unwrap_or_default())?,
            args,
            env: env(&name, kind),
        };
        let mut r = spawn(recipe.command(), &name, kind, paths, None)?;
        r.recipe = Some(recipe);
        running.push(r);
    }
    start_gateway(
        args.http_port,
        env("gateway", Kind::Gateway),
        paths,
        running,
    )
    .await?;
    Ok((nats_url, database_url, monitor))
}

/// The HTTP gateway on 127.0.0.1:`port`; returns once it accepts connections.
async fn start_gateway(
    port: u16,
    mut env: Vec<(String, String)>,
    paths: &Paths,
    running: &mut Vec<Running>,
) -> anyhow::Result<()> {
    env.push(("SHOAL_HTTP_LISTEN".to_string(), format!("127.0.0.1:{port}")));
    let recipe = Recipe {
        bin: sibling_binary(Kind::Gateway.service_name().unwrap_or_default())?,
        args: vec![],
        env,
    };
    let url = format!("http://127.0.0.1:{port}/");
    let mut r = spawn(recipe.command(), "gateway", Kind::Gateway, paths, Some(url))?;
    r.recipe = Some(recipe);
    let log = r.instance.log.clone();
    running.push(r);
    wait_until(
        "the gateway",
        Duration::from_secs(20),
        &log,
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await
}

fn spawn(
    cmd: Command,
    name: &str,
    kind: Kind,
    paths: &Paths,
    address: Option<String>,
) -> anyhow::Result<Running> {
    let log = paths.logs().join(format!("{name}.log"));
    let child = launch(cmd, name, &log, false)?;
    let pid = child.id().unwrap_or_default();
    Ok(Running {
        instance: Instance {
            name: name.to_string(),
            kind,
            pid,
            log,
            address,
        },
        child,
        recipe: None,
        stopped: false,
        reported: false,
    })
}

/// Starts `cmd` writing to `log` (from its start, or after what is there), in its
/// own process group: the terminal's Ctrl-C reaches `shoal up` alone, which then
/// stops everything in order.
fn launch(mut cmd: Command, name: &str, log: &Path, append: bool) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {name}"))
}

/// A Shoal binary built next to this one (`target/<profile>/`).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{} not found next to {} — build everything with `cargo build --bins`",
            name,
            exe.display()
        )
    }
}

fn nats_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHOAL_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = vec![PathBuf::from(".shoal/tools/nats-server")];
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/shoal → <workspace>/.shoal/tools/nats-server
        if let Some(ws) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            candidates.push(ws.join(".shoal/tools/nats-server"));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("nats-server not found — run scripts/deps.sh (or set SHOAL_NATS_SERVER, or pass --nats-url)"))
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// What the flags of the local nats-server cannot say:
/// - PING a silent client every second and drop it after 2 unanswered, so a dead
///   client's subscriptions go within seconds, not nats-server's default 2 minutes;
/// - a system account, whose user `sys` (password made per run) the registry and
///   the coordinators use to read connection advisories, so a node's or the
///   leader's closed connection is noticed at once. Everyone else still connects
///   without credentials (as `local`, in the global account).
fn nats_config(sys_password: &str) -> String {
    format!(
        r#"# Written by `shoal up`.
ping_interval: "1s"
ping_max: 2
accounts {{
  SYS {{ users = [ {{ user: sys, password: "{sys_password}" }} ] }}
}}
system_account: SYS
authorization {{ users = [ {{ user: local }} ] }}
no_auth_user: local
"#
    )
}

/// Returns the server's URL and the system account user's password.
async fn start_nats(
    args: &UpArgs,
    paths: &Paths,
    running: &mut Vec<Running>,
) -> anyhow::Result<(String, String)> {
    for port in [args.nats_port, args.monitor_port] {
        if !port_free(port) {
            bail!(
                "port {port} is in use — is another nats-server or `shoal up` running? try `shoal down` or --nats-port/--monitor-port"
            );
        }
    }
    std::fs::create_dir_all(paths.nats_store())?;
    let sys_password = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(paths.nats_config(), nats_config(&sys_password))?;
    let mut cmd = Command::new(nats_binary()?);
    cmd.arg("-c")
        .arg(paths.nats_config())
        .args(["-a", "127.0.0.1", "-n", "shoal-local", "-js"])
        .arg("-p")
        .arg(args.nats_port.to_string())
        .arg("-m")
        .arg(args.monitor_port.to_string())
        .arg("-sd")
        .arg(paths.nats_store());
    let url = format!("nats://127.0.0.1:{}", args.nats_port);
    let r = spawn(
        cmd,
        "nats-server",
        Kind::NatsServer,
        paths,
        Some(url.clone()),
    )?;
    let log = r.instance.log.clone();
    running.push(r);
    let port = args.monitor_port;
    wait_until(
        "nats-server",
        Duration::from_secs(20),
        &log,
        || async move { http_ok(port, "/healthz?js-enabled-only=true").await },
    )
    .await?;
    Ok((url, sys_password))
}

async fn wait_until<F, Fut>(
    what: &str,
    deadline: Duration,
    log: &Path,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > deadline {
            bail!(
                "{what} did not come up within {deadline:?}; its log ends:\n{}",
                tail(log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn http_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200")
        || String::from_utf8_lossy(&buf).starts_with("HTTP/1.0 200")
}

fn print_summary(state: &State) {
    outln!("control plane:");
    for i in &state.instances {
        outln!(
            "  {:<16} pid {:<8} {:<34} log {}",
            i.name,
            i.pid,
            i.address.clone().unwrap_or_default(),
            i.log.display()
        );
    }
    outln!("  SHOAL_NATS_URL={}", state.nats_url);
    if let Some(db) = &state.database_url {
        outln!("  SHOAL_DATABASE_URL={db}");
    }
    if let Some(gateway) = state.instances.iter().find(|i| i.kind == Kind::Gateway) {
        outln!(
            "  dashboard and HTTP API: {} (try: curl {}api/cluster/nodes)",
            gateway.address.clone().unwrap_or_default(),
            gateway.address.clone().unwrap_or_default()
        );
    }
    if let Some(port) = state.monitor_port {
        outln!("  nats monitoring: http://127.0.0.1:{port}/ (varz, connz, jsz)");
        outln!(
            "  connection advisories: on (the registry and the coordinators hear at once when a node's or the leader's connection closes)"
        );
    }
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
