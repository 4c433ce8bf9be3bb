//! The agents a node runs, as far as the coordinator has told it.

use std::collections::BTreeSet;

use shoal_protocol::{AgentAction, AgentNotice};

/// Why a notice changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("notice is for node {0}")]
    OtherNode(String),
    #[error("notice from epoch {got} is older than epoch {seen}")]
    StaleEpoch { got: u64, seen: u64 },
}

/// The set of agents started on this node and not yet stopped. Notices from an older
/// coordinator epoch than one already seen are ignored: a deposed leader may still be
/// sending.
#[derive(Debug, Clone, Default)]
pub struct AgentSet {
    agents: BTreeSet<String>,
    epoch: u64,
}

impl AgentSet {
    /// Applies `notice` for node `node_id`; `Ok(true)` when the set changed.
    pub fn apply(&mut self, node_id: &str, notice: &AgentNotice) -> Result<bool, Ignored> {
        if notice.node_id != node_id {
            return Err(Ignored::OtherNode(notice.node_id.clone()));
        }
        if notice.epoch < self.epoch {
            return Err(Ignored::StaleEpoch {
                got: notice.epoch,
                seen: self.epoch,
            });
        }
        self.epoch = notice.epoch;
        Ok(match notice.action {
            AgentAction::Start => self.agents.insert(notice.agent_name.clone()),
            AgentAction::Stop => self.agents.remove(&notice.agent_name),
        })
    }

    pub fn count(&self) -> u32 {
        u32::try_from(self.agents.len()).unwrap_or(u32::MAX)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.agents.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(action: AgentAction, agent: &str, node: &str, epoch: u64) -> AgentNotice {
        AgentNotice {
            action,
            agent_name: agent.into(),
            node_id: node.into(),
            epoch,
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn start_and_stop_change_the_count() {
        let mut set = AgentSet::default();
        assert_eq!(
            set.apply("n1", &notice(AgentAction::Start, "a", "n1", 1)),
            Ok(true)
        );
        assert_eq!(
            set.apply("n1", &notice(AgentAction::Start, "b", "n1", 1)),
            Ok(true)
        );
        // A repeated start is idempotent.
        assert_eq!(
            set.apply("n1", &notice(AgentAction::Start, "a", "n1", 1)),
            Ok(false)
        );
        assert_eq!(set.count(), 2);
        assert_eq!(
            set.apply("n1", &notice(AgentAction::Stop, "a", "n1", 2)),
            Ok(true)
        );
        assert_eq!(set.names().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn other_nodes_and_stale_epochs_are_ignored() {
        let mut set = AgentSet::default();
        assert!(matches!(
            set.apply("n1", &notice(AgentAction::Start, "a", "n2", 1)),
            Err(Ignored::OtherNode(_))
        ));
        set.apply("n1", &notice(AgentAction::Start, "a", "n1", 5))
            .unwrap();
        assert_eq!(
            set.apply("n1", &notice(AgentAction::Stop, "a", "n1", 4)),
            Err(Ignored::StaleEpoch { got: 4, seen: 5 })
        );
        assert_eq!(set.count(), 1);
    }
}
