//! The digest of a node's agent set: a count and an order-independent hash of the
//! agent names, so a node and the coordinator can tell in one heartbeat whether they
//! agree on what the node runs.
//!
//! The hash is the wrapping 64-bit sum of the FNV-1a 64 hashes of each name's UTF-8
//! bytes, written as 16 lowercase hex digits. A sum (unlike XOR) lets an agent be
//! added or removed in O(1) and never cancels two names out. Any language can compute
//! it: FNV-1a starts from `0xcbf29ce484222325` and, for each byte, XORs it in and
//! multiplies by `0x100000001b3`, modulo 2^64.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `name`'s UTF-8 bytes.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// What a heartbeat carries as `agents_digest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentsDigest {
    /// How many agents the node runs.
    pub count: u32,
    /// Wrapping sum of the FNV-1a 64 hashes of the agent names, 16 lowercase hex digits.
    pub hash: String,
}

/// A running digest: add and remove names one at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestSum {
    count: u32,
    sum: u64,
}

impl DigestSum {
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> DigestSum {
        let mut d = DigestSum::default();
        names.into_iter().for_each(|n| d.add(n));
        d
    }

    pub fn add(&mut self, name: &str) {
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.wrapping_add(name_hash(name));
    }

    pub fn remove(&mut self, name: &str) {
        self.count = self.count.saturating_sub(1);
        self.sum = self.sum.wrapping_sub(name_hash(name));
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn digest(&self) -> AgentsDigest {
        AgentsDigest {
            count: self.count,
            hash: format!("{:016x}", self.sum),
        }
    }

    /// Whether a reported digest describes this set (the hash read as hex, in either
    /// case; one that is not hex describes nothing).
    pub fn matches(&self, reported: &AgentsDigest) -> bool {
        reported.count == self.count
            && reported.hash.len() == 16
            && u64::from_str_radix(&reported.hash, 16) == Ok(self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        // From the FNV reference test vectors.
        assert_eq!(name_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(name_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(name_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_digest_ignores_order_and_follows_adds_and_removes() {
        let a = DigestSum::of(["x", "y", "z"]);
        let b = DigestSum::of(["z", "x", "y"]);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.count(), 3);
        let mut c = DigestSum::of(["x", "y"]);
        assert_ne!(c.digest(), a.digest());
        c.add("z");
        assert!(c.matches(&a.digest()));
        c.remove("y");
        assert_eq!(c.digest(), DigestSum::of(["x", "z"]).digest());
        assert_eq!(DigestSum::default().digest().hash, "0000000000000000");
        let mut upper = a.digest();
        upper.hash = upper.hash.to_uppercase();
        assert!(a.matches(&upper));
        upper.hash = "not hex at all!!".into();
        assert!(!a.matches(&upper));
        // The example in docs/concepts.md.
        assert_eq!(
            DigestSum::of(["agent-1", "agent-7"]).digest().hash,
            "387f3b14b751b8b2"
        );
    }
}
