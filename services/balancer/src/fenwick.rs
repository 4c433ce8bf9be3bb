//! A Fenwick (binary indexed) tree of integer weights, for `weighted` selection in
//! O(log n): point updates when a node's free capacity changes, and sampling by
//! walking down the implicit tree instead of scanning cumulative sums.

#[derive(Clone, Debug, Default)]
pub struct Fenwick {
    /// 1-based implicit tree; `tree[0]` is unused.
    tree: Vec<u64>,
    /// The plain weights, so `set` can turn an absolute value into a delta.
    weights: Vec<u64>,
    total: u64,
}

impl Fenwick {
    pub fn with_len(len: usize) -> Fenwick {
        Fenwick {
            tree: vec![0; len + 1],
            weights: vec![0; len],
            total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn get(&self, i: usize) -> u64 {
        self.weights[i]
    }

    /// Appends a position of weight zero.
    pub fn push(&mut self) {
        // A new node at 1-based index `n` covers (n - lowbit(n), n]; with the new
        // weight zero its value is the sum of the already present part of that range.
        let n = self.tree.len();
        let low = n & n.wrapping_neg();
        let value = self.prefix(n - 1) - self.prefix(n - low);
        self.tree.push(value);
        self.weights.push(0);
    }

    pub fn set(&mut self, i: usize, weight: u64) {
        let old = self.weights[i];
        if old == weight {
            return;
        }
        self.weights[i] = weight;
        self.total = self.total - old + weight;
        let mut k = i + 1;
        while k < self.tree.len() {
            // Wrapping arithmetic applies a decrease as an increase modulo 2^64.
            self.tree[k] = self.tree[k].wrapping_add(weight).wrapping_sub(old);
            k += k & k.wrapping_neg();
        }
    }

    /// Sum of the first `n` weights.
    pub fn prefix(&self, n: usize) -> u64 {
        let mut sum = 0u64;
        let mut k = n;
        while k > 0 {
            sum = sum.wrapping_add(self.tree[k]);
            k &= k - 1;
        }
        sum
    }

    /// The position `i` with `prefix(i) <= target < prefix(i + 1)`: drawing `target`
    /// uniformly from `0..total` picks `i` with probability `weight(i) / total`.
    pub fn find(&self, target: u64) -> Option<usize> {
        if target >= self.total {
            return None;
        }
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut rest = target;
        let mut step = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= rest {
                pos = next;
                rest -= self.tree[next];
            }
            step >>= 1;
        }
        Some(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_sums_and_find_agree_with_a_plain_scan() {
        let weights = [3u64, 0, 5, 1, 0, 0, 7, 2, 4, 0, 1];
        let mut f = Fenwick::with_len(0);
        for (i, w) in weights.iter().enumerate() {
            f.push();
            f.set(i, *w);
        }
        let total: u64 = weights.iter().sum();
        assert_eq!(f.total(), total);
        for n in 0..=weights.len() {
            assert_eq!(f.prefix(n), weights[..n].iter().sum::<u64>());
        }
        for target in 0..total {
            let mut acc = 0;
            let expected = weights
                .iter()
                .position(|w| {
                    acc += w;
                    acc > target
                })
                .unwrap();
            assert_eq!(f.find(target), Some(expected), "target {target}");
        }
        assert_eq!(f.find(total), None);
    }

    #[test]
    fn updates_move_weight() {
        let mut f = Fenwick::with_len(4);
        f.set(1, 10);
        f.set(3, 10);
        assert_eq!(f.find(5), Some(1));
        f.set(1, 0);
        assert_eq!(f.total(), 10);
        assert_eq!(f.find(5), Some(3));
        f.push();
        f.set(4, 1);
        assert_eq!(f.find(10), Some(4));
        assert_eq!(f.len(), 5);
        assert_eq!(f.get(4), 1);
    }
}
