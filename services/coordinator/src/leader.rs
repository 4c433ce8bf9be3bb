//! A term's decisions, made in one loop over [`Leader`]: answer write requests,
//! keep nodes told what they run, move agents off failed and draining nodes and
//! place waiting ones. [`crate::term`] starts and ends terms; [`crate::writes`]
//! holds the requests, [`crate::reconcile`] the moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::commands::WriteRequest;
use crate::context::Ctx;
use crate::digest_check::DigestChecks;
use crate::grouped::GroupQueue;
use crate::guard::Guard;
use crate::node_watch::NodeMessage;
use crate::picker::Picker;
use crate::pipeline::{NodeSync, Pipeline, Reply};
use crate::rebalance::{Budget, Settle};
use crate::record::Change;
use crate::state::{Author, State};
use crate::writes::Placement;

/// What the term's own tasks tell its decision loop.
pub(crate) enum Internal {
    /// The balancer's answer for an assign or a move.
    Placed(Box<Placement>),
    /// What freed a slot is in the log and its event out: place waiting agents.
    SlotFreed,
}

impl Internal {
    fn refuse(self) {
        match self {
            Internal::Placed(p) => p.refuse(),
            Internal::SlotFreed => {}
        }
    }
}

/// Shortest wait before placing waiting agents again after the balancer could not.
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(25);

/// The term's decision state; only the decision loop touches it.
pub(crate) struct Leader {
    /// Where selections running outside the loop send their results.
    pub(crate) loopback: mpsc::Sender<Internal>,
    internal: mpsc::Receiver<Internal>,
    /// Batches the picks of concurrent assigns and moves into few requests.
    pub(crate) picker: Picker,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) author: Author,
    /// The state including changes sent but not yet acknowledged.
    pub(crate) state: State,
    pub(crate) pipeline: Pipeline,
    pub(crate) guard: Guard,
    /// Which nodes' heartbeats disagree with the state, and since when.
    pub(crate) checks: DigestChecks,
    pub(crate) next_sweep: Instant,
    /// Doubles while the balancer refuses agents the membership says fit.
    pub(crate) retry_backoff: Duration,
    pub(crate) grace_logged: bool,
    /// Groups with a placement in flight, and their requests waiting behind it.
    pub(crate) groups: GroupQueue,
    /// Rebalance moves allowed now.
    pub(crate) budget: Budget,
    /// Whether nodes are still joining (or leaving).
    pub(crate) settle: Settle,
}

impl Leader {
    /// The leader of a term that has started with `state` and `pipeline`.
    pub(crate) fn new(ctx: &Arc<Ctx>, author: Author, state: State, pipeline: Pipeline) -> Leader {
        let mut guard = Guard::new(
            ctx.cfg.max_reassignments_per_sec,
            ctx.cfg.mass_failure_share,
            Instant::now(),
        );
        guard.start_term(Instant::now(), ctx.cfg.detection_window);
        let (loopback, internal) = mpsc::channel(4096);
        Leader {
            loopback,
            internal,
            picker: ctx.picker.clone(),
            ctx: ctx.clone(),
            author,
            state,
            pipeline,
            guard,
            checks: DigestChecks::default(),
            next_sweep: Instant::now(),
            retry_backoff: RETRY_MIN,
            grace_logged: false,
            groups: GroupQueue::default(),
            budget: Budget::new(ctx.rebalance.current().max_moves_per_minute, Instant::now()),
            settle: Settle::default(),
        }
    }

