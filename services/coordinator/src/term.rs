//! A replica's terms: each time it holds the lease, rebuild the state from the log,
//! append an epoch-start record (the term is one past the log's last), serve the
//! write endpoints and follow the nodes, run [`Leader`]'s decision loop, and stop at
//! once when the lease is lost or an append is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use shoal_protocol::Endpoint;
use shoal_runtime::JetStreamError;
use shoal_runtime::retry::until_ok;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::append::{AppendError, Appender};
use crate::context::Ctx;
use crate::leader::Leader;
use crate::lease::Held;
use crate::node_watch;
use crate::notifier::Notifier;
use crate::pipeline::Pipeline;
use crate::record::{EpochStart, LogRecord, new_event_id};
use crate::state::{Author, State};

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
    ctx.metrics.takeovers.inc();
    info!(
        epoch = author.epoch,
        assignments = state.len(),
        waiting = state.waiting_count(),
        log_seq = state.last_seq(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "leading: state rebuilt, serving writes"
    );
    let (writes_tx, mut writes) = mpsc::channel(4096);
    let (node_tx, mut nodes) = mpsc::channel(node_watch::QUEUE);
    // The write endpoints outlive the term by the handover (below); the term's
    // helpers stop with it.
    let stop_endpoints = CancellationToken::new();
    let stop_helpers = term.child_token();
    let term_tasks = TaskTracker::new();
    crate::handlers::serve_writes(ctx, &writes_tx, &stop_endpoints, &term_tasks).await;
    drop(writes_tx);
    // The subscriptions are at the server before the term is announced: a leader
    // handing over waits for the announcement before it lets go of the subjects.
    // The round trip goes through this replica's own `leader.get`, a subject it
    // may publish to under per-service permissions.
    let own = ctx.subjects.direct(Endpoint::CoordinatorLeaderGet, &ctx.me);
    if !shoal_runtime::round_trip(&ctx.client, own, ctx.cfg.jetstream_timeout).await {
        warn!("the server did not confirm the write subscriptions in time");
    }
    ctx.lease.started_term(author.epoch).await;
    if let Err(e) = node_watch::spawn(
        ctx.client.clone(),
        ctx.subjects.clone(),
        node_tx,
        stop_helpers.clone(),
        &term_tasks,
    )
    .await
    {
        warn!(error = %e, "cannot follow node announces and heartbeats: nodes are not synced this term")
    }
    if ctx.compaction {
        term_tasks.spawn(crate::compaction::run(
            ctx.clone(),
            ctx.snapshots.clone(),
            stop_helpers.clone(),
        ));
    }
    let mut leader = Leader::new(ctx, author, state, pipeline);
    let fenced = leader
        .decide(&mut writes, &mut nodes, &term, shutdown)
        .await;
    stop_helpers.cancel();
    // From now on every write request is refused (`not_leader`): those queued
    // here, and those the endpoints still take, by the closed channel.
    writes.close();
    while let Ok(request) = writes.try_recv() {
        request.refuse();
    }
    let epoch = leader.author.epoch;
    leader.finish().await;
    wait_for_successor(ctx).await;
    stop_endpoints.cancel();
    term_tasks.close();
    term_tasks.wait().await;
    info!(epoch, fenced, "term ended");
    fenced
}

/// How long an ending term keeps refusing writes while waiting for the next leader
/// to serve them.
const HANDOVER_PATIENCE: Duration = Duration::from_secs(1);

/// Returns once another replica leads and serves the write subjects, or after
/// [`HANDOVER_PATIENCE`]: only then does an ending term let go of them, since a
/// request the server still routes here while this replica unsubscribes is lost
/// unless another subscriber has it.
async fn wait_for_successor(ctx: &Ctx) {
    let mut view = ctx.lease.subscribe();
    let succeeded = tokio::time::timeout(HANDOVER_PATIENCE, async {
        view.wait_for(|v| v.succeeded_by_other(&ctx.me))
            .await
            .is_ok()
    })
    .await;
    if succeeded != Ok(true) {
        debug!("no other leader serving yet: letting go of the write subjects anyway");
    }
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
    match until_ok(term, "starting the term", || begin(ctx, term)).await {
        Some(Ok(started)) => Ok(started),
        Some(Err(fenced)) => Err(fenced),
        None => Err(NotStarted::LeaseLost),
    }
}

/// One try at starting a term. A refused epoch-start append (a deposed leader's
/// append landed in between) is retried at once from the log's new end, up to
/// [`MAX_REFUSALS`] times; refused that often, this replica is fenced.
async fn begin(
    ctx: &Ctx,
    term: &CancellationToken,
) -> Result<Result<Begun, NotStarted>, StartError> {
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
        let appender_at =
            |seq| Appender::new(ctx.js.clone(), ctx.stream.clone(), &ctx.subjects, seq);
        let mut appender = appender_at(state.last_seq());
        let record = LogRecord::EpochStart(EpochStart {
            event_id: new_event_id(),
            leader_id: author.leader_id.clone(),
            epoch: author.epoch,
            at: Utc::now(),
        });
        match appender
            .append_now(&record, ctx.cfg.jetstream_timeout)
            .await
        {
            Ok(seq) => {
                state.apply(seq, &record);
                // From here the replica takes this term's records from the pipeline.
                let feeding = ctx.replica.lead();
                feeding.feed(seq, record.clone());
                let appender = appender_at(seq);
                let budget = shoal_protocol::size::budget(ctx.client.server_info().max_payload);
                let notifier = Notifier {
                    client: ctx.client.clone(),
                    subjects: ctx.subjects.clone(),
                    nats_errors: ctx.metrics.nats_errors.clone(),
                };
                let pipeline = Pipeline::new(
                    appender,
                    notifier,
                    feeding,
                    budget,
                    term.clone(),
                    ctx.cfg.jetstream_timeout,
                    ctx.metrics.clone(),
                );
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
