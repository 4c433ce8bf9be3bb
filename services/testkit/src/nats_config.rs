//! What a test can set on a nats-server ([`NatsOptions`]) and the config file
//! the testkit writes from it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub(crate) const CLUSTER_NAME: &str = "shoal-test";

/// The servers' PING interval, as Shoal's shipped configs set it: a dead client's
/// subscriptions (a queue member that would swallow requests) go within seconds,
/// not nats-server's default 2 minutes.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered PINGs before a client is dropped, as Shoal's shipped configs set it.
pub const PING_MAX: u32 = 2;

/// Settings for [`crate::NatsServer::start_with`] and
/// [`crate::NatsCluster::start_with`]; `None` keeps the testkit's (or
/// nats-server's) default.
#[derive(Debug, Default, Clone)]
pub struct NatsOptions {
    /// Appended verbatim to the generated config file (accounts, authorization, ...).
    pub extra_config: String,
    pub server_name: Option<String>,
    /// Address the client port listens on; default `127.0.0.1`. `0.0.0.0`
    /// makes the server reachable from every [`crate::NetNs`] (at its
    /// [`crate::NetNs::host_ip`]) as well as from 127.0.0.1. The monitoring
    /// and cluster ports stay on 127.0.0.1 (but see
    /// [`crate::NatsCluster::start_spread`]).
    pub listen_host: Option<IpAddr>,
    /// How often the server PINGs a client it has heard nothing from
    /// ([`PING_INTERVAL`] unless set; nats-server's own default is 2 minutes).
    /// Millisecond resolution.
    pub ping_interval: Option<Duration>,
    /// Unanswered PINGs after which the server closes the connection as stale
    /// ([`PING_MAX`] unless set). A silent client is dropped after about
    /// `ping_interval * (ping_max + 1)`.
    pub ping_max: Option<u32>,
    /// Longest a write to a client may block before the server closes it as a
    /// slow consumer (nats-server's default: 10 s). Millisecond resolution.
    pub write_deadline: Option<Duration>,
}

impl NatsOptions {
    /// A server for tests that cut a [`crate::NetNs`] off: listening on
    /// `0.0.0.0` so every namespace reaches it, PINGing every second, closing a
    /// client after 2 unanswered PINGs (about 3 s of silence) and after 2 s of
    /// a blocked write.
    pub fn for_netns() -> NatsOptions {
        NatsOptions {
            listen_host: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ping_interval: Some(Duration::from_secs(1)),
            ping_max: Some(2),
            write_deadline: Some(Duration::from_secs(2)),
            ..NatsOptions::default()
        }
    }

