//! A routed cluster of nats-servers ([`NatsCluster`]): all on the host, or some
//! of them inside a [`NetNs`] so that a test can partition them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::nats::{NatsServer, READY_DEADLINE, START_ATTEMPTS, healthz_ok, nats_server_binary};
use crate::nats_config::{NatsOptions, Network, Ports};
use crate::netns::NetNs;
use crate::ports::free_ports;
use crate::process::{ERROR_TAIL_LINES, with_log};
use crate::wait::try_wait_for;

const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

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
        NatsCluster::start_spread(opts, &vec![None; n]).await
    }

    /// A cluster of `places.len()` servers, server `i` (`s<i+1>`) inside
    /// `places[i]` or, for `None`, on the host; every server with `opts` (its
    /// `server_name` ignored).
    ///
    /// A server in a namespace (started through `ip netns exec`) listens on
    /// 0.0.0.0 there with all three ports and is reached from the host at
    /// [`NetNs::ns_ip`] ([`NatsServer::url`], [`NatsServer::client`] and the
    /// monitoring calls take care of that); it routes to the host's servers at
    /// [`NetNs::host_ip`]. When any server is in a namespace, the host's
    /// servers listen for routes on 0.0.0.0, and for clients on 0.0.0.0 too
    /// unless `opts.listen_host` says otherwise, so that processes in the
    /// namespace reach them ([`NetNs::nats_url`]). Their monitoring ports stay
    /// on 127.0.0.1. Stop, kill, pause and restart work as on the host, and a
    /// restart starts the server in its namespace again.
    ///
    /// All namespaced servers must share one namespace: the host does not
    /// route between two of them.
    pub async fn start_spread(opts: NatsOptions, places: &[Option<&NetNs>]) -> Result<NatsCluster> {
        if places.is_empty() {
            bail!("a cluster needs at least one server");
        }
        let mut namespaces = places.iter().flatten().map(|netns| netns.name());
        if let Some(first) = namespaces.next()
            && let Some(other) = namespaces.find(|name| *name != first)
        {
            bail!(
                "cluster members in two network namespaces ({first} and {other}) cannot reach \
                 each other: put them in one namespace, or on the host"
            );
        }
        let binary = nats_server_binary()?;
        let mut attempt = 1;
        loop {
            let mut servers = NatsCluster::prepare(&binary, places, &opts)?;
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

    fn prepare(
        binary: &Path,
        places: &[Option<&NetNs>],
        opts: &NatsOptions,
    ) -> Result<Vec<NatsServer>> {
        // Ports free on the host are as good inside a namespace, which has
        // ports of its own.
        let ports: Vec<Ports> = free_ports(3 * places.len())
            .chunks(3)
            .map(|p| Ports {
                client: p[0],
                monitor: p[1],
                cluster: Some(p[2]),
            })
            .collect();
        let spread = places.iter().any(Option::is_some);
        (0..places.len())
            .map(|i| {
                let here = places[i];
                let routes: Vec<SocketAddr> = (0..places.len())
                    .filter(|&j| j != i)
                    .filter_map(|j| Some(route_addr(here, places[j], ports[j].cluster?)))
                    .collect();
                let (listen_host, net) = match here {
                    Some(_) => (
                        Some(ANY),
                        Network {
                            monitor_listen: ANY,
                            cluster_listen: ANY,
                            routes,
                        },
                    ),
                    None if spread => (
                        Some(opts.listen_host.unwrap_or(ANY)),
                        Network {
                            monitor_listen: LOOPBACK,
                            cluster_listen: ANY,
                            routes,
                        },
                    ),
                    None => (opts.listen_host, Network::loopback(routes)),
                };
                let opts = NatsOptions {
                    server_name: Some(format!("s{}", i + 1)),
                    listen_host,
                    ..opts.clone()
                };
                NatsServer::prepare(binary, &opts, ports[i], &net, here)
            })
            .collect()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        for server in &mut self.servers {
            server.wait_ready().await?;
        }
        // `/healthz` answers 503 ("JetStream is still recovering meta layer")
        // until the meta leader is elected and known to that server.
        let monitors: Vec<SocketAddr> = self.servers.iter().map(NatsServer::monitor_addr).collect();
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

    /// Every server's [`NatsServer::url`]: addresses this host reaches, a
    /// namespaced server's included.
    pub fn url_list(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    pub fn server_addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.servers
            .iter()
            .map(|s| {
                s.url()
                    .parse()
                    .expect("a nats://IP:PORT url is a valid server address")
            })
            .collect()
    }

    /// Every server's route port, in server order: what
    /// [`NetNs::cut_routes`] takes to cut a namespaced member off the others.
    pub fn cluster_ports(&self) -> Vec<u16> {
        self.servers
            .iter()
            .filter_map(NatsServer::cluster_port)
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

/// Where a server placed at `from` dials the route port `port` of one placed at
/// `to` (both in one namespace if in any, see [`NatsCluster::start_spread`]).
fn route_addr(from: Option<&NetNs>, to: Option<&NetNs>, port: u16) -> SocketAddr {
    let ip = match (from, to) {
        (Some(netns), None) => IpAddr::V4(netns.host_ip()),
        (None, Some(netns)) => IpAddr::V4(netns.ns_ip()),
        (None, None) | (Some(_), Some(_)) => LOOPBACK,
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
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
}
