//! What the write endpoints ask of the term's decision loop, and what a request
//! gets when this replica no longer leads. The edge ([`crate::handlers`]) knows
//! only these; the leader's own messages stay inside [`crate::leader`].

use shoal_protocol::{
    AssignRequest, Assignment, MoveRequest, RebalanceReport, ShoalError, UnassignReply,
    UnassignRequest,
};
use tokio::sync::oneshot;

/// A write request, with where its answer goes.
pub enum WriteRequest {
    Assign(
        AssignRequest,
        oneshot::Sender<Result<Assignment, ShoalError>>,
    ),
    Unassign(
        UnassignRequest,
        oneshot::Sender<Result<UnassignReply, ShoalError>>,
    ),
    Move(MoveRequest, oneshot::Sender<Result<Assignment, ShoalError>>),
    /// Ok once the lease is marked as handed to the named replica.
    Promote(String, oneshot::Sender<Result<(), ShoalError>>),
    /// `rebalance.now`: true for a dry run.
    Rebalance(bool, oneshot::Sender<Result<RebalanceReport, ShoalError>>),
}

/// What a write request gets when this replica no longer leads.
pub fn not_leader() -> ShoalError {
    ShoalError::not_leader("this coordinator is no longer the leader: retry")
}

impl WriteRequest {
    /// Answers `not_leader`.
    pub fn refuse(self) {
        match self {
            WriteRequest::Assign(_, tx) | WriteRequest::Move(_, tx) => {
                drop(tx.send(Err(not_leader())))
            }
            WriteRequest::Unassign(_, tx) => drop(tx.send(Err(not_leader()))),
            WriteRequest::Promote(_, tx) => drop(tx.send(Err(not_leader()))),
            WriteRequest::Rebalance(_, tx) => drop(tx.send(Err(not_leader()))),
        }
    }
}
