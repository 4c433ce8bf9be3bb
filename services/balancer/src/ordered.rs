//! An ordered set kept as sorted blocks of at most [`BLOCK`] entries, with the first
//! key of every block in one contiguous array, and positions (ranks) on demand.
//!
//! The pools' indexes move a node per pick (the orders) or per join and leave (the
//! id order round robin walks). In a `BTreeSet` of 100,000 entries each move walks
//! five or six levels of small nodes scattered over the heap, almost every level a
//! cache miss; a sorted `Vec` gives positions but shifts half of itself per join,
//! which made taking in 100,000 nodes in random order cost seconds. Here a lookup is
//! a binary search over the block heads, which stay cached because every lookup
//! reads them, and then within one block of contiguous memory; inserting or
//! removing shifts at most one block. Each block's starting position is kept too,
//! brought up to date by [`Ordered::settle`] only when positions are wanted, so the
//! orders that never ask for positions never pay for them.

use std::cmp::Ordering;

/// Most entries in one block; a full block splits in two halves.
const BLOCK: usize = 256;

#[derive(Clone, Debug)]
pub struct Ordered<K> {
    /// Sorted, non-empty blocks; every key of a block is below every key of the next.
    blocks: Vec<Vec<K>>,
    /// `heads[b] == blocks[b][0]`.
    heads: Vec<K>,
    /// `starts[b]`: the position of `blocks[b][0]`, correct for `b < settled`.
    starts: Vec<usize>,
    settled: usize,
    len: usize,
}

impl<K> Default for Ordered<K> {
    fn default() -> Ordered<K> {
        Ordered {
            blocks: Vec::new(),
            heads: Vec::new(),
            starts: Vec::new(),
            settled: 0,
            len: 0,
        }
    }
}

