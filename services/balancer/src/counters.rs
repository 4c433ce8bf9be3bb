//! What a replica has picked, by strategy: the figures behind `balancer.stats` and
//! the selection metrics, counted without allocating on the selection path.

use std::collections::BTreeMap;

use shoal_protocol::Strategy;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub selections: u64,
    /// Picks by strategy, in the order of [`Strategy::ALL`].
    picked_by: [u64; Strategy::ALL.len()],
    pub no_capacity: u64,
}

impl Counters {
    pub fn picked(&mut self, strategy: Strategy) {
        self.selections += 1;
        if let Some(i) = Strategy::ALL.iter().position(|&s| s == strategy) {
            self.picked_by[i] += 1;
        }
    }

    pub fn picked_by(&self, strategy: Strategy) -> u64 {
        Strategy::ALL
            .iter()
            .position(|&s| s == strategy)
            .map_or(0, |i| self.picked_by[i])
    }

    /// The strategies that picked at least once, by name.
    pub fn by_strategy(&self) -> BTreeMap<String, u64> {
        Strategy::ALL
            .iter()
            .zip(self.picked_by)
            .filter(|&(_, n)| n > 0)
            .map(|(s, n)| (s.as_str().to_string(), n))
            .collect()
    }
}
