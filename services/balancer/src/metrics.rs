//! The balancer's Prometheus metrics (`shoal_balancer_…`): how long selections
//! take, timed in the handlers; selections by strategy and the nodes it knows, read
//! from its view (which counts them anyway) when scraped.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use shoal_protocol::Strategy;
use shoal_runtime::metrics::{Histogram, Metrics, Sample, latency_buckets};

use crate::service::Shared;

/// What the balancer counts as it works.
pub(crate) struct BalancerMetrics {
    /// `select` requests, and `select.batch` requests.
    pub select_seconds: [Histogram; 2],
    pub nats_errors: Counter,
}

impl BalancerMetrics {
    pub(crate) fn register(metrics: &mut Metrics) -> BalancerMetrics {
        BalancerMetrics {
            select_seconds: metrics.seconds_by(
                "select_duration",
                "Time to answer a select request (one pick) or a select.batch request (many), from decoding it to its answer",
                "request",
                ["select", "select_batch"],
                latency_buckets(),
            ),
            nats_errors: metrics.nats_errors(),
        }
    }
}

/// Selections and nodes, read from the view when scraped.
pub(crate) fn register_view(metrics: &mut Metrics, shared: &Arc<Shared>) {
    let s = shared.clone();
    metrics.counters_fn(
        "selections",
        "Nodes picked, by the strategy that picked them",
        "strategy",
        move || {
            let view = s.view();
            Strategy::ALL
                .iter()
                .map(|strategy| {
                    let n = view.counters.picked_by(*strategy);
                    Sample::new(strategy.as_str(), n as f64)
                })
                .collect()
        },
    );
    let s = shared.clone();
    metrics.counter_fn(
        "no_capacity",
        "Selections refused because no node could take the work",
        move || s.view().counters.no_capacity as f64,
    );
    let s = shared.clone();
    metrics.gauge_fn(
        "nodes",
        "Nodes this replica knows from the membership",
        move || s.view().len() as f64,
    );
    let s = shared.clone();
    metrics.gauge_fn(
        "eligible_nodes",
        "Nodes that can take work now (online, not draining, below their agent limit)",
        move || s.view().eligible() as f64,
    );
    let s = shared.clone();
    metrics.gauges_fn(
        "strategy",
        "1 for the strategy this replica follows, 0 for the others",
        "strategy",
        move || {
            let current = s.view().strategy();
            Strategy::ALL
                .iter()
                .map(|&st| Sample::new(st.as_str(), f64::from(u8::from(st == current))))
                .collect()
        },
    );
}
