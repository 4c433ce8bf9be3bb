//! The indexes of one pool of eligible nodes (every node, or the nodes offering one
//! service), kept up to date as nodes change so a selection never has to scan or
//! allocate per node:
//!
//! - `rr`: eligible nodes sorted by id, for round robin (every replica cycles over the
//!   same order) and uniform random draws;
//! - `by_agents` / `by_load`: ordered sets, whose first entries are the minima;
//! - `weights`: a Fenwick tree of free slots by node slot, for weighted draws.

use std::collections::BTreeSet;

use crate::fenwick::Fenwick;

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
    /// (node id, slot), sorted by node id.
    pub rr: Vec<(String, usize)>,
    /// Position in `rr` of the next round-robin turn. Insertions and removals before
    /// it shift it along, so membership churn neither skips nor repeats a node (a node
    /// joining right before the next turn, in id order, takes that turn).
    pub cursor: usize,
    pub by_agents: BTreeSet<(u32, usize)>,
    pub by_load: BTreeSet<(u64, usize)>,
    pub weights: Fenwick,
}

impl Pool {
    pub fn new(slots: usize) -> Pool {
        Pool {
            weights: Fenwick::with_len(slots),
            ..Pool::default()
        }
    }

    pub fn len(&self) -> usize {
        self.rr.len()
    }

    pub fn position(&self, id: &str) -> Result<usize, usize> {
        self.rr.binary_search_by(|(x, _)| x.as_str().cmp(id))
    }

    /// Moves `slot` from `old` to `new` keys; `None` means not eligible.
    pub fn update(&mut self, slot: usize, id: &str, old: Option<&Keys>, new: Option<&Keys>) {
        if let Some(o) = old {
            self.by_agents.remove(&(o.agents, slot));
            self.by_load.remove(&(o.load_bits, slot));
        }
        if let Some(n) = new {
            self.by_agents.insert((n.agents, slot));
            self.by_load.insert((n.load_bits, slot));
        }
        self.weights.set(slot, new.map_or(0, |n| u64::from(n.free)));
        match (old.is_some(), new.is_some()) {
            (false, true) => {
                if let Err(pos) = self.position(id) {
                    self.rr.insert(pos, (id.to_string(), slot));
                    if pos < self.cursor {
                        self.cursor += 1;
                    }
                }
            }
            (true, false) => {
                if let Ok(pos) = self.position(id) {
                    self.rr.remove(pos);
                    if pos < self.cursor {
                        self.cursor -= 1;
                    }
                }
            }
            _ => {}
        }
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
    fn cursor_keeps_pointing_at_the_same_next_node() {
        let mut p = Pool::new(4);
        for (slot, id) in ["a", "c", "e"].iter().enumerate() {
            p.update(slot, id, None, Some(&keys(1)));
        }
        p.cursor = 1; // next turn: "c"
        p.update(3, "b", None, Some(&keys(1)));
        assert_eq!(
            p.rr[p.cursor].0, "b",
            "a node joining just before the next turn takes it"
        );
        p.update(1, "c", Some(&keys(1)), None);
        p.update(0, "a", Some(&keys(1)), None);
        assert_eq!(
            p.rr[p.cursor].0, "b",
            "removals before the cursor shift it back"
        );
        p.update(3, "b", Some(&keys(1)), None);
        assert_eq!(
            p.rr[p.cursor].0, "e",
            "the removed node's successor is next"
        );
        p.update(3, "b", None, Some(&keys(2)));
        assert_eq!(p.weights.total(), 17);
        assert_eq!(p.by_agents.len(), 2);
    }
}
