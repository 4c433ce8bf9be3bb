//! Prometheus metrics, one registry per service process, written once for every
//! service:
//!
//! - [`Metrics`]: the registry a service fills at start (names begin
//!   `shoal_<service>_`), with what every service reports already in it: its build,
//!   its NATS connection (connected, reconnects, messages) and its NATS errors;
//! - [`Histogram`]: observed with atomics alone, for the hot paths;
//! - [`Outcomes`]: a request counter by outcome (`ok` or the error code), each
//!   child resolved once so counting costs one atomic add;
//! - [`Metrics::gauge_fn`] and friends: values read from state the service keeps
//!   anyway, at scrape time, so the hot path pays nothing for them;
//! - [`serve`]: answers `<prefix>.<service>.instance.<id>.metrics` and, with
//!   `--metrics-listen`, `GET /metrics` over HTTP;
//! - [`gather()`]: every running instance's metrics as one OpenMetrics text.

mod exposition;
pub mod gather;
mod histogram;
mod readers;
pub mod serve;

use std::fmt;
use std::sync::Arc;

use async_nats::Client;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use shoal_protocol::{ErrorCode, ServiceKind, ShoalError};

pub use exposition::{ExpositionError, merge};
pub use gather::{GatherError, GatherOptions, Gathered, Scrape, ScrapeError, gather};
pub use histogram::Histogram;
pub use readers::Sample;
pub use serve::MetricsError;

/// The content type of an OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets for request latencies, in seconds: 0.25 ms to about 4 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 15)
}

/// One service process's metrics, filled at start, then served read-only.
pub struct Metrics {
    kind: ServiceKind,
    registry: Registry,
    nats_errors: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("kind", &self.kind).finish()
    }
}

impl Metrics {
    /// The registry of a `kind` process whose NATS connection is `client`.
    pub fn new(kind: ServiceKind, client: &Client) -> Metrics {
        let mut registry = Registry::with_prefix(format!("shoal_{}", kind.token()));
        registry.register(
            "build",
            "The version of this process",
            Info::new([("version", crate::VERSION)]),
        );
        let nats_errors = Counter::default();
        registry.register(
            "nats_errors",
            "NATS operations this process saw fail: publishes, KV and stream reads and writes, log appends",
            nats_errors.clone(),
        );
        registry.register_collector(Box::new(readers::NatsConnection::new(client)));
        let mut metrics = Metrics {
            kind,
            registry,
            nats_errors,
        };
        metrics.counter_fn(
            "nats_slow_consumer_drops",
            "Messages this process's NATS client dropped because a subscription was not read fast enough",
            || crate::slow_consumer_drops() as f64,
        );
        metrics
    }

    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// The `nats_errors_total` counter, for the places that see NATS fail.
    pub fn nats_errors(&self) -> Counter {
        self.nats_errors.clone()
    }

    /// A counter; its samples are named `<name>_total`.
    pub fn counter(&mut self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.registry.register(name, help, counter.clone());
        counter
    }

