//! A test host with a network of its own ([`NetNs`]): a network namespace wired
//! to the host by a veth pair with a private /30, whose link a test can cut like
//! a pulled cable and restore while the processes inside keep running
//! ([`ServiceProcess::spawn_in`]). Needs root (CAP_NET_ADMIN) and iproute2.
//!
//! Names and subnets never collide between tests running side by side in
//! different processes: namespaces are named after the owning process (pid and
//! start time) and a counter, and subnets are handed out under a file lock from
//! 198.18.0.0/15 (the range reserved for network tests), skipping any /30 an
//! address on the host already uses. A namespace whose owner has ended (a test
//! that was killed) is removed, with the processes still in it, by the next
//! [`NetNs::new`].

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};

use crate::process::{CommandSpec, stat_fields};
use crate::service::ServiceProcess;

/// Namespaces are `shoal-<pid>-<start time>-<counter>`.
const NS_PREFIX: &str = "shoal-";
/// The namespace's end of the veth.
const NS_IF: &str = "eth0";
/// Longest interface name Linux takes (IFNAMSIZ - 1).
const MAX_IF_NAME: usize = 15;
/// 198.18.0.0/15, cut into /30s: block `i` is `RANGE_START + 4 * i`.
const RANGE_START: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const BLOCKS: u32 = 1 << 15;
const PREFIX_LEN: u8 = 30;
/// Serialises sweeping and subnet allocation between test processes.
const LOCK_PATH: &str = "/run/shoal-testkit-netns.lock";
const NETNS_DIR: &str = "/run/netns";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth pair to the host: `host_ip` on the host
/// side, `ns_ip` (and loopback) inside, and a default route to the host, so a
/// process inside reaches any address of the host (a nats-server listening on
/// `0.0.0.0`, see [`crate::NatsOptions::for_netns`]) through the veth.
///
/// Dropping it deletes the veth and the namespace, also when the test panics.
/// Drop the processes inside first (declare the `NetNs` before them).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    cut: AtomicBool,
}

impl NetNs {
    /// Creates the namespace and its link. Fails with an explanation without
    /// root.
    pub fn new() -> Result<NetNs> {
        ensure!(
            Uid::effective().is_root(),
            "network namespace tests need root (CAP_NET_ADMIN, as CI runs them): \
             run them as root, e.g. `sudo -E cargo nextest run ...`"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let owner = Owner::me(n)?;
        let _lock = lock()?;
        sweep_stale();
        let host_if = owner.host_if();
        // Only a stale one can have our name: the pid is ours while we live.
        if link_exists(&host_if) {
            let _ = run("ip", &["link", "del", &host_if]);
        }
        let used = host_ipv4_addresses()?;
        let block = (0..BLOCKS)
            .find(|&b| !used.iter().any(|&ip| block_of(ip) == Some(b)))
            .context("no free /30 left in 198.18.0.0/15")?;
        let (host_ip, ns_ip) = block_addresses(block);
        let netns = NetNs {
            name: owner.ns_name(),
            host_if,
            host_ip,
            ns_ip,
            cut: AtomicBool::new(false),
        };
        // Dropped (and so cleaned up) if any step fails.
        netns.set_up()?;
        tracing::debug!(netns = %netns.name, %host_ip, %ns_ip, "network namespace ready");
        Ok(netns)
    }

    fn set_up(&self) -> Result<()> {
        let (ns, host_if) = (self.name.as_str(), self.host_if.as_str());
        let host_cidr = format!("{}/{PREFIX_LEN}", self.host_ip);
        let ns_cidr = format!("{}/{PREFIX_LEN}", self.ns_ip);
        let host_ip = self.host_ip.to_string();
        run("ip", &["netns", "add", ns])?;
        // The peer is born inside the namespace: no moment where a crash could
        // leave a veth on the host that nothing names.
        run(
            "ip",
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", NS_IF, "netns", ns,
            ],
        )?;
        run("ip", &["addr", "add", &host_cidr, "dev", host_if])?;
        run("ip", &["link", "set", host_if, "up"])?;
        run("ip", &["-n", ns, "addr", "add", &ns_cidr, "dev", NS_IF])?;
        run("ip", &["-n", ns, "link", "set", NS_IF, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", ns, "route", "add", "default", "via", &host_ip],
        )?;
        Ok(())
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's end of the veth (at most 15 characters).
    pub fn host_interface(&self) -> &str {
        &self.host_if
    }

    /// The namespace's end of the veth (`eth0`, inside the namespace).
    pub fn ns_interface(&self) -> &str {
        NS_IF
    }

    /// The host's address on the veth: how processes inside reach the host.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's address: what the host (and a nats-server's `/connz`)
    /// sees its connections come from.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Pulls the cable: from now on every packet on the veth is dropped
    /// silently, both ways (a `blackhole` qdisc on each end). The links stay up
    /// and nobody gets an error, RST or FIN: established TCP connections stay
    /// ESTABLISHED on both ends and retransmit into the void, new ones hang in
    /// SYN-SENT. Traffic inside the namespace (loopback) is not affected.
    pub fn cut(&self) -> Result<()> {
        run(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.host_if,
                "root",
                "blackhole",
            ],
        )?;
        run(
            "tc",
            &[
                "-n",
                &self.name,
                "qdisc",
                "replace",
                "dev",
                NS_IF,
                "root",
                "blackhole",
            ],
        )?;
        self.cut.store(true, Ordering::SeqCst);
        tracing::debug!(netns = %self.name, "link cut");
        Ok(())
    }

    /// Plugs the cable back in: packets flow again (TCP retransmissions resume
    /// at their next backed-off timeout). Nothing to do if the link is not cut.
    pub fn restore(&self) -> Result<()> {
        remove_blackhole(None, &self.host_if)?;
        remove_blackhole(Some(&self.name), NS_IF)?;
        self.cut.store(false, Ordering::SeqCst);
        tracing::debug!(netns = %self.name, "link restored");
        Ok(())
    }

    /// Whether [`Self::cut`] is in effect.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`),
    /// for a look from inside: `netns.command("ss").args(["-tn"]).output()`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting one end of a veth deletes both, at once; the namespace
        // itself the kernel frees in the background once its last process ends.
        if link_exists(&self.host_if)
            && let Err(e) = run("ip", &["link", "del", &self.host_if])
        {
            tracing::warn!(netns = %self.name, error = %e, "could not delete the veth");
        }
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, error = %e, "could not delete the network namespace");
        }
    }
}

