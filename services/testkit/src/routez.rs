//! A nats-server's monitoring endpoints as the host reaches them: any of them
//! as JSON ([`NatsServer::monitor_json`]), and its cluster routes as `/routez`
//! reports them ([`NatsServer::routes`]).

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::http;
use crate::nats::NatsServer;

/// One route connection in `/routez`. nats-server opens several to each peer
/// (a pool, plus one per pinned account), so a peer can appear more than once.
#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    /// The server's connection id for this route.
    pub rid: u64,
    /// The peer's `server_name` (`s1`, `s2`, ... in a [`crate::NatsCluster`]).
    #[serde(default)]
    pub remote_name: Option<String>,
    /// The peer's server id.
    #[serde(default)]
    pub remote_id: String,
    /// Whether this server dialed the connection (rather than accepted it).
    #[serde(default)]
    pub did_solicit: bool,
    /// The peer's end of the connection as this server sees it.
    pub ip: String,
    pub port: u16,
}

#[derive(Deserialize)]
struct Routez {
    #[serde(default)]
    routes: Option<Vec<Route>>,
}

impl NatsServer {
    /// `GET path` on the monitoring port (at [`NatsServer::monitor_addr`]),
    /// parsed as JSON: `/jsz?streams=true`, `/varz`, `/healthz`, ... Fails
    /// unless the server answers 200.
    pub async fn monitor_json(&self, path: &str) -> Result<serde_json::Value> {
        let response = http::get_at(self.monitor_addr(), path).await?;
        if response.status != 200 {
            bail!(
                "GET {path} on {}: status {}: {}",
                self.server_name(),
                response.status,
                response.body
            );
        }
        serde_json::from_str(&response.body)
            .with_context(|| format!("parsing {path} of {}", self.server_name()))
    }

    /// The route connections open now (`/routez`).
    pub async fn routes(&self) -> Result<Vec<Route>> {
        let routez: Routez = serde_json::from_value(self.monitor_json("/routez").await?)
            .with_context(|| format!("parsing /routez of {}", self.server_name()))?;
        Ok(routez.routes.unwrap_or_default())
    }

    /// The names of the servers this one has at least one route to, sorted.
    pub async fn routed_peers(&self) -> Result<Vec<String>> {
        let peers: BTreeSet<String> = self
            .routes()
            .await?
            .into_iter()
            .map(|route| route.remote_name.unwrap_or(route.remote_id))
            .collect();
        Ok(peers.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        let body = r#"{"server_id":"X","num_routes":2,"routes":[
            {"rid":7,"remote_id":"NB","remote_name":"s2","did_solicit":true,"is_configured":true,
             "ip":"198.18.0.1","port":41000,"pending_size":0},
            {"rid":8,"remote_id":"NC","ip":"127.0.0.1","port":41001}]}"#;
        let routez: Routez = serde_json::from_str(body).unwrap();
        let routes = routez.routes.unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].remote_name.as_deref(), Some("s2"));
        assert!(routes[0].did_solicit);
        assert_eq!(routes[1].remote_name, None);
        assert_eq!(routes[1].remote_id, "NC");
        let none: Routez = serde_json::from_str(r#"{"num_routes":0}"#).unwrap();
        assert!(none.routes.is_none());
    }
}
