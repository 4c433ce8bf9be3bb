//! A leader's term: rebuild the state from the log, append an epoch-start record,
//! serve the write endpoints, move agents off failed and draining nodes, and stop at
//! once when the lease is lost or an append is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use shoal_protocol::{
    AssignRequest, Assignment, ClientError, Empty, Endpoint, ErrorCode, LeaderReply, SelectRequest,
    ShoalError, UnassignReply,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::context::Ctx;
use crate::failover::plan_moves;
use crate::guard::Guard;
use crate::lease::Held;
use crate::log::Appender;
use crate::picker::{Pick, Picker};
use crate::pipeline::{Notifier, Pipeline, Reply};
use crate::record::{EpochStart, Explanation, LogRecord, new_event_id};
use crate::state::{Author, MoveKind, State};

/// Requests the write endpoints pass to the leader.
pub enum Command {
    Assign(
        AssignRequest,
        oneshot::Sender<Result<Assignment, ShoalError>>,
    ),
    Unassign(String, oneshot::Sender<Result<UnassignReply, ShoalError>>),
    /// Ok once the lease is marked as handed to the named replica.
    Promote(String, oneshot::Sender<Result<(), ShoalError>>),
    /// The balancer's answer for an assign, back in the decision loop.
    Placed(Box<Placement>),
}

/// An assign waiting on (or back from) the balancer. Selections run outside the
/// decision loop so that many are in flight at once; the loop alone checks the
/// result against its state and appends, so the log stays the one serial point.
pub struct Placement {
    req: AssignRequest,
    tx: oneshot::Sender<Result<Assignment, ShoalError>>,
    attempt: u32,
    exclude: Vec<String>,
    result: Result<Pick, ShoalError>,
}

/// How long a new term waits for its tail before restarting it.
const TAIL_PATIENCE: Duration = Duration::from_millis(300);

/// How many balancer picks an assign may try before giving up.
const MAX_PICKS: u32 = 4;

impl Command {
    fn refuse(self) {
        let e = || ShoalError::not_leader("this coordinator is no longer the leader: retry");
        match self {
            Command::Assign(_, tx) => drop(tx.send(Err(e()))),
            Command::Unassign(_, tx) => drop(tx.send(Err(e()))),
            Command::Promote(_, tx) => drop(tx.send(Err(e()))),
            Command::Placed(p) => drop(p.tx.send(Err(e()))),
        }
    }
}

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
    let author = Author {
        leader_id: ctx.me.clone(),
        epoch: held.epoch,
    };
    let started = Instant::now();
    let Some((state, pipeline)) = start(ctx, &author, &term).await else {
        return !term.is_cancelled();
    };
    info!(
        epoch = author.epoch,
        assignments = state.len(),
        log_seq = state.last_seq(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "leading: state rebuilt, serving writes"
    );
    let failed = pipeline.failed();
    let (tx, mut rx) = mpsc::channel(4096);
    let stop_endpoints = term.child_token();
    let endpoints =
        crate::handlers::serve_writes(ctx.clone(), tx.clone(), stop_endpoints.clone()).await;
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
        next_sweep: Instant::now(),
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
            _ = changes.changed() => leader.reconcile().await,
            _ = tokio::time::sleep_until(next_sweep) => leader.reconcile().await,
        }
    };
    stop_endpoints.cancel();
    for task in endpoints {
        let _ = task.await;
    }
    rx.close();
    while let Ok(command) = rx.try_recv() {
        command.refuse();
    }
    leader.pipeline.finish().await;
    info!(epoch = leader.author.epoch, fenced, "term ended");
    fenced
}

