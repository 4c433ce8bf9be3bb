//! Network namespaces on real processes: a shoal-announcer in its own
//! namespace losing its link to a real nats-server and getting it back, what
//! the server, the node and a subscriber on the host see; and namespaces
//! leaving nothing behind, after a panic or a killed test run too.
//!
//! Needs root (CI runs as root) and `cargo build -p shoal-announcer`.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use shoal_testkit::{Connection, NatsOptions, NatsServer, NetNs, ServiceProcess, binary, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);
/// `NatsOptions::for_netns` drops a silent client after about 3 s (3 PINGs a
/// second apart); the rest is room for a loaded machine.
const DROP_DEADLINE: Duration = Duration::from_secs(10);
/// Heartbeats sent before the cut may still be on their way for a moment.
const IN_FLIGHT: Duration = Duration::from_secs(1);
const CHILD_ENV: &str = "SHOAL_TESTKIT_CHILD";

/// When each heartbeat of node `n1` reached a subscriber on the host.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Instant>>>);

impl Arrivals {
    async fn record(client: &async_nats::Client) -> Result<Arrivals> {
        let mut sub = client.subscribe("shoal.node.n1.heartbeat").await?;
        client.flush().await?;
        let arrivals = Arrivals::default();
        let seen = arrivals.clone();
        tokio::spawn(async move {
            while sub.next().await.is_some() {
                seen.0.lock().unwrap().push(Instant::now());
            }
        });
        Ok(arrivals)
    }

    fn between(&self, from: Instant, to: Instant) -> usize {
        let arrivals = self.0.lock().unwrap();
        arrivals.iter().filter(|&&t| t >= from && t < to).count()
    }

    async fn wait_after(&self, what: &str, from: Instant, deadline: Duration) -> Result<()> {
        wait_for(what, deadline, || {
            let arrived = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|&&t| t >= from)
                .count();
            async move { (arrived >= 2).then_some(()) }
        })
        .await
    }
}

