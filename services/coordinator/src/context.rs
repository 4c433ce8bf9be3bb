//! What every part of a running coordinator shares.

use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectStore;
use async_nats::jetstream::{self, stream};
use shoal_protocol::{ShoalClient, Subjects};

use crate::config::Config;
use crate::history::HistoryStore;
use crate::lease::LeaseHandle;
use crate::log::Replica;
use crate::members_feed::MembersFeed;
use crate::metrics::CoordinatorMetrics;
use crate::picker::Picker;
use crate::rebalance_settings::RebalanceConfig;

pub struct Ctx {
    pub cfg: Config,
    /// This replica's instance id (its `coordinator_id`).
    pub me: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    /// Requests to the balancer, the registry and other coordinators.
    pub peers: ShoalClient,
    /// The balancer's picks, batched.
    pub picker: Picker,
    pub stream: stream::Stream,
    pub replica: Replica,
    pub members: MembersFeed,
    /// The rebalance settings, followed in `shoal_config`.
    pub rebalance: RebalanceConfig,
    pub lease: LeaseHandle,
    pub history: Option<Arc<HistoryStore>>,
    /// The snapshot bucket; the leader compacts the log into it when `compaction`.
    pub snapshots: ObjectStore,
    /// The log may be purged below a snapshot (its stream allows purges and
    /// `--snapshot-interval` is not 0).
    pub compaction: bool,
    pub metrics: Arc<CoordinatorMetrics>,
}
