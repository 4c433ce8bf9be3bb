//! Load generation and measurement: closed loop at a concurrency, open loop at a
//! rate with latency taken from each request's *scheduled* send time (corrected for
//! coordinated omission, as wrk2 does), hdrhistogram percentiles, errors by code and
//! throughput over time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// How much work a run does.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    Requests(u64),
    Duration(Duration),
}

/// How load is offered.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// This many requests in flight at all times.
    Closed { concurrency: usize },
    /// Requests started at this rate per second, whatever the latency.
    Open { rate: f64 },
}

/// One operation's outcome: `Err(code)` is counted under that code.
pub type OpResult = Result<(), String>;

/// Latency and errors of a run, shared by its tasks.
pub struct Recorder {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
    /// Completions per 100 ms since the start.
    timeline: Vec<u64>,
    started: Instant,
}

const BUCKET: Duration = Duration::from_millis(100);

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            histogram: Histogram::new_with_bounds(1, 120_000_000, 3)
                .expect("valid histogram bounds"),
            errors: BTreeMap::new(),
            ok: 0,
            timeline: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn record(&mut self, latency: Duration, result: &OpResult) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let micros = (latency.as_micros() as u64).clamp(1, 120_000_000);
                self.histogram.saturating_record(micros);
            }
            Err(code) => *self.errors.entry(code.clone()).or_default() += 1,
        }
        let bucket = (self.started.elapsed().as_millis() / BUCKET.as_millis()) as usize;
        if self.timeline.len() <= bucket {
            self.timeline.resize(bucket + 1, 0);
        }
        self.timeline[bucket] += 1;
    }

    pub fn measurement(&self, name: &str, elapsed: Duration) -> Measurement {
        let h = &self.histogram;
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        Measurement {
            name: name.to_string(),
            ok: self.ok,
            errors: self.errors.clone(),
            seconds: elapsed.as_secs_f64(),
            per_sec: self.ok as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_us: q(0.50),
            p95_us: q(0.95),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
            timeline_per_sec: self.timeline.iter().map(|c| c * 10).collect(),
            latency_buckets: latency_buckets(h),
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// Log-spaced latency buckets (upper bound µs, count) for the picture.
fn latency_buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_log(10, 1.5)
        .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
        .collect()
}

/// The figures of one measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub name: String,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    pub per_sec: f64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline_per_sec: Vec<u64>,
    #[serde(skip)]
    pub latency_buckets: Vec<(u64, u64)>,
}

impl Measurement {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn progress(limit: Limit, label: &str) -> ProgressBar {
    let bar = match limit {
        Limit::Requests(n) => ProgressBar::new(n),
        Limit::Duration(d) => ProgressBar::new(d.as_millis() as u64),
    };
    let unit = match limit {
        Limit::Requests(_) => "{pos}/{len} requests",
        Limit::Duration(_) => "{pos}/{len} ms",
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {label:<28} [{{bar:30}}] {unit} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs `op(i)` for i = 0, 1, … under `load` until `limit`; returns the measurement.
/// `op` gets a sequence number so each request can be distinct (agent names, ids).
pub async fn run<F, Fut>(name: &str, load: Load, limit: Limit, op: F) -> Measurement
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OpResult> + Send + 'static,
{
    let bar = progress(limit, name);
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let op = Arc::new(op);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = move |i: u64| match limit {
        Limit::Requests(n) => i >= n,
        Limit::Duration(d) => started.elapsed() >= d,
    };
    match load {
        Load::Closed { concurrency } => {
            let mut workers = Vec::new();
            for _ in 0..concurrency.max(1) {
                let (op, recorder, next, bar) =
                    (op.clone(), recorder.clone(), next.clone(), bar.clone());
                workers.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if done(i) {
                            break;
                        }
                        let sent = Instant::now();
                        let result = op(i).await;
                        recorder.lock().unwrap().record(sent.elapsed(), &result);
                        tick(&bar, limit, started);
                    }
                }));
            }
            for w in workers {
                let _ = w.await;
            }
        }
        Load::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut tasks = tokio::task::JoinSet::new();
            let mut i = 0u64;
            while !done(i) {
                let scheduled = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let (op, recorder, bar) = (op.clone(), recorder.clone(), bar.clone());
                tasks.spawn(async move {
                    let result = op(i).await;
                    // From the scheduled time: a stall delays later requests' sends,
                    // and that delay is latency the user would have seen.
                    recorder
                        .lock()
                        .unwrap()
                        .record(scheduled.elapsed(), &result);
                    tick(&bar, limit, started);
                });
                i += 1;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    recorder.lock().unwrap().measurement(name, elapsed)
}

fn tick(bar: &ProgressBar, limit: Limit, started: Instant) {
    match limit {
        Limit::Requests(_) => bar.inc(1),
        Limit::Duration(_) => bar.set_position(started.elapsed().as_millis() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_loop_runs_exactly_the_requested_count_and_counts_errors() {
        let m = run(
            "t",
            Load::Closed { concurrency: 4 },
            Limit::Requests(100),
            |i| async move {
                if i % 10 == 0 {
                    Err("odd".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(m.ok, 90);
        assert_eq!(m.errors.get("odd"), Some(&10));
    }

    #[tokio::test]
    async fn open_loop_charges_a_stall_to_the_requests_behind_it() {
        // One slow request at the start; open loop measures from scheduled send times,
        // so the p99 reflects the stall even though most requests were instant.
        let m = run(
            "t",
            Load::Open { rate: 1000.0 },
            Limit::Requests(200),
            |i| async move {
                if i == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(())
            },
        )
        .await;
        assert_eq!(m.ok, 200);
        assert!(m.max_us >= 50_000, "max {}", m.max_us);
    }
}
