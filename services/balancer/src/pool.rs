//! The indexes of one pool of eligible nodes (every node, or the nodes offering one
//! service), kept up to date as nodes change so a selection never has to scan or
//! allocate per node:
//!
//! - `rr`: eligible nodes sorted by id, with positions, for round robin (every
//!   replica cycles over the same order) and uniform random draws;
//! - `by_agents` / `by_load`: ordered sets ([`Ordered`]), whose first entries are the
//!   minima, kept only while a strategy reads them ([`crate::orders`]);
//! - `weights`: a Fenwick tree of free slots by node slot, for weighted draws, kept
//!   likewise.

use std::sync::Arc;

use crate::fenwick::Fenwick;
use crate::ordered::Ordered;
use crate::orders::Order;

/// A node's place in id order: the id's first 16 bytes, big-endian and zero-padded,
/// then the id. Comparing the pair orders exactly as comparing the ids, and the
/// prefix decides almost every comparison without reading the id from the heap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdKey(u128, Arc<str>);

impl IdKey {
    pub fn new(id: &str) -> IdKey {
        IdKey(prefix(id), Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.1
    }

    fn cmp_id(&self, id: &str, id_prefix: u128) -> std::cmp::Ordering {
        self.0.cmp(&id_prefix).then_with(|| (*self.1).cmp(id))
    }
}

fn prefix(id: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// What a node is indexed under while it is eligible.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keys {
    pub agents: u32,
    /// `f64::to_bits` of the load score: for non-negative floats the bit patterns
    /// order like the values, so the set needs no float comparator.
    pub load_bits: u64,
    pub free: u32,
}

#[derive(Debug, Default)]
pub struct Pool {
    /// (node id, slot), sorted by node id; always settled.
    pub rr: Ordered<(IdKey, usize)>,
    /// Position in `rr` of the next round-robin turn. Insertions and removals before
    /// it shift it along, so membership churn neither skips nor repeats a node (a node
    /// joining right before the next turn, in id order, takes that turn).
    pub cursor: usize,
    pub by_agents: Option<Ordered<(u32, usize)>>,
    pub by_load: Option<Ordered<(u64, usize)>>,
    pub weights: Option<Fenwick>,
}

impl Pool {
    /// An empty pool over `slots` slots, keeping `orders`.
    pub fn new(slots: usize, orders: impl Iterator<Item = Order>) -> Pool {
        let mut pool = Pool::default();
        for order in orders {
            pool.keep(order, slots, |_| unreachable!("an empty pool has no nodes"));
        }
        pool
    }

    /// Builds `order` from the keys of the pool's nodes, if it is not kept yet; the
    /// view has `slot_count` slots.
    pub fn keep(&mut self, order: Order, slot_count: usize, keys: impl Fn(usize) -> Keys) {
        let slots = self.rr.iter().map(|&(_, i)| i);
        match order {
            Order::Agents if self.by_agents.is_none() => {
                let entries = slots.map(|i| (keys(i).agents, i)).collect();
                self.by_agents = Some(Ordered::from_unsorted(entries));
            }
            Order::Load if self.by_load.is_none() => {
                let entries = slots.map(|i| (keys(i).load_bits, i)).collect();
                self.by_load = Some(Ordered::from_unsorted(entries));
            }
            Order::Free if self.weights.is_none() => {
                let mut weights = Fenwick::with_len(slot_count);
                for i in slots {
                    weights.set(i, u64::from(keys(i).free));
                }
                self.weights = Some(weights);
            }
            Order::Agents | Order::Load | Order::Free => {}
        }
    }

    /// The view has `slots` slots now (it only grows).
    pub fn grow(&mut self, slots: usize) {
        if let Some(weights) = &mut self.weights {
            while weights.len() < slots {
                weights.push();
            }
        }
    }

    /// Whether `order` is kept.
    pub fn keeps(&self, order: Order) -> bool {
        match order {
            Order::Agents => self.by_agents.is_some(),
            Order::Load => self.by_load.is_some(),
            Order::Free => self.weights.is_some(),
        }
    }

    /// Stops keeping `order`.
    pub fn forget(&mut self, order: Order) {
        match order {
            Order::Agents => self.by_agents = None,
            Order::Load => self.by_load = None,
            Order::Free => self.weights = None,
        }
    }

    pub fn len(&self) -> usize {
        self.rr.len()
    }