/// Rebuilds the state up to the log's end and appends the epoch-start record; a
/// deposed leader's append landing in between makes it retry from the new end.
async fn start(ctx: &Ctx, author: &Author, term: &CancellationToken) -> Option<(State, Pipeline)> {
    let notifier = Notifier {
        client: ctx.client.clone(),
        subjects: ctx.subjects.clone(),
    };
    for attempt in 1..=10u32 {
        if term.is_cancelled() {
            return None;
        }
        let last = match ctx.stream.get_info().await {
            Ok(info) => info.state.last_sequence,
            Err(e) => {
                warn!(attempt, error = %e, "cannot read the log's end");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A tail that is not there within a moment may be following a consumer
        // lost with a NATS server: start it again rather than wait for it.
        let caught_up = match ctx.replica.snapshot_at(last, TAIL_PATIENCE).await {
            Some(state) => Some(state),
            None => {
                ctx.replica.restart_tail();
                ctx.replica.snapshot_at(last, ctx.cfg.lease_ttl).await
            }
        };
        let Some(mut state) = caught_up else {
            warn!(attempt, last, "log tail did not catch up in time");
            continue;
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
                return Some((state, Pipeline::new(appender, notifier)));
            }
            Err(e) => warn!(attempt, error = %e, "epoch-start append refused, catching up"),
        }
    }
    None
}

struct Leader {
    /// Where selections running outside the loop send their results.
    loopback: mpsc::Sender<Command>,
    /// Batches the picks of concurrent assigns and moves into few requests.
    picker: Picker,
    ctx: Arc<Ctx>,
    author: Author,
    /// The state including changes sent but not yet acknowledged.
    state: State,
    pipeline: Pipeline,
    guard: Guard,
    next_sweep: Instant,
    grace_logged: bool,
}

impl Leader {
    async fn handle(&mut self, command: Command) {
        if !self.ctx.lease.is_leader() {
            return command.refuse();
        }
        match command {
            Command::Assign(req, tx) => self.assign(req, tx).await,
            Command::Unassign(agent, tx) => self.unassign(&agent, tx).await,
            Command::Promote(target, tx) => {
                let _ = tx.send(self.promote(&target).await);
            }
            Command::Placed(placement) => self.placed(*placement).await,
        }
    }

    async fn assign(
        &mut self,
        req: AssignRequest,
        tx: oneshot::Sender<Result<Assignment, ShoalError>>,
    ) {
        if let Some(existing) = self.state.existing(&req) {
            // Answer only once whatever produced it is in the log.
            return self.pipeline.after_pending(Reply::Assign(tx, existing));
        }
        match &req.node_id {
            Some(pin) => {
                let count = self.state.count_on(pin);
                let mut checked = self.ctx.members.read(|m| m.check_pin(pin, count));
                if checked
                    .as_ref()
                    .is_err_and(|e| e.code == ErrorCode::NotFound)
                    && self.ctx.members.fetch(pin).await
                {
                    checked = self.ctx.members.read(|m| m.check_pin(pin, count));
                }
                match checked {
                    Ok(()) => {
                        let pin = pin.clone();
                        self.commit_assign(req, tx, pin, "pinned", None).await
                    }
                    Err(e) => drop(tx.send(Err(e))),
                }
            }
            None => self.spawn_select(req, tx, 1, Vec::new()),
        }
    }

    /// Asks the balancer from a task of its own; the answer comes back as
    /// `Command::Placed`.
    fn spawn_select(
        &self,
        req: AssignRequest,
        tx: oneshot::Sender<Result<Assignment, ShoalError>>,
        attempt: u32,
        exclude: Vec<String>,
    ) {
        let (picker, loopback) = (self.picker.clone(), self.loopback.clone());
        tokio::spawn(async move {
            let request = SelectRequest {
                service: req.service.clone(),
                labels: req.labels.clone(),
                strategy: None,
                exclude: exclude.clone(),
                resources: req.resources,
            };
            let result = picker.pick(request).await;
            let placement = Placement {
                req,
                tx,
                attempt,
                exclude,
                result,
            };
            if let Err(mpsc::error::SendError(Command::Placed(p))) =
                loopback.send(Command::Placed(Box::new(placement))).await
            {
                let _ = p.tx.send(Err(ShoalError::not_leader(
                    "this coordinator is no longer the leader: retry",
                )));
            }
        });
    }

    /// Checks the balancer's pick against the state as it is now (another request
    /// may have placed the same agent, or filled the node, meanwhile).
    async fn placed(&mut self, p: Placement) {
        let Placement {
            req,
            tx,
            attempt,
            mut exclude,
            result,
        } = p;
        if let Some(existing) = self.state.existing(&req) {
            return self.pipeline.after_pending(Reply::Assign(tx, existing));
        }
        let pick = match result {
            Ok(pick) => pick,
            Err(e) => return drop(tx.send(Err(e))),
        };
        let count = self.state.count_on(&pick.node_id);
        if self.ctx.members.read(|m| m.refuses(&pick.node_id, count)) {
            if attempt >= MAX_PICKS {
                return drop(tx.send(Err(ShoalError::no_capacity(
                    "the balancer's picks are all full, offline or draining",
                ))));
            }
            exclude.push(pick.node_id);
            return self.spawn_select(req, tx, attempt + 1, exclude);
        }
        self.commit_assign(req, tx, pick.node_id, "balanced", Some(pick.why))
            .await
    }

    async fn commit_assign(
        &mut self,
        req: AssignRequest,
        tx: oneshot::Sender<Result<Assignment, ShoalError>>,
        node: String,
        reason: &str,
        candidates: Option<Explanation>,
    ) {
        let change =
            State::assign_change(&self.author, &req, &node, reason, candidates, Utc::now());
        self.state.apply_change(&change);
        match self.state.get(&req.agent_name).cloned() {
            Some(assignment) => self.pipeline.append(change, Reply::Assign(tx, assignment)),
            None => drop(tx.send(Err(ShoalError::internal("assignment vanished")))),
        }
    }

    async fn unassign(
        &mut self,
        agent: &str,
        tx: oneshot::Sender<Result<UnassignReply, ShoalError>>,
    ) {
        match self.state.unassign_change(&self.author, agent, Utc::now()) {
            Ok(change) => {
                self.state.apply_change(&change);
                let reply = UnassignReply {
                    success: true,
                    agent_name: agent.to_string(),
                    node_id: change.previous_node_id.clone().unwrap_or_default(),
                    epoch: change.epoch,
                };
                self.pipeline.append(change, Reply::Unassign(tx, reply));
            }
            Err(e) => drop(tx.send(Err(e))),
        }
    }

    async fn promote(&mut self, target: &str) -> Result<(), ShoalError> {
        if target == self.ctx.me {
            return Ok(());
        }
        let alive = self
            .ctx
            .peers
            .clone()
            .with_retry_for(Duration::ZERO)
            .call_direct::<_, LeaderReply>(Endpoint::CoordinatorLeaderGet, target, &Empty {})
            .await;
        match alive {
            Ok(_) => {}
            Err(ClientError::NoResponders { .. } | ClientError::Timeout { .. }) => {
                return Err(ShoalError::not_found(format!(
                    "no coordinator named {target:?} is answering"
                ))
                .with_details(json!({ "coordinator_id": target })));
            }
            Err(e) => return Err(ShoalError::unavailable(format!("asking {target:?}: {e}"))),
        }
        if !self.pipeline.idle().await {
            return Err(ShoalError::not_leader(
                "this coordinator lost the leadership",
            ));
        }
        self.ctx.lease.handoff(target).await
    }

    /// Moves agents off offline/gone nodes (orphans) and draining nodes.
    async fn reconcile(&mut self) {
        let now = Instant::now();
        self.next_sweep = now + self.ctx.cfg.sweep_interval;
        if !self.ctx.lease.is_leader() {
            return;
        }
        let (offline, total) = self.ctx.members.read(|m| m.offline_share());
        match self.guard.update_pause(offline, total) {
            Some(true) => warn!(offline, total, "mass failure: pausing reassignments"),
            Some(false) => info!(offline, total, "mass failure over: resuming reassignments"),
            None => {}
        }
        let judge_dead = !self.guard.in_grace(now);
        if let Some(end) = self.guard.grace_ends(now) {
            // A node that died during the grace is judged the moment it ends, not
            // up to a sweep interval later.
            self.next_sweep = self.next_sweep.min(end);
        }
        let moves = self
            .ctx
            .members
            .read(|m| plan_moves(&self.state, m, judge_dead));
        if !judge_dead && !self.grace_logged {
            info!(window = ?self.ctx.cfg.detection_window, "new term: judging no node dead for one detection window");
            self.grace_logged = true;
        }
        if moves.is_empty() || self.guard.paused() {
            return;
        }
        // Record orphans as such first (the balancer stops counting them on their
        // dead node), then ask the balancer for every move at once: one round trip
        // for the batch instead of one per agent.
        let mut todo = Vec::new();
        for mv in moves {
            if !self.ctx.lease.is_leader() {
                return;
            }
            if !self.guard.take(Instant::now()) {
                self.next_sweep = Instant::now() + Duration::from_millis(100);
                break;
            }
            let Some(current) = self.state.get(&mv.agent_name).cloned() else {
                continue;
            };
            if current.node_id != mv.from {
                continue;
            }
            if mv.kind == MoveKind::Orphan {
                let waiting = self.state.move_change(
                    &self.author,
                    &mv.agent_name,
                    None,
                    mv.kind,
                    None,
                    Utc::now(),
                );
                if let Some(waiting) = waiting {
                    self.state.apply_change(&waiting);
                    self.pipeline.append(waiting, Reply::None);
                }
            }
            todo.push((mv, current));
        }
        let requests = todo
            .iter()
            .map(|(mv, current)| SelectRequest {
                service: current.service.clone(),
                labels: current.labels.clone(),
                strategy: None,
                exclude: vec![mv.from.clone()],
                resources: current.resources,
            })
            .collect();
        let picks = self.picker.pick_all(requests).await;
        for ((mv, _), pick) in todo.into_iter().zip(picks) {
            if !self.ctx.lease.is_leader() {
                return;
            }
            let pick = match pick {
                Ok(pick) => pick,
                Err(e) => {
                    if e.code == ErrorCode::NoCapacity {
                        debug!(agent_name = %mv.agent_name, error = %e, "no node for agent yet");
                    } else {
                        warn!(agent_name = %mv.agent_name, from = %mv.from, error = %e, "cannot move agent yet");
                    }
                    self.next_sweep = Instant::now() + Duration::from_millis(500);
                    continue;
                }
            };
            let count = self.state.count_on(&pick.node_id);
            if self.ctx.members.read(|m| m.refuses(&pick.node_id, count)) {
                // Picked before the node filled up or went away: the next sweep asks again.
                self.next_sweep = Instant::now() + Duration::from_millis(100);
                continue;
            }
            let change = self.state.move_change(
                &self.author,
                &mv.agent_name,
                Some(&pick.node_id),
                mv.kind,
                Some(pick.why),
                Utc::now(),
            );
            if let Some(change) = change {
                info!(
                    agent_name = %change.agent_name,
                    from = %mv.from,
                    to = change.node_id.as_deref().unwrap_or("-"),
                    reason = %change.reason,
                    "moving agent"
                );
                self.state.apply_change(&change);
                self.pipeline.append(change, Reply::None);
            }
        }
    }
}
