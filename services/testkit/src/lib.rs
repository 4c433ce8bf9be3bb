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

pub mod http;
pub mod micro;
mod nats;
mod pgdata;
pub mod ports;
mod postgres;
mod process;
pub mod replicas;
mod wait;

pub use nats::{NatsCluster, NatsOptions, NatsServer, nats_server_binary, nats_server_binary_from};
pub use postgres::Postgres;
pub use process::{ServiceProcess, binary};
pub use replicas::{is_error_envelope, request_all, request_json, request_random, wait_all_agree};
pub use wait::{try_wait_for, wait_for};
