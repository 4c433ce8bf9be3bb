//! The agents a node runs, as far as the coordinator has told it: `start` and `stop`
//! change one agent, a `sync` replaces the whole set.

use std::collections::BTreeSet;

use shoal_protocol::{AgentNotice, AgentSync, AgentsDigest, DigestSum};

/// Why a notice changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("notice is for node {0}")]
    OtherNode(String),
    #[error("notice from epoch {got} is older than epoch {seen}")]
    StaleEpoch { got: u64, seen: u64 },
    #[error("sync part {got} arrived while part {expected} was expected; waiting for a new sync")]
    MissingPart { got: u32, expected: u32 },
    #[error("the sync's parts add up to {got:?}, not to its digest {want:?}")]
    BadDigest {
        got: AgentsDigest,
        want: AgentsDigest,
    },
}

/// What applying a notice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The set is as it was.
    Unchanged,
    /// The set changed: `started` agents added, `stopped` removed.
    Changed { started: usize, stopped: usize },
    /// A part of a sync was kept; the set changes when the last part arrives.
    Partial,
}

impl Applied {
    pub fn changed(self) -> bool {
        matches!(self, Applied::Changed { .. })
    }
}

/// A sync whose later parts are still to come.
#[derive(Debug, Clone)]
struct PartialSync {
    epoch: u64,
    next: u32,
    parts: u32,
    agents: Vec<String>,
    digest: AgentsDigest,
}

/// The set of agents this node runs. Notices from an older coordinator epoch than
/// one already seen are ignored: a deposed leader may still be sending.
#[derive(Debug, Clone, Default)]
pub struct AgentSet {
    agents: BTreeSet<String>,
    digest: DigestSum,
    epoch: u64,
    partial: Option<PartialSync>,
}

impl AgentSet {
    /// Applies `notice` for node `node_id`.
    pub fn apply(&mut self, node_id: &str, notice: &AgentNotice) -> Result<Applied, Ignored> {
        if notice.node_id() != node_id {
            return Err(Ignored::OtherNode(notice.node_id().to_string()));
        }
        if notice.epoch() < self.epoch {
            return Err(Ignored::StaleEpoch {
                got: notice.epoch(),
                seen: self.epoch,
            });
        }
        self.epoch = notice.epoch();
        Ok(match notice {
            AgentNotice::Start(c) => self.start(&c.agent_name),
            AgentNotice::Stop(c) => self.stop(&c.agent_name),
            AgentNotice::Sync(s) => return self.sync(s),
        })
    }

    fn start(&mut self, agent: &str) -> Applied {
        if self.agents.insert(agent.to_string()) {
            self.digest.add(agent);
            Applied::Changed {
                started: 1,
                stopped: 0,
            }
        } else {
            Applied::Unchanged
        }
    }

    fn stop(&mut self, agent: &str) -> Applied {
        if self.agents.remove(agent) {
            self.digest.remove(agent);
            Applied::Changed {
                started: 0,
                stopped: 1,
            }
        } else {
            Applied::Unchanged
        }
    }

    fn sync(&mut self, s: &AgentSync) -> Result<Applied, Ignored> {
        let mut partial = match self.partial.take() {
            _ if s.part == 1 => PartialSync {
                epoch: s.epoch,
                next: 1,
                parts: s.parts,
                agents: Vec::new(),
                digest: s.digest.clone(),
            },
            Some(p) if p.epoch == s.epoch && p.next == s.part && p.parts == s.parts => p,
            Some(p) => {
                return Err(Ignored::MissingPart {
                    got: s.part,
                    expected: p.next,
                });
            }
            None => {
                return Err(Ignored::MissingPart {
                    got: s.part,
                    expected: 1,
                });
            }
        };
        partial.agents.extend(s.agents.iter().cloned());
        if s.part < s.parts {
            partial.next = s.part + 1;
            self.partial = Some(partial);
            return Ok(Applied::Partial);
        }
        let wanted: BTreeSet<String> = partial.agents.into_iter().collect();
        let digest = DigestSum::of(wanted.iter().map(String::as_str));
        if !digest.matches(&partial.digest) {
            return Err(Ignored::BadDigest {
                got: digest.digest(),
                want: partial.digest,
            });
        }
        let started = wanted.difference(&self.agents).count();
        let stopped = self.agents.difference(&wanted).count();
        self.agents = wanted;
        self.digest = digest;
        Ok(if started + stopped == 0 {
            Applied::Unchanged
        } else {
            Applied::Changed { started, stopped }
        })
    }

    pub fn count(&self) -> u32 {
        self.digest.count()
    }

