//! A leader's term: rebuild the state from the log, append an epoch-start record,
//! serve the write endpoints, keep nodes told what they run, move agents off failed
//! and draining nodes and place waiting ones, and stop at once when the lease is lost
//! or an append is refused. The term's decisions are made in one loop over
//! [`Leader`]; [`crate::writes`] holds the requests, [`crate::reconcile`] the moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_protocol::{AssignRequest, Assignment, MoveRequest, ShoalError, UnassignReply};
use shoal_runtime::JetStreamError;
use shoal_runtime::retry::until_ok;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::context::Ctx;
use crate::digest_check::DigestChecks;
use crate::guard::Guard;
use crate::lease::Held;
use crate::log::{AppendError, Appender};
use crate::node_watch::{self, NodeMessage};
use crate::picker::Picker;
use crate::pipeline::{NodeSync, Notifier, Pipeline, Reply};
use crate::record::{Change, EpochStart, LogRecord, new_event_id};
use crate::state::{Author, State};
use crate::writes::Placement;

/// Requests the write endpoints pass to the leader.
pub enum LeaderCommand {
    Assign(
        AssignRequest,
        oneshot::Sender<Result<Assignment, ShoalError>>,
    ),
    Unassign(String, oneshot::Sender<Result<UnassignReply, ShoalError>>),
    Move(MoveRequest, oneshot::Sender<Result<Assignment, ShoalError>>),
    /// Ok once the lease is marked as handed to the named replica.
    Promote(String, oneshot::Sender<Result<(), ShoalError>>),
    /// The balancer's answer for an assign or a move, back in the decision loop.
    Placed(Box<Placement>),
    /// What freed a slot is in the log and its event out: place waiting agents.
    SlotFreed,
}

/// What a write request gets when this replica no longer leads.
pub fn not_leader() -> ShoalError {
    ShoalError::not_leader("this coordinator is no longer the leader: retry")
}

impl LeaderCommand {
    fn refuse(self) {
        match self {
            LeaderCommand::Assign(_, tx) | LeaderCommand::Move(_, tx) => {
                drop(tx.send(Err(not_leader())))
            }
            LeaderCommand::Unassign(_, tx) => drop(tx.send(Err(not_leader()))),
            LeaderCommand::Promote(_, tx) => drop(tx.send(Err(not_leader()))),
            LeaderCommand::Placed(p) => p.refuse(),
            LeaderCommand::SlotFreed => {}
        }
    }
}

/// How long a new term waits for its tail before restarting it.
const TAIL_PATIENCE: Duration = Duration::from_millis(300);

/// Runs a term each time this replica holds the lease, until `shutdown`.
pub async fn run_terms(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut view = ctx.lease.subscribe();
    loop {
        let held = tokio::select! {
            _ = shutdown.cancelled() => return,
            held = view.wait_for(|v| v.held.as_ref().is_some_and(|h| !h.token.is_cancelled())) => match held {
                Ok(v) => v.held.clone(),
                Err(_) => return,
            },
        };
        let Some(held) = held else { continue };
        let fenced = run_term(&ctx, &held, &shutdown).await;
        if fenced {
            ctx.lease.resign("an append to the log was refused").await;
        }
        // Wait for this term's lease to be gone before looking for the next one.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = held.token.cancelled() => {}
        }
    }
}