    /// A whole-number gauge.
    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.registry.register(name, help, gauge.clone());
        gauge
    }

    /// A histogram of durations; its name gets the `_seconds` unit suffix.
    pub fn seconds(
        &mut self,
        name: &str,
        help: &str,
        buckets: impl Iterator<Item = f64>,
    ) -> Histogram {
        let histogram = Histogram::new(buckets);
        self.registry
            .register_with_unit(name, help, Unit::Seconds, histogram.clone());
        histogram
    }

    /// A histogram of plain numbers (sizes, counts).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: impl Iterator<Item = f64>,
    ) -> Histogram {
        let histogram = Histogram::new(buckets);
        self.registry.register(name, help, histogram.clone());
        histogram
    }

    /// Duration histograms with one label, one child per value in `values`, each
    /// resolved now (observing costs no lookup).
    pub fn seconds_by<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: [&'static str; N],
        buckets: impl Iterator<Item = f64>,
    ) -> [Histogram; N] {
        let buckets: Vec<f64> = buckets.collect();
        let family =
            Family::<[(&'static str, &'static str); 1], Histogram, _>::new_with_constructor(
                move || Histogram::new(buckets.iter().copied()),
            );
        let children = values.map(|v| family.get_or_create_owned(&[(label, v)]));
        self.registry
            .register_with_unit(name, help, Unit::Seconds, family);
        children
    }

    /// Counters with one label, one child per value in `values`, each resolved now.
    pub fn counters_by<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: [&'static str; N],
    ) -> [Counter; N] {
        let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let children = values.map(|v| family.get_or_create_owned(&[(label, v)]));
        self.registry.register(name, help, family);
        children
    }

    /// A request counter by outcome (see [`Outcomes`]).
    pub fn outcomes(&mut self, name: &str, help: &str) -> Outcomes {
        let [ok, rest @ ..] = self.counters_by(name, help, "outcome", outcome_labels());
        Outcomes {
            ok,
            errors: Arc::new(rest),
        }
    }

    /// A gauge read at scrape time.
    pub fn gauge_fn<F>(&mut self, name: &'static str, help: &'static str, read: F)
    where
        F: Fn() -> f64 + Send + Sync + 'static,
    {
        self.registry
            .register_collector(Box::new(readers::Reader::gauge(
                name,
                help,
                None,
                move || vec![Sample::single(read())],
            )));
    }

    /// A counter read at scrape time from a count the service keeps.
    pub fn counter_fn<F>(&mut self, name: &'static str, help: &'static str, read: F)
    where
        F: Fn() -> f64 + Send + Sync + 'static,
    {
        self.registry
            .register_collector(Box::new(readers::Reader::counter(
                name,
                help,
                None,
                move || vec![Sample::single(read())],
            )));
    }

    /// Gauges with one label, read at scrape time: `read` gives (label value, value).
    pub fn gauges_fn<F>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: F,
    ) where
        F: Fn() -> Vec<Sample> + Send + Sync + 'static,
    {
        self.registry
            .register_collector(Box::new(readers::Reader::gauge(
                name,
                help,
                Some(label),
                read,
            )));
    }

    /// Counters with one label, read at scrape time from counts the service keeps.
    pub fn counters_fn<F>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: F,
    ) where
        F: Fn() -> Vec<Sample> + Send + Sync + 'static,
    {
        self.registry
            .register_collector(Box::new(readers::Reader::counter(
                name,
                help,
                Some(label),
                read,
            )));
    }

    /// The registry itself, for what the helpers above do not cover.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The OpenMetrics text exposition, ending with `# EOF`.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Runs `f`, observing how long it took in `histogram`.
pub fn timed<T>(histogram: &Histogram, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = f();
    histogram.observe(started.elapsed().as_secs_f64());
    result
}

/// The `outcome` label's values: `ok`, then every error code in [`ErrorCode::ALL`]'s order.
fn outcome_labels() -> [&'static str; 1 + ErrorCode::ALL.len()] {
    std::array::from_fn(|i| match i {
        0 => "ok",
        i => ErrorCode::ALL[i - 1].as_str(),
    })
}

/// Requests counted by outcome: `ok` or the error code they were answered with.
#[derive(Clone, Debug)]
pub struct Outcomes {
    ok: Counter,
    errors: Arc<[Counter; ErrorCode::ALL.len()]>,
}

impl Outcomes {
    /// Counts one request answered with `result`.
    pub fn count<T>(&self, result: &Result<T, ShoalError>) {
        match result {
            Ok(_) => self.ok.inc(),
            Err(e) => self.errors[error_index(e.code)].inc(),
        };
    }
}

fn error_index(code: ErrorCode) -> usize {
    ErrorCode::ALL
        .iter()
        .position(|&c| c == code)
        .expect("ErrorCode::ALL lists every code")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_follow_the_error_codes() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(outcome_labels()[i + 1], code.as_str());
            assert_eq!(error_index(*code), i);
        }
    }
}
