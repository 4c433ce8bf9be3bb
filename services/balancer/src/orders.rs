//! Which ordered indexes the pools keep (the orders by agents and by load, and the
//! free-slot weights). Every pick and every heartbeat moves its node in each kept
//! one, and at 100,000 nodes that is most of a pick's cost, so an index is kept
//! only while something reads it: the cluster strategy's order
//! always, another strategy's order for [`ORDER_KEEP`] after a request last named
//! that strategy. An order that was dropped is rebuilt from the eligible nodes' keys
//! when it is read again (a sort: milliseconds at 100,000 nodes).

use std::time::{Duration, Instant};

use shoal_protocol::{LoadSpread, Strategy};

use crate::estimate::load_of;
use crate::score::load_score;
use crate::view::View;

/// How long an order only requests read stays kept after the last such request.
pub const ORDER_KEEP: Duration = Duration::from_secs(60);

/// An ordered index of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By effective agent count: `least_agents`.
    Agents,
    /// By estimated load: `least_loaded` and the stats' load spread.
    Load,
    /// Free slots as draw weights: `weighted`.
    Free,
}

impl Order {
    pub const ALL: [Order; 3] = [Order::Agents, Order::Load, Order::Free];

    /// The order `strategy` picks from, if it picks from one.
    pub fn of(strategy: Strategy) -> Option<Order> {
        match strategy {
            Strategy::LeastAgents => Some(Order::Agents),
            Strategy::LeastLoaded => Some(Order::Load),
            Strategy::Weighted => Some(Order::Free),
            Strategy::RoundRobin | Strategy::Random => None,
        }
    }
}

impl View {
    /// Whether the pools keep `order` (they all keep the same ones).
    pub(crate) fn keeps(&self, order: Order) -> bool {
        self.pools[0].keeps(order)
    }

    /// Makes every pool keep `order`, building it where it was dropped.
    pub(crate) fn keep_order(&mut self, order: Order) {
        if self.keeps(order) {
            return;
        }
        let slots = &self.slots;
        for pool in &mut self.pools {
            pool.keep(order, slots.len(), |i| {
                slots[i]
                    .as_ref()
                    .and_then(|s| s.keys)
                    .expect("a node in a pool is eligible")
            });
        }
    }

    /// A selection at `now` is about to read the order of `strategy`.
    pub(crate) fn read_order(&mut self, strategy: Strategy, now: Instant) {
        if let Some(order) = Order::of(strategy) {
            self.keep_order(order);
            self.order_read_at[order as usize] = Some(now);
        }
    }

    /// Drops the orders that neither the cluster strategy nor a request within
    /// [`ORDER_KEEP`] reads.
    pub(crate) fn forget_unread_orders(&mut self, now: Instant) {
        let wanted = Order::of(self.settings.strategy);
        for order in Order::ALL {
            let recent = self.order_read_at[order as usize]
                .is_some_and(|at| now.saturating_duration_since(at) < ORDER_KEEP);
            if Some(order) == wanted || recent || !self.keeps(order) {
                continue;
            }
            for pool in &mut self.pools {
                pool.forget(order);
            }
        }
    }