impl<K: Ord + Clone> Ordered<K> {
    /// The set of `entries`, which must be distinct, in blocks half full so the
    /// first insertions do not split them.
    pub fn from_unsorted(mut entries: Vec<K>) -> Ordered<K> {
        entries.sort_unstable();
        let blocks: Vec<Vec<K>> = entries.chunks(BLOCK / 2).map(<[K]>::to_vec).collect();
        Ordered {
            heads: blocks.iter().map(|b| b[0].clone()).collect(),
            starts: vec![0; blocks.len()],
            settled: 0,
            len: entries.len(),
            blocks,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn first(&self) -> Option<&K> {
        self.heads.first()
    }

    pub fn last(&self) -> Option<&K> {
        self.blocks.last().and_then(|b| b.last())
    }

    /// The block holding what `cmp` looks for (it orders an entry against the
    /// target): the last one whose head is not above it, the first block for a
    /// target below every head.
    fn block_by(&self, cmp: &impl Fn(&K) -> Ordering) -> usize {
        self.heads
            .partition_point(|h| cmp(h) != Ordering::Greater)
            .saturating_sub(1)
    }

    /// Adds `key`; returns whether it was absent.
    pub fn insert(&mut self, key: K) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(Vec::with_capacity(BLOCK + 1));
            self.heads.push(key.clone());
            self.starts.push(0);
        }
        let b = self.block_by(&|k: &K| k.cmp(&key));
        let block = &mut self.blocks[b];
        let Err(at) = block.binary_search(&key) else {
            return false;
        };
        block.insert(at, key);
        self.heads[b] = block[0].clone();
        if block.len() > BLOCK {
            let upper = block.split_off(block.len() / 2);
            self.heads.insert(b + 1, upper[0].clone());
            self.blocks.insert(b + 1, upper);
            self.starts.insert(b + 1, 0);
        }
        self.len += 1;
        self.settled = self.settled.min(b + 1);
        true
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &K) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let b = self.block_by(&|k: &K| k.cmp(key));
        let block = &mut self.blocks[b];
        let Ok(at) = block.binary_search(key) else {
            return false;
        };
        block.remove(at);
        match block.first() {
            Some(head) => {
                self.heads[b] = head.clone();
                self.settled = self.settled.min(b + 1);
            }
            None => {
                self.blocks.remove(b);
                self.heads.remove(b);
                self.starts.remove(b);
                self.settled = self.settled.min(b);
            }
        }
        self.len -= 1;
        true
    }

    /// Every key, smallest first.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.blocks.iter().flatten()
    }

    /// Brings the positions up to date; [`Ordered::get`] and [`Ordered::search_by`]
    /// need it after a change.
    pub fn settle(&mut self) {
        if let Some(start) = self.starts.first_mut() {
            *start = 0;
        }
        for b in self.settled.max(1)..self.blocks.len() {
            self.starts[b] = self.starts[b - 1] + self.blocks[b - 1].len();
        }
        self.settled = self.blocks.len();
    }

    fn assert_settled(&self) {
        debug_assert_eq!(
            self.settled,
            self.blocks.len(),
            "positions asked before settle"
        );
    }

    /// The key at position `pos`.
    pub fn get(&self, pos: usize) -> Option<&K> {
        self.assert_settled();
        let b = self.starts.partition_point(|&s| s <= pos).checked_sub(1)?;
        self.blocks[b].get(pos - self.starts[b])
    }

    /// The keys from position `pos` on, then from the start again: the order as a
    /// ring read from `pos`.
    pub fn ring_from(&self, pos: usize) -> impl Iterator<Item = &K> {
        self.assert_settled();
        let b = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
        let skip = pos.saturating_sub(self.starts.get(b).copied().unwrap_or(0));
        let after = self.blocks.iter().skip(b).flatten().skip(skip);
        let before = self.blocks.iter().take(b).flatten();
        let first = self.blocks.get(b).into_iter().flatten().take(skip);
        after.chain(before).chain(first)
    }

    /// Binary search with `cmp` ordering an entry against the target, as
    /// `slice::binary_search_by`: `Ok(position)` if found, else `Err(position)` where
    /// it would go.
    pub fn search_by(&self, cmp: impl Fn(&K) -> Ordering) -> Result<usize, usize> {
        self.assert_settled();
        if self.blocks.is_empty() {
            return Err(0);
        }
        let b = self.block_by(&cmp);
        match self.blocks[b].binary_search_by(&cmp) {
            Ok(at) => Ok(self.starts[b] + at),
            Err(at) => Err(self.starts[b] + at),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn assert_positions(ours: &mut Ordered<(u32, usize)>, model: &BTreeSet<(u32, usize)>) {
        ours.settle();
        for (pos, key) in model.iter().enumerate().step_by(7) {
            assert_eq!(ours.get(pos), Some(key), "get({pos})");
            assert_eq!(ours.search_by(|k| k.cmp(key)), Ok(pos));
        }
        assert_eq!(ours.get(model.len()), None);
    }

    #[test]
    fn behaves_as_an_ordered_set_through_splits_and_emptied_blocks() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut ours = Ordered::default();
        let mut model = BTreeSet::new();
        // Grow well past a few blocks, then shrink to nothing, with a narrow key range
        // so inserts of present keys and removals of absent ones are frequent.
        for round in 0..40_000 {
            let key: (u32, usize) = (rng.random_range(0..3_000), rng.random_range(0..4));
            let grow = if round < 30_000 { 3 } else { 1 };
            if rng.random_range(0..4) < grow {
                assert_eq!(ours.insert(key), model.insert(key), "insert {key:?}");
            } else {
                assert_eq!(ours.remove(&key), model.remove(&key), "remove {key:?}");
            }
            assert_eq!(ours.len(), model.len());
            assert_eq!(ours.first(), model.first());
            assert_eq!(ours.last(), model.last());
            if round % 500 == 0 {
                assert_positions(&mut ours, &model);
            }
        }
        assert!(ours.iter().eq(model.iter()));
        ours.settle();
        for (pos, key) in model.iter().enumerate().step_by(97) {
            assert_eq!(ours.get(pos), Some(key));
            assert_eq!(ours.search_by(|k| k.cmp(key)), Ok(pos));
            let above = (key.0, key.1 + 10);
            assert_eq!(
                ours.search_by(|k| k.cmp(&above)),
                Err(model.range(..above).count())
            );
        }
        assert_eq!(ours.get(model.len()), None);
        let pos = model.len() / 3;
        let ring: Vec<_> = ours.ring_from(pos).copied().collect();
        let expected: Vec<_> = model
            .iter()
            .skip(pos)
            .chain(model.iter().take(pos))
            .copied()
            .collect();
        assert_eq!(ring, expected);
        let mut rebuilt = Ordered::from_unsorted(model.iter().rev().copied().collect());
        assert!(rebuilt.iter().eq(model.iter()) && rebuilt.len() == model.len());
        assert!(rebuilt.insert((1_000_000, 0)) && rebuilt.last() == Some(&(1_000_000, 0)));
        assert!(
            ours.blocks
                .iter()
                .all(|b| !b.is_empty() && b.len() <= BLOCK)
        );
        // Empty the set from the front, so the first block empties again and again.
        for (n, key) in model.clone().iter().enumerate() {
            assert!(ours.remove(key));
            model.remove(key);
            if n % 50 == 0 {
                assert_positions(&mut ours, &model);
            }
        }
        assert!(ours.is_empty() && ours.first().is_none() && ours.iter().next().is_none());
        ours.settle();
        assert_eq!(
            (ours.get(0), ours.search_by(|k| k.cmp(&(1, 1)))),
            (None, Err(0))
        );
        assert!(!ours.remove(&(1, 1)));
    }
}