    pub fn position(&self, id: &str) -> Result<usize, usize> {
        let id_prefix = prefix(id);
        self.rr.search_by(|(x, _)| x.cmp_id(id, id_prefix))
    }

    /// The slot of the node at position `pos` of the id order.
    pub fn slot_at(&self, pos: usize) -> usize {
        self.rr.get(pos).expect("position within the pool").1
    }

    /// Moves `slot` from `old` to `new` keys; `None` means not eligible. An index
    /// whose key did not change is not touched.
    pub fn update(&mut self, slot: usize, id: &str, old: Option<&Keys>, new: Option<&Keys>) {
        let agents = |k: Option<&Keys>| k.map(|k| (k.agents, slot));
        let load = |k: Option<&Keys>| k.map(|k| (k.load_bits, slot));
        if let Some(order) = &mut self.by_agents {
            move_key(order, agents(old), agents(new));
        }
        if let Some(order) = &mut self.by_load {
            move_key(order, load(old), load(new));
        }
        if let Some(weights) = &mut self.weights {
            weights.set(slot, new.map_or(0, |n| u64::from(n.free)));
        }
        match (old.is_some(), new.is_some()) {
            (false, true) => {
                if let Err(pos) = self.position(id) {
                    self.rr.insert((IdKey::new(id), slot));
                    self.rr.settle();
                    if pos < self.cursor {
                        self.cursor += 1;
                    }
                }
            }
            (true, false) => {
                if let Ok(pos) = self.position(id) {
                    let entry = self.rr.get(pos).cloned().expect("found at pos");
                    self.rr.remove(&entry);
                    self.rr.settle();
                    if pos < self.cursor {
                        self.cursor -= 1;
                    }
                }
            }
            _ => {}
        }
    }
}

fn move_key<K: Ord + Copy>(set: &mut Ordered<K>, old: Option<K>, new: Option<K>) {
    if old == new {
        return;
    }
    if let Some(o) = old {
        set.remove(&o);
    }
    if let Some(n) = new {
        set.insert(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(agents: u32) -> Keys {
        Keys {
            agents,
            load_bits: f64::from(agents).to_bits(),
            free: 10 - agents,
        }
    }

    #[test]
    fn id_keys_order_as_the_ids_do() {
        let ids = [
            "",
            "a",
            "a\0",
            "a\0\0b",
            "a\u{1}",
            "ab",
            "node-000001",
            "node-000010",
            "node-0000000000000001",
            "node-0000000000000001a",
            "node-00000000000000010",
            "node-000000000000001",
            "zz",
            "é",
        ];
        for x in ids {
            for y in ids {
                assert_eq!(
                    IdKey::new(x).cmp(&IdKey::new(y)),
                    x.cmp(y),
                    "{x:?} vs {y:?}"
                );
            }
        }
    }

    #[test]
    fn cursor_keeps_pointing_at_the_same_next_node() {
        let mut p = Pool::new(4, Order::ALL.into_iter());
        for (slot, id) in ["a", "c", "e"].iter().enumerate() {
            p.update(slot, id, None, Some(&keys(1)));
        }
        p.cursor = 1; // next turn: "c"
        p.update(3, "b", None, Some(&keys(1)));
        assert_eq!(
            p.rr.get(p.cursor).unwrap().0.as_str(),
            "b",
            "a node joining just before the next turn takes it"
        );
        p.update(1, "c", Some(&keys(1)), None);
        p.update(0, "a", Some(&keys(1)), None);
        assert_eq!(
            p.rr.get(p.cursor).unwrap().0.as_str(),
            "b",
            "removals before the cursor shift it back"
        );
        p.update(3, "b", Some(&keys(1)), None);
        assert_eq!(
            p.rr.get(p.cursor).unwrap().0.as_str(),
            "e",
            "the removed node's successor is next"
        );
        p.update(3, "b", None, Some(&keys(2)));
        assert_eq!(p.weights.as_ref().map(Fenwick::total), Some(17));
        assert_eq!(p.by_agents.as_ref().map(Ordered::len), Some(2));
        p.forget(Order::Agents);
        p.keep(Order::Agents, 4, |_| keys(2));
        assert_eq!(
            p.by_agents
                .as_ref()
                .map(|o| o.iter().copied().collect::<Vec<_>>()),
            Some(vec![(2, 2), (2, 3)]),
            "a rebuilt order holds the eligible nodes"
        );
    }
}
