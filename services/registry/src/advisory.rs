//! The second failure signal: NATS reports a closed client connection on the system
//! account at once; a node whose connection (named `shoal-node:<id>`) closed is
//! suspect immediately, and missed heartbeats then confirm it offline.

use std::sync::Arc;
use std::time::Instant;

use async_nats::Client;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::Engine;

/// NATS' own subject for client disconnect advisories, any account.
const DISCONNECT_ADVISORIES: &str = "$SYS.ACCOUNT.*.DISCONNECT";
/// The announcer names its connection `shoal-node:<node id>`.
const NODE_CONNECTION_PREFIX: &str = "shoal-node:";

#[derive(Deserialize)]
struct Advisory {
    client: AdvisoryClient,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct AdvisoryClient {
    #[serde(default)]
    name: String,
}

/// The node id named by a disconnect advisory, and the reason given.
pub fn node_of(payload: &[u8]) -> Option<(String, String)> {
    let advisory: Advisory = serde_json::from_slice(payload).ok()?;
    let id = advisory.client.name.strip_prefix(NODE_CONNECTION_PREFIX)?;
    (!id.is_empty()).then(|| (id.to_string(), advisory.reason))
}

pub async fn follow(engine: Arc<Engine>, sys: Client, shutdown: CancellationToken) {
    let mut sub = match sys.subscribe(DISCONNECT_ADVISORIES).await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(error = %e, "cannot follow connection advisories: failures are detected from missed heartbeats alone");
            return;
        }
    };
    info!("following nats connection advisories: a node whose connection drops is suspect at once");
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Some((id, reason)) = node_of(&message.payload) else {
            continue;
        };
        if engine.lock().on_disconnect(&id, Instant::now()) {
            info!(node_id = %id, reason = %reason, "node connection closed");
            engine.kick(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisories_name_nodes() {
        let payload = br#"{"type":"io.nats.server.advisory.v1.client_disconnect","client":{"acc":"APP","name":"shoal-node:n-1","user":"app"},"reason":"Client Closed"}"#;
        assert_eq!(
            node_of(payload),
            Some(("n-1".to_string(), "Client Closed".to_string()))
        );
        let other = br#"{"client":{"name":"shoal-registry:r1"},"reason":"x"}"#;
        assert_eq!(node_of(other), None);
        assert_eq!(node_of(b"nonsense"), None);
    }
}
