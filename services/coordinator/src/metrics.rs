//! The coordinator's Prometheus metrics (`shoal_coordinator_…`): write requests by
//! outcome and latency, the log's appends, leadership, and how far the Postgres
//! history trails the log. Counted where things happen, with atomics resolved at
//! start (nothing is allocated or looked up per request); leadership and the term
//! are read from the lease and the log's tail when scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use shoal_protocol::ShoalError;
use shoal_runtime::metrics::{Histogram, Metrics, Outcomes, latency_buckets};

use crate::context::Ctx;

/// What the coordinator counts as it works; cheap to clone (handles to atomics).
#[derive(Clone)]
pub struct CoordinatorMetrics {
    pub assigns: Outcomes,
    pub unassigns: Outcomes,
    pub moves: Outcomes,
    /// An assign request, from its arrival to its answer.
    pub assign_seconds: Histogram,
    pub append_seconds: Histogram,
    pub append_batch: Histogram,
    pub takeovers: Counter,
    /// Agents this replica moved, as leader, to even the cluster.
    pub rebalanced: Counter,
    pub postgres_errors: Counter,
    pub nats_errors: Counter,
    pub history: HistoryProgress,
}

impl CoordinatorMetrics {
    /// Registers the coordinator's metrics; the history's only `with_history`
    /// (a `--database-url` given).
    pub fn register(metrics: &mut Metrics, with_history: bool) -> CoordinatorMetrics {
        let history = HistoryProgress::default();
        if with_history {
            history.register(metrics);
        }
        CoordinatorMetrics {
            assigns: metrics.outcomes(
                "assigns",
                "Assign requests this replica answered, by outcome (ok or the error code)",
            ),
            unassigns: metrics.outcomes(
                "unassigns",
                "Unassign requests this replica answered, by outcome",
            ),
            moves: metrics.outcomes(
                "moves",
                "Move requests this replica answered, by outcome",
            ),
            assign_seconds: metrics.seconds(
                "assign_duration",
                "Time from an assign request's arrival at the leader to its answer",
                latency_buckets(),
            ),
            append_seconds: metrics.seconds(
                "log_append_duration",
                "Time from sending a record to the assignment log to the log confirming it",
                latency_buckets(),
            ),
            append_batch: metrics.histogram(
                "log_append_batch_changes",
                "Changes carried by one record appended to the assignment log (group commit)",
                exponential_buckets(1.0, 2.0, 9),
            ),
            takeovers: metrics.counter(
                "takeovers",
                "Terms this replica started as leader",
            ),
            rebalanced: metrics.counter(
                "rebalance_moves",
                "Agents this replica moved, as leader, to even the cluster (rebalanced)",
            ),
            postgres_errors: metrics.counter(
                "postgres_errors",
                "Postgres operations that failed: connections, migrations, history inserts and queries",
            ),
            nats_errors: metrics.nats_errors(),
            history,
        }
    }

    /// Counts one write request answered with `result` after `started`.
    pub fn assigned<T>(&self, started: Instant, result: &Result<T, ShoalError>) {
        self.assign_seconds.observe(started.elapsed().as_secs_f64());
        self.assigns.count(result);
    }
}

/// Leadership and term, read from the lease and the log's tail when scraped.
pub fn register_leadership(metrics: &mut Metrics, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    metrics.gauge_fn(
        "leader",
        "1 while this replica holds the leader lease, 0 otherwise",
        move || f64::from(u8::from(c.lease.is_leader())),
    );
    let c = ctx.clone();
    metrics.gauge_fn(
        "term",
        "The latest term (epoch) in the assignment log, as this replica's tail has read it",
        move || c.replica.read(|s| s.epoch()) as f64,
    );
}

/// How far the Postgres history trails the log, as this replica's share of the
/// history consumer sees it.
#[derive(Clone, Default)]
pub struct HistoryProgress {
    /// When the oldest record taken but not yet written was appended to the log
    /// (milliseconds since the Unix epoch); 0 when all taken are written.
    oldest_unwritten_ms: Arc<AtomicI64>,
    /// Log records not yet in Postgres, as of the last batch taken.
    behind: Gauge,
}

impl HistoryProgress {
    fn register(&self, metrics: &mut Metrics) {
        metrics.registry_mut().register(
            "history_records_behind",
            "Log records not yet written to Postgres (undelivered plus taken and unwritten), as of the last batch this replica took",
            self.behind.clone(),
        );
        let oldest = self.oldest_unwritten_ms.clone();
        metrics.gauge_fn(
            "history_lag_seconds",
            "How long the oldest log record this replica has taken but not yet written to Postgres has waited since its append; 0 when it has written all it took",
            move || match oldest.load(Ordering::Relaxed) {
                0 => 0.0,
                at => (chrono::Utc::now().timestamp_millis() - at).max(0) as f64 / 1000.0,
            },
        );
    }

    /// A batch taken: its oldest record appended at `oldest_ms`, `behind` records
    /// not in Postgres.
    pub fn taken(&self, oldest_ms: i64, behind: u64) {
        self.oldest_unwritten_ms
            .store(oldest_ms.max(1), Ordering::Relaxed);
        self.behind.set(i64::try_from(behind).unwrap_or(i64::MAX));
    }

    /// The batch is written; `behind` records remain.
    pub fn written(&self, behind: u64) {
        self.oldest_unwritten_ms.store(0, Ordering::Relaxed);
        self.behind.set(i64::try_from(behind).unwrap_or(i64::MAX));
    }
}
