//! The registry's Prometheus metrics (`shoal_registry_…`): what nodes send it,
//! how fast silence becomes suspect or offline, and membership by status. Counted
//! where things happen, with atomics; membership is read at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shoal_protocol::{NodeEventKind, NodeStatus};
use shoal_runtime::metrics::{Histogram, Metrics, Sample, latency_buckets};

use crate::engine::Engine;

/// Seconds from a node's last heartbeat to the verdict: around the suspect and
/// offline thresholds (2 s and 3 s by default), and far past them.
const DETECTION_BUCKETS: [f64; 14] = [
    0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 7.5, 10.0, 30.0, 60.0,
];

/// What the registry counts as it works.
#[derive(Clone)]
pub struct RegistryMetrics {
    pub heartbeats: Counter,
    pub announces: Counter,
    pub leaves: Counter,
    pub rejected: Counter,
    /// Last heartbeat to suspect, and to offline.
    detection: Arc<[Histogram; 2]>,
    /// Membership writes planned and not yet finished (queued for a permit, or in
    /// flight): a join storm shows here first.
    pub writes_pending: Gauge,
    /// One membership write's compare-and-set, from its start to the bucket's answer.
    pub write_seconds: Histogram,
    pub nats_errors: Counter,
    /// Heartbeat partitions this replica judges.
    pub partitions_owned: Gauge,
    /// Ticks that judged nothing because heartbeats were queued unread.
    pub judgement_postponed: Counter,
    pub heartbeats_unmapped: Counter,
}

impl RegistryMetrics {
    pub fn register(metrics: &mut Metrics) -> RegistryMetrics {
        RegistryMetrics {
            heartbeats: metrics.counter(
                "heartbeats_received",
                "Heartbeats received from nodes and accepted",
            ),
            announces: metrics.counter(
                "announces_received",
                "Announces received from nodes and accepted",
            ),
            leaves: metrics.counter(
                "leaves_received",
                "Goodbyes received from nodes and accepted",
            ),
            rejected: metrics.counter(
                "node_messages_rejected",
                "Node messages (heartbeats, announces, goodbyes) refused as malformed or naming another node",
            ),
            detection: Arc::new(metrics.seconds_by(
                "detection",
                "Time from a node's last heartbeat to this replica's verdict that it is suspect or offline (the write that won)",
                "status",
                [NodeStatus::Suspect.as_str(), NodeStatus::Offline.as_str()],
                DETECTION_BUCKETS.into_iter(),
            )),
            writes_pending: metrics.gauge(
                "membership_writes_pending",
                "Membership writes planned and not finished: waiting for one of the bucket's write slots, or in flight",
            ),
            write_seconds: metrics.seconds(
                "membership_write_duration",
                "Time of one membership write (compare-and-set on the members bucket), from its start to the bucket's answer",
                latency_buckets(),
            ),
            nats_errors: metrics.nats_errors(),
            judgement_postponed: metrics.counter(
                "judgement_postponed",
                "Ticks (10 a second) at which this replica judged no node because its heartbeat readers were over half an interval behind",
            ),
            heartbeats_unmapped: metrics.counter(
                "heartbeats_unmapped",
                "Heartbeats this partitioned replica received on a subject the nats-server did not map to the node's partition: the server's mapping is missing or has another partition count",
            ),
            partitions_owned: metrics.gauge(
                "partitions_owned",
                "Heartbeat partitions this replica judges (all of them when heartbeats are not partitioned)",
            ),
        }
    }

    /// A verdict of `kind` on a node last heard `silent` ago; other events are not
    /// detections.
    pub fn detected(&self, kind: NodeEventKind, silent: Duration) {
        let i = match kind {
            NodeEventKind::Suspect => 0,
            NodeEventKind::Offline => 1,
            _ => return,
        };
        self.detection[i].observe(silent.as_secs_f64());
    }
}

/// Membership by status, read from this replica's view when scraped.
pub fn register_membership(metrics: &mut Metrics, engine: &Arc<Engine>) {
    let engine = engine.clone();
    metrics.gauges_fn(
        "nodes",
        "Nodes in the membership by status, as this replica sees it",
        "status",
        move || {
            let counts = engine.lock().count_by_status();
            NodeStatus::ALL
                .iter()
                .zip(counts)
                .map(|(status, n)| Sample::new(status.as_str(), n as f64))
                .collect()
        },
    );
}
