//! The coordinator's endpoints. Reads (`assignments.get/list`, `leader.get`, `stats`,
//! `history`, `rebalance.get`) are answered by every replica from its tail of the
//! log, and so is `rebalance.set` (it writes `shoal_config`); writes (`assign`,
//! `unassign`, `move`, `leader.promote`, `rebalance.now`) are subscribed by the leader
//! alone, for the length of its term, and passed to the term's single decision loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Message;
use bytes::Bytes;
use shoal_protocol::{
    AgentNameRequest, AssignRequest, Assignment, AssignmentList, ClusterStats, Empty, Endpoint,
    ErrorCode, HistoryReply, HistoryRequest, LeaderReply, ListAssignmentsRequest, MoveRequest,
    PromoteReply, PromoteRequest, RebalanceNowRequest, RebalanceReport, RebalanceSettings,
    RebalanceStatus, RebalanceUpdate, ShoalError, UnassignReply, UnassignRequest, decode, size,
};
use shoal_runtime::{DrainableEndpoints, Endpoints};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::commands::{WriteRequest, not_leader};
use crate::context::Ctx;
use crate::error::Error;
use crate::guard::Guard;
use crate::lease::LeaseHandle;
use crate::metrics::CoordinatorMetrics;
use crate::rebalance;

/// Serves the read endpoints on this replica, on `tasks`, until `shutdown`.
pub async fn serve_reads(
    ctx: &Arc<Ctx>,
    service: &async_nats::service::Service,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), Error> {
    let endpoints = Endpoints::new(service, &ctx.subjects, &ctx.me, tasks);
    endpoints
        .serve(
            Endpoint::CoordinatorAssignmentsGet,
            shutdown,
            with(ctx, get),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::CoordinatorAssignmentsList,
            shutdown,
            with(ctx, list),
        )
        .await?;
    endpoints
        .serve(Endpoint::CoordinatorLeaderGet, shutdown, with(ctx, leader))
        .await?;
    endpoints
        .serve(Endpoint::CoordinatorStats, shutdown, with(ctx, stats))
        .await?;
    endpoints
        .serve(Endpoint::CoordinatorHistory, shutdown, with(ctx, history))
        .await?;
    endpoints
        .serve(
            Endpoint::CoordinatorRebalanceGet,
            shutdown,
            with(ctx, rebalance_get),
        )
        .await?;
    endpoints
        .serve(
            Endpoint::CoordinatorRebalanceSet,
            shutdown,
            with(ctx, rebalance_set),
        )
        .await?;
    Ok(())
}

/// A handler given the coordinator's shared state.
fn with<H, Fut>(ctx: &Arc<Ctx>, handler: H) -> impl Fn(Message) -> Fut + Send + 'static
where
    H: Fn(Arc<Ctx>, Message) -> Fut + Send + 'static,
{
    let ctx = ctx.clone();
    move |m| handler(ctx.clone(), m)
}

/// Reads see every write acknowledged before they arrived: the replica first
/// catches up with the log's end (bounded by `--jetstream-timeout`).
async fn catch_up(ctx: &Ctx) {
    if !ctx
        .replica
        .caught_up(&ctx.stream, ctx.cfg.jetstream_timeout)
        .await
    {
        debug!("answering a read from a replica that may trail the log");
    }
}

async fn get(ctx: Arc<Ctx>, m: async_nats::Message) -> Result<Assignment, ShoalError> {
    let req: AgentNameRequest = decode(&m.payload)?;
    catch_up(&ctx).await;
    ctx.replica
        .read(|s| s.get(&req.agent_name).cloned())
        .ok_or_else(|| {
            ShoalError::not_found(format!("agent {:?} has no assignment", req.agent_name))
        })
}

/// A page of the assignments matching the filter: as many as `limit` asks and one
/// NATS message carries; `next` says where the next page starts.
async fn list(ctx: Arc<Ctx>, m: async_nats::Message) -> Result<AssignmentList, ShoalError> {
    let req: ListAssignmentsRequest = decode(&m.payload)?;
    catch_up(&ctx).await;
    let (mut assignments, mut next) = ctx.replica.read(|s| s.page(&req));
    let budget = size::budget(ctx.client.server_info().max_payload);
    size::fit_page(&mut assignments, &mut next, budget, |a| {
        a.agent_name.clone()
    })?;
    Ok(AssignmentList {
        count: assignments.len(),
        assignments,
        next,
    })
}