    /// How far apart the eligible nodes' estimated loads are, with what one more
    /// agent without a resource request would add to the least loaded one: from the
    /// load order when it is kept, else by a scan.
    pub(crate) fn load_spread(&self) -> Option<LoadSpread> {
        let pool = &self.pools[0];
        let ((min_bits, min_slot), max_bits) = match &pool.by_load {
            Some(order) => (*order.first()?, order.last()?.0),
            None => {
                let loads = pool.rr.iter().map(|&(_, i)| {
                    let keys = self.slot(i).keys.expect("a node in a pool is eligible");
                    (keys.load_bits, i)
                });
                let (min, max) = loads.fold(None, |acc, k| match acc {
                    None => Some((k, k)),
                    Some((lo, hi)) => Some((k.min(lo), k.max(hi))),
                })?;
                (min, max.0)
            }
        };
        let slot = self.slot(min_slot);
        let n = &slot.node;
        let agents = slot.agents();
        let slot_step = load_score(n.cpu_usage, n.memory_usage, agents + 1, n.max_agents)
            - load_score(n.cpu_usage, n.memory_usage, agents, n.max_agents);
        Some(LoadSpread {
            min: f64::from_bits(min_bits),
            max: f64::from_bits(max_bits),
            agent_cost: load_of(slot.cost(None, self.settings.agent_cost)) + slot_step,
            pending: self
                .slots
                .iter()
                .flatten()
                .map(|s| s.pending.len() as u64)
                .sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use shoal_protocol::SelectRequest;

    use super::*;
    use crate::bench::synthetic_node;
    use crate::view::Settings;

    fn view(strategy: Strategy, now: Instant) -> View {
        let mut v = View::with_seed(
            Settings {
                strategy,
                ..Settings::default()
            },
            3,
        );
        for (id, agents, cpu) in [("a", 5, 30.0), ("b", 2, 60.0), ("c", 8, 5.0)] {
            v.upsert(synthetic_node(id, 10, agents, cpu, 20.0), now);
        }
        v
    }

    fn pick(v: &mut View, strategy: Option<Strategy>, now: Instant) -> String {
        let req = SelectRequest {
            strategy,
            ..SelectRequest::default()
        };
        v.select(&req, now).expect("a node is free").node_id
    }

    #[test]
    fn an_order_is_kept_while_read_and_rebuilt_right_when_read_again() {
        let t0 = Instant::now();
        let mut v = view(Strategy::RoundRobin, t0);
        assert!(Order::ALL.iter().all(|&o| !v.keeps(o)));

        // A request naming least_agents builds the order from the current keys.
        assert_eq!(pick(&mut v, Some(Strategy::LeastAgents), t0), "b");
        assert!(v.keeps(Order::Agents) && !v.keeps(Order::Load));
        assert_eq!(pick(&mut v, Some(Strategy::LeastAgents), t0), "b");

        // Unread for ORDER_KEEP under a round-robin cluster: dropped.
        let later = t0 + ORDER_KEEP + Duration::from_secs(1);
        pick(&mut v, None, later);
        assert!(!v.keeps(Order::Agents));

        // Changes while it is dropped are seen when it is rebuilt: b is now the
        // busiest, a the emptiest.
        v.upsert(synthetic_node("b", 10, 9, 60.0, 20.0), later);
        assert_eq!(pick(&mut v, Some(Strategy::LeastAgents), later), "a");

        // The cluster strategy's order is never dropped.
        v.set_strategy(Strategy::LeastLoaded);
        let much_later = later + 10 * ORDER_KEEP;
        assert_eq!(pick(&mut v, None, much_later), "c");
        assert!(v.keeps(Order::Load) && !v.keeps(Order::Agents));
        assert!(!v.keeps(Order::Free));
        // Weighted draws rebuild the weights: only nodes with free slots are drawn.
        v.upsert(synthetic_node("a", 10, 10, 30.0, 20.0), much_later);
        let mut drawn: Vec<String> = (0..2)
            .map(|_| pick(&mut v, Some(Strategy::Weighted), much_later))
            .collect();
        drawn.sort();
        assert_eq!(drawn, ["b", "c"], "b and c had one free slot each, a none");
    }

    #[test]
    fn the_load_spread_is_the_same_with_or_without_the_load_order() {
        let now = Instant::now();
        let (kept, scanned) = (
            view(Strategy::LeastLoaded, now),
            view(Strategy::Weighted, now),
        );
        assert!(kept.pools[0].by_load.is_some() && scanned.pools[0].by_load.is_none());
        let spread = kept.load_spread().expect("eligible nodes");
        assert_eq!(Some(spread.clone()), scanned.load_spread());
        assert!(spread.min < spread.max, "{spread:?}");
    }
}