/// One term; true if it ended because an append was refused (fenced).
async fn run_term(ctx: &Arc<Ctx>, held: &Held, shutdown: &CancellationToken) -> bool {
    let term = held.token.clone();
    let started = Instant::now();
    let begun = tokio::select! {
        begun = start(ctx, &term) => begun,
        _ = shutdown.cancelled() => return false,
    };
    let (author, state, pipeline) = match begun {
        Ok(begun) => begun,
        Err(NotStarted::Fenced) => return !term.is_cancelled(),
        Err(NotStarted::LeaseLost) => return false,
    };
    info!(
        epoch = author.epoch,
        assignments = state.len(),
        waiting = state.waiting_count(),
        log_seq = state.last_seq(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "leading: state rebuilt, serving writes"
    );
    ctx.lease.started_term(author.epoch).await;
    let failed = pipeline.failed();
    let (tx, mut rx) = mpsc::channel(4096);
    let (node_tx, mut node_rx) = mpsc::channel(node_watch::QUEUE);
    // The term's endpoints and helpers, stopped together when it ends.
    let stop_endpoints = term.child_token();
    let term_tasks = TaskTracker::new();
    crate::handlers::serve_writes(ctx, &tx, &stop_endpoints, &term_tasks).await;
    if let Err(e) = node_watch::spawn(
        ctx.client.clone(),
        ctx.subjects.clone(),
        node_tx,
        stop_endpoints.clone(),
        &term_tasks,
    )
    .await
    {
        warn!(error = %e, "cannot follow node announces and heartbeats: nodes are not synced this term")
    }
    if ctx.compaction
        && let Some(store) = ctx.snapshots.clone()
    {
        term_tasks.spawn(crate::compaction::run(
            ctx.clone(),
            store,
            stop_endpoints.clone(),
        ));
    }
    let mut guard = Guard::new(
        ctx.cfg.max_reassignments_per_sec,
        ctx.cfg.mass_failure_share,
        Instant::now(),
    );
    guard.start_term(Instant::now(), ctx.cfg.detection_window);
    let mut leader = Leader {
        loopback: tx.clone(),
        picker: Picker::spawn(ctx.peers.clone()),
        ctx: ctx.clone(),
        author,
        state,
        pipeline,
        guard,
        checks: DigestChecks::default(),
        next_sweep: Instant::now(),
        retry_backoff: RETRY_MIN,
        grace_logged: false,
    };
    let mut changes = ctx.members.changes();
    let fenced = loop {
        let next_sweep = tokio::time::Instant::from_std(leader.next_sweep);
        tokio::select! {
            biased;
            _ = term.cancelled() => break false,
            _ = shutdown.cancelled() => break false,
            _ = failed.cancelled() => break true,
            command = rx.recv() => match command {
                Some(c) => leader.handle(c).await,
                None => break false,
            },
            Some(message) = node_rx.recv() => leader.on_node(message),
            _ = changes.changed() => leader.reconcile().await,
            _ = tokio::time::sleep_until(next_sweep) => leader.reconcile().await,
        }
    };
    stop_endpoints.cancel();
    term_tasks.close();
    term_tasks.wait().await;
    rx.close();
    while let Ok(command) = rx.try_recv() {
        command.refuse();
    }
    leader.pipeline.finish().await;
    info!(epoch = leader.author.epoch, fenced, "term ended");
    fenced
}

/// How many epoch-start appends in a row may be refused before this replica counts
/// as fenced: a deposed leader has at most a few appends in flight, so more
/// refusals mean another writer is active.
const MAX_REFUSALS: u32 = 10;

/// Why a term did not start.
#[derive(Debug, PartialEq, Eq)]
enum NotStarted {
    /// Epoch-start appends kept being refused: another writer is active.
    Fenced,
    /// The lease was lost before the term could start.
    LeaseLost,
}

/// Why one try at starting a term failed (and is tried again while the lease holds).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    LogEnd(#[from] JetStreamError),
    #[error("the log tail did not reach record {last} in time")]
    Behind { last: u64 },
    #[error("epoch-start record: {0}")]
    Append(#[from] AppendError),
}

/// What a started term has: its author (the term number is one past the log's
/// last), the state rebuilt and the pipeline to append with.
type Begun = (Author, State, Pipeline);

/// Rebuilds the state up to the log's end and appends the epoch-start record. A
/// failure that is not a refusal (the log unreadable or without a leader for a
/// while, the tail behind) is tried again, with a growing pause, for as long as the
/// lease holds: giving the lease up would not help another replica, which would
/// meet the same log.
async fn start(ctx: &Ctx, term: &CancellationToken) -> Result<Begun, NotStarted> {
    match until_ok(term, "starting the term", || begin(ctx)).await {
        Some(Ok(started)) => Ok(started),
        Some(Err(fenced)) => Err(fenced),
        None => Err(NotStarted::LeaseLost),
    }
}

/// One try at starting a term. A refused epoch-start append (a deposed leader's
/// append landed in between) is retried at once from the log's new end, up to
/// [`MAX_REFUSALS`] times; refused that often, this replica is fenced.
async fn begin(ctx: &Ctx) -> Result<Result<Begun, NotStarted>, StartError> {
    for refusals in 0..MAX_REFUSALS {
        let last = crate::log::log_end(&ctx.stream).await?;
        // A tail that is not there within a moment may be following a consumer
        // lost with a NATS server: start it again rather than wait for it.
        let caught_up = match ctx.replica.snapshot_at(last, TAIL_PATIENCE).await {
            Some(state) => Some(state),
            None => {
                ctx.replica.restart_tail();
                ctx.replica.snapshot_at(last, ctx.cfg.lease_ttl).await
            }
        };
        let mut state = caught_up.ok_or(StartError::Behind { last })?;
        // Terms count up from the log, whatever the lease's revision.
        let author = Author {
            leader_id: ctx.me.clone(),
            epoch: state.epoch() + 1,
        };
        let mut appender = Appender::new(ctx.js.clone(), &ctx.subjects, state.last_seq());
        let record = LogRecord::EpochStart(EpochStart {
            event_id: new_event_id(),
            leader_id: author.leader_id.clone(),
            epoch: author.epoch,
            at: Utc::now(),
        });
        match appender.append_now(&record).await {
            Ok(seq) => {
                state.apply(seq, &record);
                let appender = Appender::new(ctx.js.clone(), &ctx.subjects, seq);
                let budget = shoal_protocol::size::budget(ctx.client.server_info().max_payload);
                let notifier = Notifier {
                    client: ctx.client.clone(),
                    subjects: ctx.subjects.clone(),
                };
                let pipeline = Pipeline::new(appender, notifier, budget);
                return Ok(Ok((author, state, pipeline)));
            }
            Err(e) if e.is_fenced() => {
                warn!(refusals = refusals + 1, error = %e, "epoch-start append refused, catching up")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Err(NotStarted::Fenced))
}

/// Shortest wait before placing waiting agents again after the balancer could not.
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(25);

/// The term's decision state; only the decision loop touches it.
pub(crate) struct Leader {
    /// Where selections running outside the loop send their results.
    pub(crate) loopback: mpsc::Sender<LeaderCommand>,
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
}

impl Leader {
    async fn handle(&mut self, command: LeaderCommand) {
        if !self.ctx.lease.is_leader() {
            return command.refuse();
        }
        match command {
            LeaderCommand::Assign(req, tx) => self.assign(req, tx).await,
            LeaderCommand::Unassign(agent, tx) => self.unassign(&agent, tx),
            LeaderCommand::Move(req, tx) => self.move_agent(req, tx).await,
            LeaderCommand::Promote(target, tx) => {
                let _ = tx.send(self.promote(&target).await);
            }
            LeaderCommand::Placed(placement) => self.placed(*placement),
            LeaderCommand::SlotFreed => self.reconcile().await,
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
                let _ = loopback.send(LeaderCommand::SlotFreed).await;
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