async fn leader(ctx: Arc<Ctx>, m: async_nats::Message) -> Result<LeaderReply, ShoalError> {
    let _: Empty = decode(&m.payload)?;
    let view = ctx.lease.view();
    Ok(LeaderReply {
        is_leader: view.is_leader(),
        leader: view.leader,
        coordinator_id: ctx.me.clone(),
    })
}

async fn stats(ctx: Arc<Ctx>, m: async_nats::Message) -> Result<ClusterStats, ShoalError> {
    let _: Empty = decode(&m.payload)?;
    let quick = ctx.peers.clone().with_retry_for(Duration::ZERO);
    let (registry, balancer) = tokio::join!(quick.registry_stats(), quick.balancer_stats());
    let view = ctx.lease.view();
    let (offline, total) = ctx.members.read(|m| m.offline_share());
    let (total_assignments, reassignments, agents_by_status, log_seq) = ctx.replica.read(|s| {
        (
            s.len(),
            s.reassignments(),
            s.count_by_status(),
            s.last_seq(),
        )
    });
    let waiting_agents = agents_by_status
        .iter()
        .filter(|(status, _)| status.is_waiting())
        .map(|(_, n)| n)
        .sum();
    Ok(ClusterStats {
        local_node: ctx.me.clone(),
        is_leader: view.is_leader(),
        leader: view.leader,
        total_assignments,
        registry: registry.ok(),
        balancer: balancer.ok(),
        reassignments_paused: Guard::is_mass_failure(ctx.cfg.mass_failure_share, offline, total),
        reassignments,
        agents_by_status,
        waiting_agents,
        log_seq,
    })
}

async fn history(ctx: Arc<Ctx>, m: async_nats::Message) -> Result<HistoryReply, ShoalError> {
    let req: HistoryRequest = decode(&m.payload)?;
    let store = ctx.history.as_ref().ok_or_else(|| {
        ShoalError::unavailable("this coordinator has no --database-url: history is not kept")
    })?;
    store.page(&req).await
}

async fn rebalance_get(ctx: Arc<Ctx>, m: Message) -> Result<RebalanceStatus, ShoalError> {
    let _: Empty = decode(&m.payload)?;
    catch_up(&ctx).await;
    Ok(rebalance_status(&ctx, ctx.rebalance.current()))
}

/// Any replica stores the settings; every replica's watch then carries them to
/// the leader.
async fn rebalance_set(ctx: Arc<Ctx>, m: Message) -> Result<RebalanceStatus, ShoalError> {
    let update: RebalanceUpdate = decode(&m.payload)?;
    let settings = ctx.rebalance.update(&update).await?;
    catch_up(&ctx).await;
    Ok(rebalance_status(&ctx, settings))
}

fn rebalance_status(ctx: &Ctx, settings: RebalanceSettings) -> RebalanceStatus {
    ctx.members.read(|members| {
        let (offline, total) = members.offline_share();
        let paused = Guard::is_mass_failure(ctx.cfg.mass_failure_share, offline, total);
        ctx.replica
            .read(|state| rebalance::status(settings, state, members, paused))
    })
}

/// Serves the write endpoints on `tasks` until `stop` (the end of a term), each
/// request on its own task (the leader pipelines the writes), passed to the term's
/// decision loop through `commands`. Requests still arriving once the endpoints
/// stop are refused with `not_leader`, so their clients retry with the next leader.
pub async fn serve_writes(
    ctx: &Arc<Ctx>,
    commands: &mpsc::Sender<WriteRequest>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    let endpoints = DrainableEndpoints::new(&ctx.client, &ctx.subjects, &ctx.me, tasks);
    let leader = ToLeader {
        commands: commands.clone(),
        lease: ctx.lease.clone(),
        metrics: ctx.metrics.clone(),
    };
    let served = [
        endpoints
            .serve_until(
                Endpoint::CoordinatorAssign,
                stop,
                not_leader,
                to_leader(&leader, assign),
            )
            .await,
        endpoints
            .serve_until(
                Endpoint::CoordinatorUnassign,
                stop,
                not_leader,
                to_leader(&leader, unassign),
            )
            .await,
        endpoints
            .serve_until(
                Endpoint::CoordinatorMove,
                stop,
                not_leader,
                to_leader(&leader, move_agent),
            )
            .await,
        endpoints
            .serve_until(
                Endpoint::CoordinatorRebalanceNow,
                stop,
                not_leader,
                to_leader(&leader, rebalance_now),
            )
            .await,
        endpoints
            .serve_until(Endpoint::CoordinatorLeaderPromote, stop, not_leader, {
                let (ctx, leader) = (ctx.clone(), leader.clone());
                move |m: Message| promote(ctx.clone(), m.payload, leader.clone())
            })
            .await,
    ];
    for result in served {
        if let Err(e) = result {
            warn!(error = %e, "cannot serve a write endpoint");
        }
    }
}