    /// What heartbeats report as `agents_digest`.
    pub fn digest(&self) -> AgentsDigest {
        self.digest.digest()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.agents.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::AgentChange;

    fn change(agent: &str, node: &str, epoch: u64) -> AgentChange {
        AgentChange {
            agent_name: agent.into(),
            node_id: node.into(),
            epoch,
            at: chrono::Utc::now(),
        }
    }

    fn start(agent: &str, node: &str, epoch: u64) -> AgentNotice {
        AgentNotice::Start(change(agent, node, epoch))
    }

    fn stop(agent: &str, node: &str, epoch: u64) -> AgentNotice {
        AgentNotice::Stop(change(agent, node, epoch))
    }

    fn sync(agents: &[&str], epoch: u64, part: u32, parts: u32, all: &[&str]) -> AgentNotice {
        AgentNotice::Sync(AgentSync {
            node_id: "n1".into(),
            agents: agents.iter().map(|a| a.to_string()).collect(),
            epoch,
            at: chrono::Utc::now(),
            part,
            parts,
            digest: DigestSum::of(all.iter().copied()).digest(),
        })
    }

    #[test]
    fn start_and_stop_change_the_count() {
        let mut set = AgentSet::default();
        assert!(set.apply("n1", &start("a", "n1", 1)).unwrap().changed());
        assert!(set.apply("n1", &start("b", "n1", 1)).unwrap().changed());
        // A repeated start is idempotent.
        assert_eq!(
            set.apply("n1", &start("a", "n1", 1)),
            Ok(Applied::Unchanged)
        );
        assert_eq!(set.count(), 2);
        assert!(set.apply("n1", &stop("a", "n1", 2)).unwrap().changed());
        assert_eq!(set.names().collect::<Vec<_>>(), ["b"]);
        assert_eq!(set.digest(), DigestSum::of(["b"]).digest());
    }

    #[test]
    fn other_nodes_and_stale_epochs_are_ignored() {
        let mut set = AgentSet::default();
        assert!(matches!(
            set.apply("n1", &start("a", "n2", 1)),
            Err(Ignored::OtherNode(_))
        ));
        set.apply("n1", &start("a", "n1", 5)).unwrap();
        assert_eq!(
            set.apply("n1", &stop("a", "n1", 4)),
            Err(Ignored::StaleEpoch { got: 4, seen: 5 })
        );
        assert_eq!(set.count(), 1);
    }

    #[test]
    fn a_sync_replaces_the_set() {
        let mut set = AgentSet::default();
        for a in ["a", "b", "c"] {
            set.apply("n1", &start(a, "n1", 1)).unwrap();
        }
        assert_eq!(
            set.apply("n1", &sync(&["c", "d"], 2, 1, 1, &["c", "d"])),
            Ok(Applied::Changed {
                started: 1,
                stopped: 2
            })
        );
        assert_eq!(set.names().collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!(set.digest(), DigestSum::of(["c", "d"]).digest());
        // The same sync again changes nothing; an older epoch's is ignored.
        assert_eq!(
            set.apply("n1", &sync(&["c", "d"], 2, 1, 1, &["c", "d"])),
            Ok(Applied::Unchanged)
        );
        assert!(matches!(
            set.apply("n1", &sync(&[], 1, 1, 1, &[])),
            Err(Ignored::StaleEpoch { .. })
        ));
    }

    #[test]
    fn a_sync_in_parts_applies_once_complete_and_a_gap_discards_it() {
        let all = ["a", "b", "c"];
        let mut set = AgentSet::default();
        assert_eq!(
            set.apply("n1", &sync(&["a", "b"], 3, 1, 2, &all)),
            Ok(Applied::Partial)
        );
        assert_eq!(set.count(), 0);
        assert!(
            set.apply("n1", &sync(&["c"], 3, 2, 2, &all))
                .unwrap()
                .changed()
        );
        assert_eq!(set.count(), 3);

        // Part 3 of 3 after part 1: part 2 was lost, nothing changes.
        set.apply("n1", &sync(&["x"], 4, 1, 3, &["x", "y", "z"]))
            .unwrap();
        assert_eq!(
            set.apply("n1", &sync(&["z"], 4, 3, 3, &["x", "y", "z"])),
            Err(Ignored::MissingPart {
                got: 3,
                expected: 2
            })
        );
        assert_eq!(set.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        // Parts whose union is not the digest are refused as a whole.
        assert!(matches!(
            set.apply("n1", &sync(&["a"], 5, 1, 1, &["a", "b"])),
            Err(Ignored::BadDigest { .. })
        ));
        assert_eq!(set.count(), 3);
    }
}