    /// The client listen address (127.0.0.1 unless set).
    pub(crate) fn listen_ip(&self) -> IpAddr {
        self.listen_host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

/// The address a client on this host dials for a server listening on `listen`:
/// the loopback address of the same family when it listens on all of them.
pub(crate) fn connect_ip(listen: IpAddr) -> IpAddr {
    match listen {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Where a server's monitoring and cluster ports listen and which routes it
/// dials; the client port listens at [`NatsOptions::listen_host`].
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub monitor_listen: IpAddr,
    pub cluster_listen: IpAddr,
    pub routes: Vec<SocketAddr>,
}

impl Network {
    /// Everything on 127.0.0.1: a server (or cluster) with no namespace in play.
    pub fn loopback(routes: Vec<SocketAddr>) -> Network {
        Network {
            monitor_listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cluster_listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            routes,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub client: u16,
    pub monitor: u16,
    pub cluster: Option<u16>,
}

/// A Go duration string, which is what nats-server's config wants for times.
fn go_duration(duration: Duration) -> String {
    format!("\"{}ms\"", duration.as_millis())
}

pub(crate) fn config(
    name: &str,
    ports: Ports,
    store_dir: &Path,
    net: &Network,
    opts: &NatsOptions,
) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut conf = format!(
        "server_name: {name}\nlisten: \"{listen}\"\nhttp: \"{monitor}\"\n\
         jetstream {{\n  store_dir: {store}\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n",
        name = quote(name),
        listen = SocketAddr::new(opts.listen_ip(), ports.client),
        monitor = SocketAddr::new(net.monitor_listen, ports.monitor),
        store = quote(&store_dir.to_string_lossy()),
    );
    let interval = opts.ping_interval.unwrap_or(PING_INTERVAL);
    conf.push_str(&format!("ping_interval: {}\n", go_duration(interval)));
    conf.push_str(&format!(
        "ping_max: {}\n",
        opts.ping_max.unwrap_or(PING_MAX)
    ));
    if let Some(deadline) = opts.write_deadline {
        conf.push_str(&format!("write_deadline: {}\n", go_duration(deadline)));
    }
    if let Some(cluster) = ports.cluster {
        let routes: Vec<String> = net
            .routes
            .iter()
            .map(|addr| format!("\"nats-route://{addr}\""))
            .collect();
        conf.push_str(&format!(
            "cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"{listen}\"\n  routes: [{}]\n}}\n",
            routes.join(", "),
            listen = SocketAddr::new(net.cluster_listen, cluster),
        ));
    }
    conf.push_str(&opts.extra_config);
    conf.push('\n');
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_config_routes_to_the_others() {
        let ports = Ports {
            client: 1,
            monitor: 2,
            cluster: Some(3),
        };
        let opts = NatsOptions {
            extra_config: "accounts {}".into(),
            ..NatsOptions::default()
        };
        let routes = vec![([127, 0, 0, 1], 13).into(), ([198, 18, 0, 2], 23).into()];
        let conf = config(
            "s1",
            ports,
            Path::new("/tmp/x"),
            &Network::loopback(routes),
            &opts,
        );
        assert!(conf.contains("listen: \"127.0.0.1:1\""), "{conf}");
        assert!(conf.contains("http: \"127.0.0.1:2\""), "{conf}");
        assert!(conf.contains("store_dir: \"/tmp/x\""), "{conf}");
        assert!(conf.contains("name: shoal-test"), "{conf}");
        assert!(
            conf.contains(
                "routes: [\"nats-route://127.0.0.1:13\", \"nats-route://198.18.0.2:23\"]"
            ),
            "{conf}"
        );
        assert!(conf.contains("listen: \"127.0.0.1:3\""), "{conf}");
        assert!(conf.contains("ping_interval: \"1000ms\"\n"), "{conf}");
        assert!(conf.contains("ping_max: 2\n"), "{conf}");
        assert!(conf.trim_end().ends_with("accounts {}"), "{conf}");
    }

    #[test]
    fn netns_config_listens_everywhere_and_pings_fast() {
        let ports = Ports {
            client: 1,
            monitor: 2,
            cluster: None,
        };
        let opts = NatsOptions {
            ping_interval: Some(Duration::from_millis(1500)),
            ..NatsOptions::for_netns()
        };
        let conf = config(
            "s1",
            ports,
            Path::new("/tmp/x"),
            &Network::loopback(Vec::new()),
            &opts,
        );
        assert!(conf.contains("listen: \"0.0.0.0:1\""), "{conf}");
        assert!(conf.contains("http: \"127.0.0.1:2\""), "{conf}");
        assert!(conf.contains("ping_interval: \"1500ms\"\n"), "{conf}");
        assert!(conf.contains("ping_max: 2\n"), "{conf}");
        assert!(conf.contains("write_deadline: \"2000ms\"\n"), "{conf}");
        assert!(!conf.contains("cluster"), "{conf}");
    }

    #[test]
    fn a_member_in_a_namespace_listens_everywhere_and_routes_across_the_veth() {
        let ports = Ports {
            client: 1,
            monitor: 2,
            cluster: Some(3),
        };
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let net = Network {
            monitor_listen: any,
            cluster_listen: any,
            routes: vec![([198, 18, 0, 1], 13).into(), ([198, 18, 0, 1], 23).into()],
        };
        let opts = NatsOptions {
            listen_host: Some(any),
            ..NatsOptions::default()
        };
        let conf = config("s3", ports, Path::new("/tmp/x"), &net, &opts);
        assert!(conf.contains("listen: \"0.0.0.0:1\""), "{conf}");
        assert!(conf.contains("http: \"0.0.0.0:2\""), "{conf}");
        assert!(conf.contains("listen: \"0.0.0.0:3\""), "{conf}");
        assert!(
            conf.contains(
                "routes: [\"nats-route://198.18.0.1:13\", \"nats-route://198.18.0.1:23\"]"
            ),
            "{conf}"
        );
    }

    #[test]
    fn clients_dial_loopback_for_a_wildcard_listener() {
        let v4: IpAddr = "0.0.0.0".parse().unwrap();
        let v6: IpAddr = "::".parse().unwrap();
        let veth: IpAddr = "198.18.0.1".parse().unwrap();
        assert_eq!(connect_ip(v4).to_string(), "127.0.0.1");
        assert_eq!(connect_ip(v6).to_string(), "::1");
        assert_eq!(connect_ip(veth), veth);
        let listen = SocketAddr::new(v6, 4222).to_string();
        assert_eq!(listen, "[::]:4222");
    }
}
