//! In-process selection benchmark: a synthetic cluster in a [`View`], timed
//! selections, no I/O. The loadtest binary calls [`select_throughput`]; the ignored
//! test `bench_select_10k_nodes` prints it for every strategy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shoal_protocol::{Node, SelectRequest, Strategy};

use crate::view::{Settings, View};

#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub strategy: Strategy,
    pub nodes: usize,
    pub selections: usize,
    /// Selections per second over the whole run.
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<13} nodes={} selections={} per_sec={:.0} p50={:?} p99={:?} max={:?}",
            self.strategy.as_str(),
            self.nodes,
            self.selections,
            self.per_sec,
            self.p50,
            self.p99,
            self.max
        )
    }
}

/// A node for tests and benchmarks: online, with the given load.
pub fn synthetic_node(
    id: &str,
    max_agents: u32,
    active_agents: u32,
    cpu: f64,
    memory: f64,
) -> Node {
    Node {
        active_agents,
        max_agents,
        cpu_usage: cpu,
        memory_usage: memory,
        uptime: "1m0s".to_string(),
        uptime_s: 60,
        services: vec!["agents".to_string()],
        labels: BTreeMap::from([("zone".to_string(), "z1".to_string())]),
        ..Node::example(id)
    }
}

/// A view of `nodes` online nodes with random load (0–80 % CPU and memory, 0–50 of
/// 100 agent slots), seeded so runs are comparable.
pub fn synthetic_view(nodes: usize, strategy: Strategy, seed: u64) -> View {
    let settings = Settings {
        strategy,
        ..Settings::default()
    };
    let mut view = View::with_seed(settings, seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Instant::now();
    for n in 0..nodes {
        let node = synthetic_node(
            &format!("node-{n:06}"),
            100,
            rng.random_range(0..50),
            rng.random_range(0.0..80.0),
            rng.random_range(0.0..80.0),
        );
        view.upsert(node, now);
    }
    view
}

/// Times a view taking in `nodes` nodes in random id order, as a balancer does
/// when it starts against a large cluster or the cluster joins all at once.
pub fn join_time(nodes: usize) -> Duration {
    let mut rng = StdRng::seed_from_u64(7);
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(&mut rng);
    let mut view = View::with_seed(Settings::default(), 7);
    let started = Instant::now();
    for n in order {
        let node = synthetic_node(&format!("node-{n:06}"), 100, 1, 10.0, 10.0);
        view.upsert(node, started);
    }
    started.elapsed()
}

/// Times `selections` selections under `strategy` on a view of `nodes` nodes. Every
/// pick is recorded as in flight, as in the service, so the indexes move as they do
/// under a real burst. Panics if a selection fails (the cluster has room for
/// `nodes × 50` picks).
pub fn select_throughput(nodes: usize, selections: usize, strategy: Strategy) -> BenchReport {
    let mut view = synthetic_view(nodes, strategy, 7);
    let request = SelectRequest::default();
    let mut latencies = Vec::with_capacity(selections);
    let started = Instant::now();
    for _ in 0..selections {
        let t = Instant::now();
        let reply = view.select(&request, t);
        latencies.push(t.elapsed());
        assert!(reply.is_ok(), "selection failed: {:?}", reply.err());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    BenchReport {
        strategy,
        nodes,
        selections,
        per_sec: selections as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        p50: at(0.50),
        p99: at(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}
