//! How evenly agents sit on the nodes that can take work, kept up to date node by
//! node as placements change (no scan of every node per change): max − min agents
//! per node, the standard deviation of agents per node, and of the nodes' estimated
//! load. Agent figures are exact (integer sums); load sums are floating point.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The nodes counted, by their agents and estimated load.
#[derive(Debug, Default)]
pub struct Spread {
    /// Agents per node → how many counted nodes have that many.
    counts: BTreeMap<u32, usize>,
    nodes: u64,
    sum: u128,
    squares: u128,
    load_sum: f64,
    load_squares: f64,
}

impl Spread {
    pub fn add(&mut self, agents: u32, load: f64) {
        *self.counts.entry(agents).or_default() += 1;
        self.nodes += 1;
        self.sum += u128::from(agents);
        self.squares += u128::from(agents) * u128::from(agents);
        self.load_sum += load;
        self.load_squares += load * load;
    }

    /// Takes out a node [`Spread::add`] counted with these figures.
    pub fn remove(&mut self, agents: u32, load: f64) {
        if let Some(n) = self.counts.get_mut(&agents) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&agents);
            }
        }
        self.nodes = self.nodes.saturating_sub(1);
        self.sum = self.sum.saturating_sub(u128::from(agents));
        self.squares = self
            .squares
            .saturating_sub(u128::from(agents) * u128::from(agents));
        self.load_sum -= load;
        self.load_squares -= load * load;
        if self.nodes == 0 {
            (self.load_sum, self.load_squares) = (0.0, 0.0);
        }
    }

    /// The figures now, at `at` (all zero while no node counts).
    pub fn sample(&self, at: DateTime<Utc>) -> Sample {
        let (Some((&min, _)), Some((&max, _))) =
            (self.counts.first_key_value(), self.counts.last_key_value())
        else {
            return Sample {
                at,
                nodes: 0,
                spread: 0,
                stddev_agents: 0.0,
                stddev_load: 0.0,
            };
        };
        let n = u128::from(self.nodes);
        // Population variance, exact: (n·Σx² − (Σx)²) / n².
        let variance = (n * self.squares - self.sum * self.sum) as f64 / (n * n) as f64;
        let nf = self.nodes as f64;
        let mean_load = self.load_sum / nf;
        let load_variance = (self.load_squares / nf - mean_load * mean_load).max(0.0);
        Sample {
            at,
            nodes: self.nodes,
            spread: max - min,
            stddev_agents: variance.sqrt(),
            stddev_load: load_variance.sqrt(),
        }
    }
}

/// The spread after one change of the history.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Nodes counted: those that could take work.
    pub nodes: u64,
    /// Max − min agents per node.
    pub spread: u32,
    pub stddev_agents: f64,
    pub stddev_load: f64,
}

/// A figure over the whole replay: its mean over the history's changes, its
/// largest value and its value at the end.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Figure {
    pub mean: f64,
    pub max: f64,
    pub last: f64,
}

impl Figure {
    pub fn of(values: impl Iterator<Item = f64>) -> Figure {
        let (mut n, mut sum, mut max, mut last) = (0usize, 0.0, 0.0f64, 0.0);
        for v in values {
            n += 1;
            sum += v;
            max = max.max(v);
            last = v;
        }
        Figure {
            mean: if n == 0 { 0.0 } else { sum / n as f64 },
            max,
            last,
        }
    }
}

/// The figures of a whole replay, from its samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub spread: Figure,
    pub stddev_agents: Figure,
    /// Absent when the nodes' capacities are not known (nodes from the history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stddev_load: Option<Figure>,
}

impl Summary {
    pub fn of(samples: &[Sample], load_known: bool) -> Summary {
        Summary {
            spread: Figure::of(samples.iter().map(|s| f64::from(s.spread))),
            stddev_agents: Figure::of(samples.iter().map(|s| s.stddev_agents)),
            stddev_load: load_known.then(|| Figure::of(samples.iter().map(|s| s.stddev_load))),
        }
    }
}
