//! The rebalance settings every replica follows: the `coordinator.rebalance` key of
//! `shoal_config`, watched from start, so a change made through any replica (or
//! written to the bucket by hand) reaches the leader at once and survives restarts.

use async_nats::jetstream::kv;
use shoal_protocol::{
    CONFIG_BUCKET, REBALANCE_KEY, RebalanceSettings, RebalanceUpdate, ShoalError, Validate, decode,
};
use shoal_runtime::kv::{BucketEvent, follow_bucket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Tries of a settings update that lost a race with another writer.
const UPDATE_TRIES: usize = 5;

#[derive(Clone)]
pub struct RebalanceConfig {
    store: kv::Store,
    settings: watch::Receiver<RebalanceSettings>,
}

impl RebalanceConfig {
    /// Follows the settings in `store` (the config bucket) until `shutdown`.
    pub fn follow(store: kv::Store, shutdown: CancellationToken) -> RebalanceConfig {
        let (tx, settings) = watch::channel(RebalanceSettings::default());
        let watched = store.clone();
        tokio::spawn(async move {
            follow_bucket(&watched, &shutdown, |event| {
                let BucketEvent::Entry(entry) = event else {
                    return;
                };
                if entry.key != REBALANCE_KEY {
                    return;
                }
                let next = match entry.operation {
                    kv::Operation::Put => match decode::<RebalanceSettings>(&entry.value) {
                        Ok(s) => s,
                        Err(e) => {
                            return warn!(error = %e.message, "stored rebalance settings are not valid; ignored");
                        }
                    },
                    kv::Operation::Delete | kv::Operation::Purge => RebalanceSettings::default(),
                };
                tx.send_if_modified(|current| {
                    let changed = *current != next;
                    if changed {
                        info!(
                            enabled = next.enabled,
                            max_moves_per_minute = next.max_moves_per_minute,
                            threshold = next.threshold,
                            "rebalance settings"
                        );
                        *current = next;
                    }
                    changed
                });
            })
            .await
        });
        RebalanceConfig { store, settings }
    }

    pub fn current(&self) -> RebalanceSettings {
        *self.settings.borrow()
    }

    /// Signals every change of the settings.
    pub fn changes(&self) -> watch::Receiver<RebalanceSettings> {
        self.settings.clone()
    }

    /// Writes `update` over the stored settings (compare-and-set, so two updates at
    /// once both count); the settings as stored.
    pub async fn update(&self, update: &RebalanceUpdate) -> Result<RebalanceSettings, ShoalError> {
        update.validate()?;
        let unsaved = |e: &dyn std::fmt::Display| {
            ShoalError::unavailable(format!(
                "rebalance settings not saved to {CONFIG_BUCKET}: {e}"
            ))
        };
        for _ in 0..UPDATE_TRIES {
            let entry = self
                .store
                .entry(REBALANCE_KEY)
                .await
                .map_err(|e| unsaved(&e))?;
            let (current, revision) = match &entry {
                // A stored value that does not decode is replaced: the update is
                // applied over the defaults.
                Some(e) if e.operation == kv::Operation::Put => (
                    decode::<RebalanceSettings>(&e.value)
                        .unwrap_or_else(|_| RebalanceSettings::default()),
                    Some(e.revision),
                ),
                Some(e) => (RebalanceSettings::default(), Some(e.revision)),
                None => (RebalanceSettings::default(), None),
            };
            let next = update.apply(current);
            let value = serde_json::to_vec(&next).map_err(|e| {
                ShoalError::internal(format!("rebalance settings could not be encoded: {e}"))
            })?;
            // Another writer came first: read its settings and apply ours on top.
            match revision {
                Some(revision) => match self
                    .store
                    .update(REBALANCE_KEY, value.into(), revision)
                    .await
                {
                    Ok(_) => return Ok(next),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(unsaved(&e)),
                },
                None => match self.store.create(REBALANCE_KEY, value.into()).await {
                    Ok(_) => return Ok(next),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unsaved(&e)),
                },
            }
        }
        Err(ShoalError::conflict(
            "rebalance settings changed under this update too often: retry",
        ))
    }
}
