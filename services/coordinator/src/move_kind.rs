//! Why the leader moves an agent, and what each kind of move records.

use shoal_protocol::{AssignmentAction, AssignmentStatus, move_reason};

/// Why an agent is moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// Its node is offline or gone.
    Orphan,
    /// Its node is draining.
    Drain,
    /// An operator asked (`move`).
    Operator,
    /// A rebalance evens the cluster: straight from one node to another, never
    /// waiting in between.
    Rebalance,
}

impl MoveKind {
    pub fn action(self) -> AssignmentAction {
        match self {
            MoveKind::Orphan => AssignmentAction::Orphaned,
            MoveKind::Drain | MoveKind::Operator => AssignmentAction::Migrated,
            MoveKind::Rebalance => AssignmentAction::Rebalanced,
        }
    }
    pub fn reason(self) -> &'static str {
        match self {
            MoveKind::Orphan => move_reason::ORPHANED,
            MoveKind::Drain => move_reason::DRAINED,
            MoveKind::Operator => move_reason::OPERATOR,
            MoveKind::Rebalance => move_reason::REBALANCED,
        }
    }
    pub(crate) fn waiting_status(self) -> AssignmentStatus {
        match self {
            MoveKind::Orphan => AssignmentStatus::Orphaned,
            MoveKind::Drain | MoveKind::Operator | MoveKind::Rebalance => {
                AssignmentStatus::Migrating
            }
        }
    }

    /// The kind of move that continues a waiting agent's wait.
    pub fn resuming(status: AssignmentStatus) -> MoveKind {
        match status {
            AssignmentStatus::Migrating => MoveKind::Drain,
            _ => MoveKind::Orphan,
        }
    }
}
