//! Shoal's test harness: real nats-servers (single or clustered), private
//! Postgres servers and Shoal's own service binaries, each on free loopback
//! ports with its own temporary directory, so tests run in parallel and leave
//! nothing behind. No mocks, no containers.
//!
//! Processes are killed and their directories deleted on drop; when the test
//! is panicking, the tail of every process's log is printed first.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use shoal_testkit::{NatsCluster, Postgres, ServiceProcess, binary, wait_for};
//!
//! let cluster = NatsCluster::start(3).await?;
//! let pg = Postgres::start().await?;
//! let db_url = pg.create_database().await?;
//! let registry = ServiceProcess::spawn(
//!     "registry",
//!     &binary("shoal-registry")?,
//!     &[],
//!     &[("SHOAL_NATS_URL".into(), cluster.urls()), ("SHOAL_DATABASE_URL".into(), db_url)],
//! )?;
//! registry.wait_for_log("ready", Duration::from_secs(10)).await?;
//! let client = cluster.client().await?;
//! wait_for("the registry to answer", Duration::from_secs(10), || async {
//!     client.request("$SRV.PING.shoal-registry", "".into()).await.ok()
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Cutting a node off the network
//!
//! A [`NetNs`] is a test host with a network of its own: a network namespace
//! joined to the host by a veth pair (a private /30 from 198.18.0.0/15,
//! [`NetNs::host_ip`] on the host side, [`NetNs::ns_ip`] inside). Processes
//! started in it with [`ServiceProcess::spawn_in`] reach a nats-server started
//! with [`NatsOptions::for_netns`] (listening on 0.0.0.0, PINGing clients every
//! second, dropping one after 2 unanswered PINGs or a write blocked for 2 s) at
//! [`NetNs::nats_url`]. [`NetNs::cut`] drops every packet on the link, both
//! ways and silently, like a pulled cable: no RST, no FIN, the process keeps
//! running and believes it is connected, while the server closes its
//! connection (about 3 s later, `Stale Connection`; `Slow Consumer (Write
//! Deadline)` if much was being sent to it). [`NetNs::restore`] plugs it back
//! in; the client learns of the drop at its next TCP retransmission (its
//! back-off grows with the length of the cut: about 1 s after a 3 s cut, 6 s
//! after an 8 s one) and reconnects. [`NatsServer::connections`] and
//! [`NatsServer::closed_connections`] show the server's side. Needs root;
//! without it [`NetNs::new`] says so.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::net::IpAddr;
//! use std::time::Duration;
//! use shoal_testkit::{NatsOptions, NatsServer, NetNs, ServiceProcess, binary, wait_for};
//!
//! // Declared first, dropped last: the processes inside go before it.
//! let netns = NetNs::new()?;
//! let nats = NatsServer::start_with(NatsOptions::for_netns()).await?;
//! let args = vec!["--nats-url".into(), netns.nats_url(&nats)?, "--node-id".into(), "n1".into()];
//! let node = ServiceProcess::spawn_in(&netns, "node n1", &binary("shoal-announcer")?, &args, &[])?;
//! node.wait_for_log("announcer ready", Duration::from_secs(10)).await?;
//! netns.cut()?;
//! let from_node = |c: &shoal_testkit::Connection| c.ip == IpAddr::V4(netns.ns_ip());
//! wait_for("the server to drop n1", Duration::from_secs(10), || async {
//!     let open = nats.connections().await.ok()?;
//!     (!open.iter().any(from_node)).then_some(())
//! })
//! .await?;
//! netns.restore()?;
//! # Ok(())
//! # }
//! ```
//!
//! # A cluster member in a namespace
//!
//! [`NatsCluster::start_spread`] runs chosen members of a cluster inside a
//! [`NetNs`] (all in one namespace), the others on the host. The host reaches
//! a namespaced member at [`NetNs::ns_ip`] ([`NatsServer::url`],
//! [`NatsCluster::urls`], [`NatsServer::client`], [`NatsServer::routes`],
//! [`NatsServer::monitor_json`] and the readiness checks all use it), a process
//! inside at `nats://127.0.0.1:PORT` ([`NetNs::nats_url`]), and kill, restart
//! and pause work on it as on the host. [`NetNs::cut`] then cuts the member off
//! together with every service in its namespace. [`NetNs::cut_routes`], given
//! [`NatsCluster::cluster_ports`], cuts only its routes (iptables in the
//! namespace drops every packet to or from those ports): the member is alone
//! in a minority of one, its clients stay connected to it and to each other,
//! and the servers drop the routes on both sides about 3 s later (routes are
//! PINGed like clients, see [`NatsOptions::for_netns`]).
//! [`NetNs::restore_routes`] lets the routes through again (they are back
//! within about a second); [`NetNs::restore`] only undoes [`NetNs::cut`].
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use shoal_testkit::{NatsCluster, NatsOptions, NetNs, wait_for};
//!
//! let netns = NetNs::new()?;
//! let cluster =
//!     NatsCluster::start_spread(NatsOptions::for_netns(), &[None, None, Some(&netns)]).await?;
//! let s3 = &cluster.servers[2];
//! let minority_client = s3.client().await?;
//! netns.cut_routes(&cluster.cluster_ports())?;
//! wait_for("s3 to lose its routes", Duration::from_secs(15), || async {
//!     s3.routed_peers().await.ok()?.is_empty().then_some(())
//! })
//! .await?;
//! minority_client.flush().await?; // still connected
//! netns.restore_routes()?;
//! # Ok(())
//! # }
//! ```

pub mod compose;
mod connz;
mod exposition;
pub mod http;
pub mod micro;
mod nats;
mod nats_cluster;
mod nats_config;
mod netns;
mod netns_nats;
mod pgdata;
pub mod ports;
mod postgres;
mod process;
pub mod replicas;
mod routez;
mod server_errors;
mod service;
mod wait;

pub use compose::ComposeStack;
pub use connz::Connection;
pub use exposition::metric_sum;
pub use nats::{NatsServer, nats_server_binary, nats_server_binary_from};
pub use nats_cluster::NatsCluster;
pub use nats_config::NatsOptions;
pub use netns::NetNs;
pub use postgres::Postgres;
pub use replicas::{is_error_envelope, request_all, request_json, request_random, wait_all_agree};
pub use routez::Route;
pub use server_errors::ServerErrors;
pub use service::{ServiceProcess, binary};
pub use wait::{try_wait_for, wait_for};
