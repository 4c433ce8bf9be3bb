//! The second failure signal: NATS reports a closed client connection on the system
//! account at once; a node whose connection (named `shoal-node:<id>`) closed is
//! suspect immediately, and missed heartbeats then confirm it offline.

use std::sync::Arc;
use std::time::Instant;

use async_nats::Client;
use shoal_runtime::advisory::{self, Disconnect};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::engine::Engine;

/// The node whose connection closed, and the reason given.
pub fn node_of(closed: &Disconnect) -> Option<(String, &str)> {
    let id = shoal_protocol::connection::node_of(&closed.name)?;
    Some((id.to_string(), &closed.reason))
}

pub async fn follow(engine: Arc<Engine>, sys: Client, shutdown: CancellationToken) {
    let what = "a node whose connection drops is suspect at once";
    advisory::follow(sys, what, shutdown, |closed| {
        if let Some((id, reason)) = node_of(&closed)
            && engine.lock().on_disconnect(&id, Instant::now())
        {
            info!(node_id = %id, reason = %reason, "node connection closed");
            engine.kick(&id);
        }
        std::future::ready(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisories_name_nodes() {
        let payload = br#"{"type":"io.nats.server.advisory.v1.client_disconnect","client":{"acc":"APP","name":"shoal-node:n-1","user":"app"},"reason":"Client Closed"}"#;
        let closed = advisory::disconnect(payload).unwrap();
        assert_eq!(node_of(&closed), Some(("n-1".into(), "Client Closed")));
        let service = advisory::disconnect(
            br#"{"client":{"name":"shoal-registry:r1"},"reason":"Client Closed"}"#,
        )
        .unwrap();
        assert_eq!(node_of(&service), None);
    }
}
