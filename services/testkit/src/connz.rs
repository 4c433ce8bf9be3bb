//! A nats-server's client connections as its monitoring endpoint `/connz`
//! reports them: who is connected, and why recent ones were closed.

use std::net::IpAddr;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::nats::NatsServer;

/// How many connections one `/connz` answer may list (nats-server's default is 1024).
const LIMIT: usize = 10_000;

/// One client connection in `/connz`.
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    /// The server's connection id; a reconnect gets a new one.
    pub cid: u64,
    /// Where the client connects from (a [`crate::NetNs::ns_ip`] for a
    /// process in a namespace).
    pub ip: IpAddr,
    pub port: u16,
    /// The name the client gave (Shoal services set one, e.g. `shoal-node:<id>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Why the server closed it, for a closed connection: `Stale Connection`
    /// (unanswered PINGs), `Slow Consumer (Write Deadline)`, `Client Closed`, ...
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Deserialize)]
struct Connz {
    #[serde(default)]
    connections: Option<Vec<Connection>>,
}

impl NatsServer {
    /// The client connections open now.
    pub async fn connections(&self) -> Result<Vec<Connection>> {
        self.connz("open").await
    }

    /// The connections the server has closed (it remembers the last 10,000),
    /// with the reason.
    pub async fn closed_connections(&self) -> Result<Vec<Connection>> {
        self.connz("closed").await
    }

    async fn connz(&self, state: &str) -> Result<Vec<Connection>> {
        let path = format!("/connz?state={state}&limit={LIMIT}");
        let connz: Connz = serde_json::from_value(self.monitor_json(&path).await?)
            .with_context(|| format!("parsing {path} of {}", self.server_name()))?;
        Ok(connz.connections.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_open_and_closed_connections() {
        let body = r#"{"server_id":"X","num_connections":1,"connections":[
            {"cid":5,"kind":"Client","ip":"198.18.0.2","port":40000,"name":"shoal-node:n1",
             "reason":"Stale Connection","subscriptions":3}]}"#;
        let connz: Connz = serde_json::from_str(body).unwrap();
        let conns = connz.connections.unwrap();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].cid, 5);
        assert_eq!(conns[0].ip.to_string(), "198.18.0.2");
        assert_eq!(conns[0].name.as_deref(), Some("shoal-node:n1"));
        assert_eq!(conns[0].reason.as_deref(), Some("Stale Connection"));

        let none: Connz = serde_json::from_str(r#"{"num_connections":0}"#).unwrap();
        assert!(none.connections.is_none());
        let anonymous: Connection =
            serde_json::from_str(r#"{"cid":1,"ip":"127.0.0.1","port":1}"#).unwrap();
        assert_eq!(anonymous.name, None);
    }
}