    /// The decision loop, until the term ends: true if it ended because an append
    /// was refused (fenced). It awaits no network I/O but the log's flow control.
    pub(crate) async fn decide(
        &mut self,
        writes: &mut mpsc::Receiver<WriteRequest>,
        nodes: &mut mpsc::Receiver<NodeMessage>,
        term: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> bool {
        let failed = self.pipeline.failed();
        let mut changes = self.ctx.members.changes();
        let mut settings = self.ctx.rebalance.changes();
        loop {
            let next_sweep = tokio::time::Instant::from_std(self.next_sweep);
            tokio::select! {
                biased;
                _ = term.cancelled() => return false,
                _ = shutdown.cancelled() => return false,
                _ = failed.cancelled() => return true,
                request = writes.recv() => match request {
                    Some(request) => self.handle(request).await,
                    None => return false,
                },
                Some(message) = self.internal.recv() => self.internal(message).await,
                Some(message) = nodes.recv() => self.on_node(message),
                _ = changes.changed() => self.reconcile().await,
                Ok(()) = settings.changed() => self.reconcile().await,
                _ = tokio::time::sleep_until(next_sweep) => self.reconcile().await,
            }
        }
    }

    /// Ends the term: refuses what its tasks still report and waits for the
    /// appends in flight.
    pub(crate) async fn finish(mut self) {
        self.internal.close();
        while let Ok(message) = self.internal.try_recv() {
            message.refuse();
        }
        self.groups.refuse_all();
        self.pipeline.finish().await;
    }

    async fn handle(&mut self, request: WriteRequest) {
        if !self.ctx.lease.is_leader() {
            return request.refuse();
        }
        match request {
            WriteRequest::Assign(req, tx) => self.assign(req, tx).await,
            WriteRequest::Unassign(req, tx) => self.unassign(req, tx),
            WriteRequest::Move(req, tx) => self.move_agent(req, tx).await,
            WriteRequest::Promote(target, tx) => {
                let _ = tx.send(self.promote(&target).await);
            }
            WriteRequest::Rebalance(dry_run, tx) => {
                let _ = tx.send(self.rebalance_now(dry_run));
            }
        }
    }

    async fn internal(&mut self, message: Internal) {
        if !self.ctx.lease.is_leader() {
            return message.refuse();
        }
        match message {
            Internal::Placed(placement) => self.placed(*placement),
            Internal::SlotFreed => self.reconcile().await,
        }
    }

    /// Applies `change` to the state, queues it for the log, and notes the nodes
    /// whose agents it changes (their heartbeats may lag the notices for a moment).
    /// A change the log cannot take (too large for one message) is refused through
    /// `reply` and changes nothing; false then.
    pub(crate) fn record(&mut self, change: Change, reply: Reply) -> bool {
        let bytes = match self.pipeline.encode(&change) {
            Ok(bytes) => bytes,
            Err(e) => {
                reply.refuse(e);
                return false;
            }
        };
        let now = Instant::now();
        for node in [&change.node_id, &change.previous_node_id]
            .into_iter()
            .flatten()
        {
            self.checks.touched(node, now);
        }
        self.state.apply_change(&change);
        self.pipeline.append(change, bytes, reply);
        true
    }

    /// A slot was freed: waiting agents may fit now. They are placed once the change
    /// is in the log and its event published, so the balancer has counted the slot
    /// free by the time it is asked (asked at once, it would refuse and the retry
    /// would wait out a back-off).
    pub(crate) fn slot_freed(&mut self) {
        if self.state.waiting_count() == 0 {
            return;
        }
        let (done, written) = oneshot::channel();
        self.pipeline.after_pending(Reply::Idle(done));
        let loopback = self.loopback.clone();
        tokio::spawn(async move {
            if written.await == Ok(true) {
                let _ = loopback.send(Internal::SlotFreed).await;
            }
        });
    }

    fn on_node(&mut self, message: NodeMessage) {
        let now = Instant::now();
        match message {
            NodeMessage::Announced(id) => self.send_sync(&id, now),
            NodeMessage::Heartbeat(id, Some(reported)) => {
                let ours = self.state.digest_of(&id);
                if self.checks.heartbeat(&id, ours.matches(&reported), now) {
                    info!(
                        node_id = %id,
                        reported_agents = reported.count,
                        assigned_agents = ours.count(),
                        "node disagrees on its agents: syncing it"
                    );
                    self.send_sync(&id, now);
                }
            }
            NodeMessage::Heartbeat(_, None) => {}
        }
    }

    /// Tells `node` every agent it runs, once what is decided so far is in the log.
    fn send_sync(&mut self, node: &str, now: Instant) {
        self.pipeline.sync(NodeSync {
            node_id: node.to_string(),
            agents: self.state.names_on(node).map(str::to_string).collect(),
            digest: self.state.digest_of(node).digest(),
            epoch: self.author.epoch,
        });
        self.checks.touched(node, now);
    }
}