fn announcer(netns: &NetNs, nats: &NatsServer) -> Result<ServiceProcess> {
    let args: Vec<String> = [
        "--nats-url",
        &netns.nats_url(nats)?,
        "--node-id",
        "n1",
        "--heartbeat-interval",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ServiceProcess::spawn_in(
        netns,
        "announcer n1",
        &binary("shoal-announcer")?,
        &args,
        &[],
    )
}

async fn open_connection_from(nats: &NatsServer, netns: &NetNs) -> Option<Connection> {
    let open = nats.connections().await.ok()?;
    open.into_iter().find(|c| c.ip == IpAddr::V4(netns.ns_ip()))
}

/// TCP connections inside the namespace in state ESTABLISHED, as `ss` lists them.
fn established_inside(netns: &NetNs) -> Result<String> {
    let output = netns
        .command("ss")
        .args(["-tnH", "state", "established"])
        .output()?;
    if !output.status.success() {
        bail!("ss failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn a_cut_node_is_dropped_by_the_server_and_reconnects_after_restore() -> Result<()> {
    let netns = NetNs::new()?;
    let nats = NatsServer::start_with(NatsOptions::for_netns()).await?;
    let host = nats.client().await?;
    let arrivals = Arrivals::record(&host).await?;
    let started = Instant::now();
    let node = announcer(&netns, &nats)?;

    // `ip netns exec` execs the binary, and spawn_in returns once it has: the
    // pid we signal is the announcer's.
    let exe = std::fs::read_link(format!("/proc/{}/exe", node.pid()))?;
    assert_eq!(exe, binary("shoal-announcer")?.canonicalize()?);

    arrivals
        .wait_after("heartbeats from the node", started, DEADLINE)
        .await?;
    let first = wait_for("the node's connection in /connz", DEADLINE, || {
        open_connection_from(&nats, &netns)
    })
    .await?;
    assert_eq!(first.name.as_deref(), Some("shoal-node:n1"));
    let server_end = format!("{}:{}", netns.host_ip(), nats.port());
    assert!(established_inside(&netns)?.contains(&server_end));

    let log_at_cut = node.log_len();
    netns.cut()?;
    let cut_at = Instant::now();
    assert!(netns.is_cut());
    // A pulled cable: nothing reached the server. The node notices by itself,
    // from its unanswered PINGs (every 500 ms, two missed), not from TCP.
    node.wait_for_log_since(log_at_cut, "disconnected from nats", DEADLINE)
        .await?;
    let noticed_after = cut_at.elapsed();
    let closed = wait_for(
        "the server to drop the cut node's connection",
        DROP_DEADLINE,
        || async {
            let closed = nats.closed_connections().await.ok()?;
            closed.into_iter().find(|c| c.cid == first.cid)
        },
    )
    .await?;
    let dropped_at = Instant::now();
    let reason = closed.reason.unwrap_or_default();
    assert!(
        reason == "Stale Connection" || reason.starts_with("Slow Consumer"),
        "dropped for {reason:?}"
    );
    assert!(open_connection_from(&nats, &netns).await.is_none());

    assert_eq!(arrivals.between(cut_at + IN_FLIGHT, dropped_at), 0);

    let log_at_restore = node.log_len();
    netns.restore()?;
    let restored_at = Instant::now();
    assert!(!netns.is_cut());
    arrivals
        .wait_after("heartbeats after the restore", restored_at, DEADLINE)
        .await?;
    let resumed_after = restored_at.elapsed();
    let second = wait_for("the node's new connection in /connz", DEADLINE, || {
        open_connection_from(&nats, &netns)
    })
    .await?;
    assert_ne!(second.cid, first.cid, "a new connection");
    node.wait_for_log_since(log_at_restore, "connected to nats", DEADLINE)
        .await?;
    eprintln!(
        "the cut node noticed after {noticed_after:?}; the server dropped it after {:?} ({reason}); heartbeats resumed {resumed_after:?} after the restore",
        dropped_at - cut_at
    );
    Ok(())
}

/// A connection attempt from inside `netns` to `port` on the host, bounded by
/// `timeout`: `Some(true)` connected, `Some(false)` refused or unreachable,
/// `None` still hanging when the time was up.
fn try_connect(netns: &NetNs, port: u16, timeout: Duration) -> Result<Option<bool>> {
    let script = format!("exec 3<>/dev/tcp/{}/{port}", netns.host_ip());
    let status = netns
        .command("timeout")
        .arg(format!("{}", timeout.as_secs_f64()))
        .args(["bash", "-c", &script])
        .stderr(Stdio::null())
        .status()?;
    Ok(match status.code() {
        Some(0) => Some(true),
        Some(124) => None,
        _ => Some(false),
    })
}

#[tokio::test]
async fn namespaces_side_by_side_are_cut_alone() -> Result<()> {
    let a = NetNs::new()?;
    let b = NetNs::new()?;
    assert_ne!(a.name(), b.name());
    assert_ne!(a.host_interface(), b.host_interface());
    assert_ne!(a.host_ip(), b.host_ip());
    assert!(a.host_interface().len() <= 15);
    let listener = std::net::TcpListener::bind("0.0.0.0:0")?;
    let port = listener.local_addr()?.port();

    assert_eq!(try_connect(&a, port, DEADLINE)?, Some(true));
    a.cut()?;
    // Silently lost, not refused: the attempt hangs until the timeout.
    assert_eq!(try_connect(&a, port, Duration::from_millis(500))?, None);
    assert_eq!(try_connect(&b, port, DEADLINE)?, Some(true));
    a.restore()?;
    a.restore()?;
    assert_eq!(try_connect(&a, port, DEADLINE)?, Some(true));
    Ok(())
}

fn netns_exists(name: &str) -> Result<bool> {
    let output = Command::new("ip").args(["netns", "list"]).output()?;
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(listing
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name)))
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn assert_gone(name: &str, host_if: &str) -> Result<()> {
    assert!(!netns_exists(name)?, "namespace {name} left behind");
    assert!(!link_exists(host_if), "veth {host_if} left behind");
    Ok(())
}

#[tokio::test]
async fn dropping_leaves_no_namespace_or_veth_behind() -> Result<()> {
    let netns = NetNs::new()?;
    let (name, host_if) = (netns.name().to_string(), netns.host_interface().to_string());
    assert!(netns_exists(&name)?);
    assert!(link_exists(&host_if));
    // Even cut, and with a process still inside.
    let mut sleeper = ServiceProcess::spawn_in(
        &netns,
        "sleeper",
        "/bin/sleep".as_ref(),
        &["600".into()],
        &[],
    )?;
    netns.cut()?;
    drop(netns);
    assert_gone(&name, &host_if)?;
    assert!(sleeper.is_running());
    sleeper.kill()?;
    Ok(())
}

#[tokio::test]
async fn processes_inside_are_paused_killed_and_respawned_themselves() -> Result<()> {
    let netns = NetNs::new()?;
    let sleep = std::path::Path::new("/bin/sleep").canonicalize()?;
    let mut sleeper = ServiceProcess::spawn_in(&netns, "sleeper", &sleep, &["600".into()], &[])?;
    let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let state = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert_eq!(exe(sleeper.pid()), Some(sleep.clone()));
    sleeper.pause()?;
    assert!(state(sleeper.pid()).contains(") T"), "stopped");
    sleeper.resume()?;
    let first = sleeper.pid();
    sleeper.kill()?;
    assert!(!sleeper.is_running());
    sleeper.respawn()?;
    assert_ne!(sleeper.pid(), first);
    assert_eq!(exe(sleeper.pid()), Some(sleep));
    let inside = std::fs::read_link(format!("/proc/{}/ns/net", sleeper.pid()))?;
    let host = std::fs::read_link("/proc/self/ns/net")?;
    assert_ne!(inside, host, "respawned inside the namespace");
    Ok(())
}

/// Runs one test of this file again in a child process with `CHILD_ENV=mode`.
fn child(test: &str, mode: &str) -> Result<std::process::Child> {
    Command::new(std::env::current_exe()?)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the test binary again")
}

/// The `netns=NAME veth=IF sleeper=PID` a child prints (the test harness may
/// have begun the line).
fn names_from(line: &str) -> Option<(String, String, u32)> {
    let mut words = line[line.find("netns=")?..].split_whitespace();
    let name = words.next()?.strip_prefix("netns=")?;
    let veth = words.next()?.strip_prefix("veth=")?;
    let pid = words.next()?.strip_prefix("sleeper=")?.parse().ok()?;
    Some((name.to_string(), veth.to_string(), pid))
}

/// In a child: a namespace with a process inside, announced on stdout.
fn child_netns() -> Result<(NetNs, ServiceProcess)> {
    let netns = NetNs::new()?;
    let sleeper = ServiceProcess::spawn_in(
        &netns,
        "sleeper",
        "/bin/sleep".as_ref(),
        &["600".into()],
        &[],
    )?;
    println!(
        "netns={} veth={} sleeper={}",
        netns.name(),
        netns.host_interface(),
        sleeper.pid()
    );
    Ok((netns, sleeper))
}

#[tokio::test]
async fn a_panicking_test_leaves_nothing_behind() -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_some_and(|v| v == "netns-panic") {
        let (_netns, _sleeper) = child_netns()?;
        panic!("deliberate panic");
    }
    let output =
        child("a_panicking_test_leaves_nothing_behind", "netns-panic")?.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the child test panics:\n{text}");
    let (name, veth, _) = text
        .lines()
        .find_map(names_from)
        .with_context(|| format!("the child names its namespace:\n{text}"))?;
    assert_gone(&name, &veth)
}

#[tokio::test]
async fn a_killed_test_runs_namespace_is_removed_by_the_next() -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_some_and(|v| v == "netns-killed") {
        let _held = child_netns()?;
        std::future::pending::<()>().await;
    }
    let mut killed = child(
        "a_killed_test_runs_namespace_is_removed_by_the_next",
        "netns-killed",
    )?;
    let stdout = killed.stdout.take().context("child stdout")?;
    // A blocking read, bounded by the deadline.
    let reader = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| names_from(&line))
    });
    let names = tokio::time::timeout(DEADLINE, reader).await;
    killed.kill()?;
    let status = killed.wait()?;
    let Ok(Ok(Some((name, veth, sleeper)))) = names else {
        bail!("the child did not name its namespace ({status})");
    };
    // Killed, the child dropped nothing: its namespace stays until a
    // `NetNs::new` (this one, or one of a test running beside us) sweeps it.
    let fresh = NetNs::new()?;
    wait_for("the stale namespace to be removed", DEADLINE, || {
        let gone = !netns_exists(&name).unwrap_or(true) && !link_exists(&veth);
        async move { gone.then_some(()) }
    })
    .await?;
    wait_for("the orphan in it to be killed", DEADLINE, || {
        let state = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).ok();
        let ended = state.is_none_or(|stat| stat.contains(") Z"));
        async move { ended.then_some(()) }
    })
    .await?;
    assert!(netns_exists(fresh.name())?);
    Ok(())
}