/// The way from a write handler to the term's decision loop.
#[derive(Clone)]
struct ToLeader {
    commands: mpsc::Sender<WriteRequest>,
    lease: LeaseHandle,
    metrics: Arc<CoordinatorMetrics>,
}

impl ToLeader {
    /// Passes a request to the decision loop and returns its answer. A refusal
    /// read from the leader's state alone (`not_found`, `conflict`: nothing was
    /// appended, so the log did not fence it) is only given once the lease is
    /// confirmed: a leader frozen past a takeover still believes it leads, and its
    /// state misses its successor's changes. Unconfirmed, it is `not_leader`, and
    /// the client retries with the leader.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ShoalError>>) -> WriteRequest,
    ) -> Result<T, ShoalError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| not_leader())?;
        match rx.await.map_err(|_| not_leader())? {
            Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::Conflict) => {
                if self.lease.confirm().await {
                    Err(e)
                } else {
                    Err(not_leader())
                }
            }
            answer => answer,
        }
    }
}

/// A write handler given the way to the term's decision loop and the moment its
/// request arrived.
fn to_leader<H, Fut>(leader: &ToLeader, handler: H) -> impl Fn(Message) -> Fut + Send + 'static
where
    H: Fn(Bytes, ToLeader, Instant) -> Fut + Send + 'static,
{
    let leader = leader.clone();
    move |m| handler(m.payload, leader.clone(), Instant::now())
}

async fn assign(
    payload: Bytes,
    leader: ToLeader,
    arrived: Instant,
) -> Result<Assignment, ShoalError> {
    let result = match decode::<AssignRequest>(&payload) {
        Ok(req) => leader.ask(|tx| WriteRequest::Assign(req, tx)).await,
        Err(e) => Err(e),
    };
    leader.metrics.assigned(arrived, &result);
    result
}

async fn move_agent(
    payload: Bytes,
    leader: ToLeader,
    _: Instant,
) -> Result<Assignment, ShoalError> {
    let result = match decode::<MoveRequest>(&payload) {
        Ok(req) => leader.ask(|tx| WriteRequest::Move(req, tx)).await,
        Err(e) => Err(e),
    };
    leader.metrics.moves.count(&result);
    result
}

async fn unassign(
    payload: Bytes,
    leader: ToLeader,
    _: Instant,
) -> Result<UnassignReply, ShoalError> {
    let result = match decode::<UnassignRequest>(&payload) {
        Ok(req) => leader.ask(|tx| WriteRequest::Unassign(req, tx)).await,
        Err(e) => Err(e),
    };
    leader.metrics.unassigns.count(&result);
    result
}

async fn rebalance_now(
    payload: Bytes,
    leader: ToLeader,
    _: Instant,
) -> Result<RebalanceReport, ShoalError> {
    let req: RebalanceNowRequest = decode(&payload)?;
    leader
        .ask(|tx| WriteRequest::Rebalance(req.dry_run, tx))
        .await
}

async fn promote(
    ctx: Arc<Ctx>,
    payload: Bytes,
    leader: ToLeader,
) -> Result<PromoteReply, ShoalError> {
    let req: PromoteRequest = decode(&payload)?;
    let target = req.coordinator_id;
    leader
        .ask(|tx| WriteRequest::Promote(target.clone(), tx))
        .await?;
    let mut view = ctx.lease.subscribe();
    let deadline = ctx.cfg.lease_ttl + Duration::from_secs(1);
    let taken = tokio::time::timeout(
        deadline,
        view.wait_for(|v| {
            v.leader
                .as_ref()
                .is_some_and(|l| l.coordinator_id == target)
        }),
    )
    .await;
    match taken {
        Ok(Ok(v)) => Ok(PromoteReply {
            success: true,
            leader: v
                .leader
                .clone()
                .ok_or_else(|| ShoalError::internal("leader vanished"))?,
        }),
        _ => Err(ShoalError::unavailable(format!(
            "{target:?} did not take the leadership within {deadline:?}"
        ))),
    }
}
