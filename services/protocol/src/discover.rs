//! Service discovery through NATS micro's `$SRV.PING`: every running Shoal process
//! answers with its service name, version and instance id, the way `nats micro ls`
//! lists them.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::ShoalClient;
use crate::client::ClientError;

/// One running service instance, as it answered `$SRV.PING`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceInstance {
    /// The micro service name (`shoal-registry`, …), also the binary name.
    pub name: String,
    /// The instance id it was started with (`--instance-id`).
    pub instance_id: String,
    pub version: String,
    /// NATS micro's own id for this service registration.
    pub micro_id: String,
}

#[derive(Deserialize)]
struct Pong {
    name: String,
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

impl ShoalClient {
    /// Every instance answering `$SRV.PING` (or `$SRV.PING.<service>` for one
    /// service) within `wait`, sorted by name and instance id. Answers that are not
    /// micro ping replies are skipped.
    pub async fn discover(
        &self,
        service: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<ServiceInstance>, ClientError> {
        let subject = match service {
            Some(name) => format!("$SRV.PING.{name}"),
            None => "$SRV.PING".to_string(),
        };
        let nats = self.nats();
        let inbox = nats.new_inbox();
        // Subscribing or publishing fails only with the connection: reported as a
        // failed request on the ping subject.
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Nats {
            subject: subject.clone(),
            source: async_nats::RequestError::with_source(async_nats::RequestErrorKind::Other, e),
        };
        let mut replies = nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(e.into()))?;
        nats.publish_with_reply(subject.clone(), inbox, "".into())
            .await
            .map_err(|e| failed(e.into()))?;
        let deadline = Instant::now() + wait;
        let mut found = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), replies.next()).await {
            if let Ok(pong) = serde_json::from_slice::<Pong>(&msg.payload) {
                found.push(ServiceInstance {
                    instance_id: pong
                        .metadata
                        .get(crate::subjects::INSTANCE_ID_METADATA)
                        .cloned()
                        .unwrap_or_else(|| pong.id.clone()),
                    name: pong.name,
                    version: pong.version,
                    micro_id: pong.id,
                });
            }
        }
        found.sort();
        Ok(found)
    }
}