impl ServiceProcess {
    /// Like [`ServiceProcess::spawn`], inside `netns`. `ip netns exec` execs the
    /// binary and this returns once it has, so [`ServiceProcess::pid`],
    /// signals, pause and kill reach the binary itself;
    /// [`ServiceProcess::respawn`] starts it in `netns` again.
    pub fn spawn_in(
        netns: &NetNs,
        name: &str,
        bin: &Path,
        args: &[String],
        envs: &[(String, String)],
    ) -> Result<ServiceProcess> {
        let mut spec = netns.exec_spec(bin);
        spec.args.extend(args.iter().map(Into::into));
        spec.envs = envs.iter().map(|(k, v)| (k.into(), v.into())).collect();
        ServiceProcess::start_spec(name, spec)
    }
}

impl NetNs {
    /// `ip netns exec <name> <bin>`, to which the caller adds `bin`'s arguments:
    /// how every process in the namespace is started (and restarted).
    pub(crate) fn exec_spec(&self, bin: &Path) -> CommandSpec {
        let mut spec = CommandSpec::new(tool("ip"));
        spec.arg("netns").arg("exec").arg(&self.name).arg(bin);
        spec.execs_into = Some(bin.to_path_buf());
        spec
    }
}

/// Removes the `blackhole` root qdisc of `dev` (in namespace `ns`, else on the
/// host), if it has one.
fn remove_blackhole(ns: Option<&str>, dev: &str) -> Result<()> {
    let tc = |action: &str| {
        let mut args: Vec<&str> = ns.map_or_else(Vec::new, |ns| vec!["-n", ns]);
        args.extend(["qdisc", action, "dev", dev, "root"]);
        run("tc", &args)
    };
    if tc("show")?.contains("blackhole") {
        tc("del")?;
    }
    Ok(())
}

/// Who a namespace belongs to, read from its name: a test process (pid and
/// start time, so a reused pid is told apart) and its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: u32,
    start: u64,
    n: u32,
}

impl Owner {
    fn me(n: u32) -> Result<Owner> {
        let pid = std::process::id();
        let start = start_time(pid).context("reading this process's start time")?;
        let owner = Owner { pid, start, n };
        ensure!(
            owner.host_if().len() <= MAX_IF_NAME,
            "too many network namespaces in one test process ({n})"
        );
        Ok(owner)
    }

