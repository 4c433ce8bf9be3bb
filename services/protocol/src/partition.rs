//! Heartbeat partitions: how registry replicas share the heartbeat stream.
//!
//! A nats-server configured with [`heartbeat_mapping`] rewrites every
//! `<prefix>.node.<id>.heartbeat` to `<prefix>.node.<id>.heartbeat.<p>`, where `p`
//! is [`partition_of`] the id: FNV-1a (32 bits) of the id's bytes modulo the partition
//! count, the server's own `{{partition(n,1)}}`. A registry replica subscribes only to
//! the partitions it owns; every other reader of heartbeats subscribes to both
//! forms ([`Subjects::node_heartbeat_all`] and
//! [`Subjects::node_heartbeat_partitioned_all`]), so it hears them whether or not the
//! server maps them.

use crate::Subjects;

/// The most partitions a deployment may configure.
pub const MAX_PARTITIONS: u32 = 1024;

/// FNV-1a, 32 bits: the hash nats-server's `partition()` mapping function uses.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The partition of a node id among `partitions`, as nats-server computes it.
pub fn partition_of(id: &str, partitions: u32) -> u32 {
    fnv1a32(id.as_bytes()) % partitions.max(1)
}

impl Subjects {
    /// One partition's heartbeats, as mapped by the server: `<prefix>.node.*.heartbeat.<p>`.
    pub fn node_heartbeat_partition(&self, partition: u32) -> String {
        format!("{}.{partition}", self.node_heartbeat_all())
    }

    /// Every partition's heartbeats: `<prefix>.node.*.heartbeat.*`.
    pub fn node_heartbeat_partitioned_all(&self) -> String {
        format!("{}.*", self.node_heartbeat_all())
    }
}

/// The `mappings` entry (source, destination) that partitions heartbeats across
/// `partitions`, for a nats-server account's configuration.
pub fn heartbeat_mapping(subjects: &Subjects, partitions: u32) -> (String, String) {
    let destination = format!(
        "{}.{{{{partition({partitions},1)}}}}",
        subjects.node_heartbeat("{{wildcard(1)}}")
    );
    (subjects.node_heartbeat_all(), destination)
}

/// [`heartbeat_mapping`] as a nats-server configuration block.
pub fn heartbeat_mapping_config(subjects: &Subjects, partitions: u32) -> String {
    let (source, destination) = heartbeat_mapping(subjects, partitions);
    format!("mappings = {{\n  \"{source}\": \"{destination}\"\n}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_stay_in_range_and_spread() {
        let mut counts = [0u32; 8];
        for i in 0..8_000 {
            let p = partition_of(&format!("node-{i}"), 8);
            counts[p as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn the_mapping_names_the_prefix_and_count() {
        let s = Subjects::new("acme.prod").unwrap();
        assert_eq!(
            heartbeat_mapping(&s, 4),
            (
                "acme.prod.node.*.heartbeat".to_string(),
                "acme.prod.node.{{wildcard(1)}}.heartbeat.{{partition(4,1)}}".to_string()
            )
        );
        assert_eq!(
            s.node_heartbeat_partition(3),
            "acme.prod.node.*.heartbeat.3"
        );
    }
}
