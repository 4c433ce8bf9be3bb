//! A [`NetNs`] and the nats-servers around it: the URL a process inside dials
//! for a server ([`NetNs::nats_url`]), and cutting the cluster routes of a
//! member inside while its clients stay connected ([`NetNs::cut_routes`]).

use std::net::IpAddr;

use anyhow::{Context, Result, bail};

use crate::nats::NatsServer;
use crate::netns::{NetNs, run, tool};

/// The iptables chain inside the namespace that holds the route cut; INPUT and
/// OUTPUT jump to it.
const ROUTES_CHAIN: &str = "SHOAL-ROUTES";
/// Most ports one `multiport` match takes.
const MULTIPORT_MAX: usize = 15;

impl NetNs {
    /// The URL a process inside uses for `server`: `nats://<host_ip>:<port>`
    /// for a server on the host, `nats://127.0.0.1:<port>` for one running in
    /// this namespace. Fails if the server is out of reach: on the host but
    /// listening on 127.0.0.1 only (start it with
    /// [`crate::NatsOptions::for_netns`]), or in another namespace.
    pub fn nats_url(&self, server: &NatsServer) -> Result<String> {
        match server.netns() {
            Some(name) if name == self.name() => {
                return Ok(format!("nats://127.0.0.1:{}", server.port()));
            }
            Some(other) => bail!(
                "nats-server {} runs in network namespace {other}, out of reach of {}",
                server.server_name(),
                self.name()
            ),
            None => {}
        }
        let listen = server.listen_host();
        if !(listen.is_unspecified() || listen == IpAddr::V4(self.host_ip())) {
            bail!(
                "nats-server {} listens on {listen} only, out of reach of network namespace {}: \
                 start it with NatsOptions::for_netns() (or listen_host 0.0.0.0)",
                server.server_name(),
                self.name()
            );
        }
        Ok(format!("nats://{}:{}", self.host_ip(), server.port()))
    }

    /// Cuts the cluster routes of the nats-server in this namespace and
    /// nothing else: from now on every TCP packet from or to any of `ports`
    /// (pass [`crate::NatsCluster::cluster_ports`]: its own route port and the
    /// other members') is dropped inside the namespace, both ways and
    /// silently, by iptables. Route connections go quiet and the servers on
    /// both sides close them once their PINGs go unanswered, while client
    /// connections to the server inside, from the host or from inside, carry
    /// on. Replaces the ports of an earlier call; [`Self::restore_routes`]
    /// undoes it ([`Self::restore`] does not), and so does dropping the
    /// namespace.
    ///
    /// The match is on port numbers alone: a connection of some other
    /// process inside whose ephemeral port happens to be one of `ports` is
    /// cut too (route ports are ephemeral-range ports, so this is possible
    /// but rare).
    pub fn cut_routes(&self, ports: &[u16]) -> Result<()> {
        self.drop_ports(ports).with_context(|| {
            format!(
                "cutting ports {ports:?} in network namespace {}",
                self.name()
            )
        })?;
        tracing::debug!(netns = %self.name(), ?ports, "routes cut");
        Ok(())
    }

    /// Lets the route ports of [`Self::cut_routes`] through again; the servers
    /// reconnect their routes by themselves (they retry every second). Nothing
    /// to do if no routes are cut.
    pub fn restore_routes(&self) -> Result<()> {
        if self.iptables(&["-S", ROUTES_CHAIN]).is_ok() {
            self.iptables(&["-F", ROUTES_CHAIN]).with_context(|| {
                format!("restoring the routes in network namespace {}", self.name())
            })?;
        }
        tracing::debug!(netns = %self.name(), "routes restored");
        Ok(())
    }

    /// Makes [`ROUTES_CHAIN`] drop TCP from and to `ports`, and nothing else.
    fn drop_ports(&self, ports: &[u16]) -> Result<()> {
        self.install_routes_chain()?;
        self.iptables(&["-F", ROUTES_CHAIN])?;
        for chunk in ports.chunks(MULTIPORT_MAX) {
            let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
            let list = list.join(",");
            // `--ports` matches the source or the destination port.
            self.iptables(&[
                "-A",
                ROUTES_CHAIN,
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--ports",
                &list,
                "-j",
                "DROP",
            ])?;
        }
        Ok(())
    }

    /// Creates [`ROUTES_CHAIN`] and the jumps to it from INPUT and OUTPUT,
    /// unless they exist.
    fn install_routes_chain(&self) -> Result<()> {
        if self.iptables(&["-S", ROUTES_CHAIN]).is_err() {
            self.iptables(&["-N", ROUTES_CHAIN])?;
        }
        for hook in ["INPUT", "OUTPUT"] {
            if self.iptables(&["-C", hook, "-j", ROUTES_CHAIN]).is_err() {
                self.iptables(&["-I", hook, "-j", ROUTES_CHAIN])?;
            }
        }
        Ok(())
    }

    /// `iptables -w args...` inside the namespace.
    fn iptables(&self, args: &[&str]) -> Result<()> {
        let iptables = tool("iptables");
        let iptables = iptables.to_string_lossy();
        let mut full = vec!["netns", "exec", self.name(), &iptables, "-w"];
        full.extend(args);
        run("ip", &full).map(drop)
    }
}