    fn parse(ns_name: &str) -> Option<Owner> {
        let mut parts = ns_name.strip_prefix(NS_PREFIX)?.split('-');
        let owner = Owner {
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
            n: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(owner)
    }

    fn ns_name(self) -> String {
        format!("{NS_PREFIX}{}-{}-{}", self.pid, self.start, self.n)
    }

    /// `sh-<pid hex>-<counter hex>`: at most 3 + 6 + 1 + 3 characters for
    /// 22-bit pids and 4096 namespaces per process.
    fn host_if(self) -> String {
        format!("sh-{:x}-{:x}", self.pid, self.n)
    }

    fn is_alive(self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Removes namespaces whose owning test process has ended, killing what still
/// runs in them (services a killed test left behind).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let stale = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| Some((Owner::parse(&name)?, name)))
        .filter(|(owner, _)| !owner.is_alive());
    for (owner, name) in stale {
        tracing::warn!(netns = %name, "removing a network namespace left by a test that has ended");
        if let Ok(pids) = run("ip", &["netns", "pids", &name]) {
            for pid in pids
                .lines()
                .filter_map(|line| line.trim().parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let host_if = owner.host_if();
        if link_exists(&host_if) {
            let _ = run("ip", &["link", "del", &host_if]);
        }
        if let Err(e) = run("ip", &["netns", "del", &name]) {
            tracing::warn!(netns = %name, error = %e, "could not remove a stale network namespace");
        }
    }
}

/// An exclusive lock across test processes, released on drop (or when the
/// holder dies).
fn lock() -> Result<std::fs::File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .with_context(|| format!("opening {LOCK_PATH}"))?;
    file.lock()
        .with_context(|| format!("locking {LOCK_PATH}"))?;
    Ok(file)
}

fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name]).is_ok()
}

/// Every IPv4 address on the host's interfaces.
fn host_ipv4_addresses() -> Result<Vec<Ipv4Addr>> {
    let listing = run("ip", &["-o", "-4", "addr", "show"])?;
    Ok(parse_ipv4_addresses(&listing))
}

/// The addresses in `ip -o -4 addr show` output (`2: eth0 inet 10.0.0.2/24 ...`).
fn parse_ipv4_addresses(listing: &str) -> Vec<Ipv4Addr> {
    listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|&word| word == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The /30 block of 198.18.0.0/15 that `ip` falls in.
fn block_of(ip: Ipv4Addr) -> Option<u32> {
    let offset = u32::from(ip).checked_sub(u32::from(RANGE_START))?;
    let block = offset / 4;
    (block < BLOCKS).then_some(block)
}

/// Host and namespace address of a block: its first and second host address.
fn block_addresses(block: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(RANGE_START) + 4 * block;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// `program` from the usual system directories (sbin is not always on a
/// test's PATH), else as found on PATH.
pub(crate) fn tool(program: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Runs an iproute2 command, returning its stdout; its stderr is the error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(tool(program))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{program}` (is iproute2 installed?)"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fit_interface_names() {
        let owner = Owner {
            pid: 4_194_303,
            start: 123_456_789,
            n: 4095,
        };
        assert_eq!(owner.ns_name(), "shoal-4194303-123456789-4095");
        assert_eq!(Owner::parse(&owner.ns_name()), Some(owner));
        assert_eq!(owner.host_if(), "sh-3fffff-fff");
        assert!(owner.host_if().len() <= MAX_IF_NAME);
        assert_eq!(Owner::parse("shoal-1-2"), None);
        assert_eq!(Owner::parse("shoal-1-2-3-4"), None);
        assert_eq!(Owner::parse("other-1-2-3"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_pid_past_pid_max_is_not() {
        let me = Owner::me(0).unwrap();
        assert!(me.is_alive());
        assert!(
            !Owner {
                start: me.start + 1,
                ..me
            }
            .is_alive(),
            "a reused pid is another process"
        );
        assert!(
            !Owner {
                pid: 9_999_999,
                ..me
            }
            .is_alive()
        );
    }

    #[test]
    fn blocks_are_slash_30s_of_the_test_range() {
        assert_eq!(
            block_addresses(0),
            (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))
        );
        assert_eq!(
            block_addresses(BLOCKS - 1),
            (
                Ipv4Addr::new(198, 19, 255, 253),
                Ipv4Addr::new(198, 19, 255, 254)
            )
        );
        assert_eq!(block_of(Ipv4Addr::new(198, 18, 0, 3)), Some(0));
        assert_eq!(block_of(Ipv4Addr::new(198, 18, 1, 5)), Some(65));
        assert_eq!(block_of(Ipv4Addr::new(198, 20, 0, 0)), None);
        assert_eq!(block_of(Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn reads_addresses_from_ip_output() {
        let listing = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                       7: sh-1-0    inet 198.18.0.1/30 scope global sh-1-0\\ valid_lft forever\n";
        assert_eq!(
            parse_ipv4_addresses(listing),
            [Ipv4Addr::LOCALHOST, Ipv4Addr::new(198, 18, 0, 1)]
        );
    }
}
