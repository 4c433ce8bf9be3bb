//! Metrics read at scrape time rather than counted as things happen: values a
//! service keeps anyway (membership by status, the balancer's selections, the
//! leader's term) and the NATS client's own statistics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::Client;
use async_nats::connection::State;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One value read at scrape time, with its label value (ignored by an unlabelled
/// metric).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub label: &'static str,
    pub value: f64,
}

impl Sample {
    pub fn new(label: &'static str, value: f64) -> Sample {
        Sample { label, value }
    }

    pub(crate) fn single(value: f64) -> Sample {
        Sample { label: "", value }
    }
}

type Read = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// A gauge or counter (family) whose values `read` gives at scrape time.
pub(crate) struct Reader {
    name: &'static str,
    help: String,
    label: Option<&'static str>,
    counter: bool,
    read: Read,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").field("name", &self.name).finish()
    }
}

impl Reader {
    pub(crate) fn gauge(
        name: &'static str,
        help: &str,
        label: Option<&'static str>,
        read: impl Fn() -> Vec<Sample> + Send + Sync + 'static,
    ) -> Reader {
        Reader::new(name, help, label, false, Arc::new(read))
    }

    pub(crate) fn counter(
        name: &'static str,
        help: &str,
        label: Option<&'static str>,
        read: impl Fn() -> Vec<Sample> + Send + Sync + 'static,
    ) -> Reader {
        Reader::new(name, help, label, true, Arc::new(read))
    }

    fn new(
        name: &'static str,
        help: &str,
        label: Option<&'static str>,
        counter: bool,
        read: Read,
    ) -> Reader {
        Reader {
            name,
            // As the registry does for the metrics registered with it.
            help: format!("{help}."),
            label,
            counter,
            read,
        }
    }
}

impl Collector for Reader {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let kind = if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let mut metric = encoder.encode_descriptor(self.name, &self.help, None, kind)?;
        let samples = (self.read)();
        let Some(key) = self.label else {
            // An unlabelled metric has one sample.
            return match samples.first() {
                Some(sample) => encode_value(metric, self.counter, sample.value),
                None => Ok(()),
            };
        };
        for sample in &samples {
            let labels = [(key, sample.label)];
            encode_value(metric.encode_family(&labels)?, self.counter, sample.value)?;
        }
        Ok(())
    }
}

fn encode_value(encoder: MetricEncoder<'_>, counter: bool, value: f64) -> Result<(), fmt::Error> {
    match (counter, whole(value)) {
        (true, Some(n)) => ConstCounter::new(n.unsigned_abs()).encode(encoder),
        (true, None) => ConstCounter::new(value).encode(encoder),
        (false, Some(n)) => ConstGauge::new(n).encode(encoder),
        (false, None) => ConstGauge::new(value).encode(encoder),
    }
}

/// `value` as a whole number, when it is one (counts print as `3`, not `3.0`).
fn whole(value: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (value.fract() == 0.0 && value.abs() < EXACT).then_some(value as i64)
}

/// The NATS client's connection: connected now, reconnects, messages in and out.
pub(crate) struct NatsConnection {
    client: Client,
}

impl fmt::Debug for NatsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NatsConnection")
    }
}

impl NatsConnection {
    pub(crate) fn new(client: &Client) -> NatsConnection {
        NatsConnection {
            client: client.clone(),
        }
    }
}

impl Collector for NatsConnection {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let stats = self.client.statistics();
        let connected = i64::from(self.client.connection_state() == State::Connected);
        ConstGauge::new(connected).encode(encoder.encode_descriptor(
            "nats_connected",
            "1 while this process is connected to a NATS server, 0 while it reconnects.",
            None,
            MetricType::Gauge,
        )?)?;
        // The first connection is no reconnection.
        let reconnects = stats.connects.load(Ordering::Relaxed).saturating_sub(1);
        for (name, help, value) in [
            (
                "nats_reconnects",
                "Times this process connected to NATS again after losing its connection.",
                reconnects,
            ),
            (
                "nats_received_messages",
                "Messages this process received from NATS.",
                stats.in_messages.load(Ordering::Relaxed),
            ),
            (
                "nats_sent_messages",
                "Messages this process sent to NATS.",
                stats.out_messages.load(Ordering::Relaxed),
            ),
        ] {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}
