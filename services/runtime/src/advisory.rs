//! NATS' connection advisories, read on a system-account connection: the server
//! reports a closed client connection at once, with the name the client gave it
//! (see `shoal_protocol::connection`) and the reason.

use std::future::Future;

use async_nats::Client;
use futures::StreamExt;
use serde::Deserialize;
use shoal_protocol::ServiceKind;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{NatsArgs, SystemAccountArgs};
use crate::error::ConnectError;

/// NATS' own subject for client disconnect advisories, any account.
pub const DISCONNECT_ADVISORIES: &str = "$SYS.ACCOUNT.*.DISCONNECT";

/// A closed client connection, as an advisory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The name the client gave its connection.
    pub name: String,
    pub reason: String,
}

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

/// Reads a disconnect advisory; None if it is not one.
pub fn disconnect(payload: &[u8]) -> Option<Disconnect> {
    let advisory: Advisory = serde_json::from_slice(payload).ok()?;
    Some(Disconnect {
        name: advisory.client.name,
        reason: advisory.reason,
    })
}

/// The system-account connection of `kind`'s instance `instance_id`, if `sys` has
/// credentials.
pub async fn system_client(
    sys: &SystemAccountArgs,
    nats: &NatsArgs,
    kind: ServiceKind,
    instance_id: &str,
) -> Result<Option<Client>, ConnectError> {
    if !sys.is_set() {
        return Ok(None);
    }
    let name = shoal_protocol::connection::system(kind, instance_id);
    crate::connect(&sys.nats_args(nats), &name).await.map(Some)
}

/// Calls `on` with every closed connection NATS reports, until `shutdown`. `what`
/// says in the log what the advisories are for.
pub async fn follow<F, Fut>(sys: Client, what: &str, shutdown: CancellationToken, mut on: F)
where
    F: FnMut(Disconnect) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut sub = match sys.subscribe(DISCONNECT_ADVISORIES).await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(error = %e, what, "cannot follow connection advisories");
            return;
        }
    };
    info!(what, "following nats connection advisories");
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        if let Some(closed) = disconnect(&message.payload) {
            on(closed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisories_name_the_connection_and_the_reason() {
        let payload = br#"{"type":"io.nats.server.advisory.v1.client_disconnect","client":{"acc":"APP","name":"shoal-node:n-1","user":"app"},"reason":"Client Closed"}"#;
        assert_eq!(
            disconnect(payload),
            Some(Disconnect {
                name: "shoal-node:n-1".into(),
                reason: "Client Closed".into()
            })
        );
        assert_eq!(disconnect(b"{}"), None);
    }
}
