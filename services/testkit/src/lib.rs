//! Shoal's test harness: real nats-servers (single or clustered), private
//! Postgres servers and Shoal's own service binaries, each on free loopback
//! ports with its own temporary directory, so tests run in parallel and leave
//! nothing behind. No mocks, no containers.
//!
//! Processes are killed and their directories deleted on drop; when the test
//! is panicking, the tail of every process's log is printed first.

pub mod http;
mod nats;
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
