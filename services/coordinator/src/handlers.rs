//! The coordinator's endpoints. Reads (`assignments.get/list`, `leader.get`, `stats`,
//! `history`) are answered by every replica from its tail of the log; writes
//! (`assign`, `unassign`, `leader.promote`) are subscribed by the leader alone, for
//! the length of its term, and passed to the term's single decision loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::endpoint::Endpoint as ServiceEndpoint;
use futures::StreamExt;
use serde::Serialize;
use shoal_protocol::{
    AgentNameRequest, AssignRequest, Assignment, AssignmentList, ClusterStats, Empty, Endpoint,
    HistoryReply, HistoryRequest, LeaderReply, ListAssignmentsRequest, MoveRequest, PromoteReply,
    PromoteRequest, ShoalError, UnassignReply, decode, respond, size,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::context::Ctx;
use crate::error::Error;
use crate::guard::Guard;
use crate::leader::{LeaderCommand, not_leader};

/// Serves the read endpoints on this replica until `shutdown`.
pub async fn serve_reads(
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let mut tasks = Vec::new();
    macro_rules! read_endpoint {
        ($endpoint:expr, $handler:ident) => {{
            let requests =
                shoal_runtime::add_endpoint(&ctx.service, &ctx.subjects, $endpoint, &ctx.me)
                    .await?;
            tasks.push(spawn_serve(
                requests,
                shutdown.clone(),
                ctx.clone(),
                $handler,
            ));
        }};
    }
    read_endpoint!(Endpoint::CoordinatorAssignmentsGet, get);
    read_endpoint!(Endpoint::CoordinatorAssignmentsList, list);
    read_endpoint!(Endpoint::CoordinatorLeaderGet, leader);
    read_endpoint!(Endpoint::CoordinatorStats, stats);
    read_endpoint!(Endpoint::CoordinatorHistory, history);
    Ok(tasks)
}

fn spawn_serve<T, F, Fut>(
    requests: shoal_runtime::EndpointRequests,
    shutdown: CancellationToken,
    ctx: Arc<Ctx>,
    handler: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<Ctx>, async_nats::Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, ShoalError>> + Send,
    T: Serialize + Send,
{
    tokio::spawn(async move {
        shoal_runtime::serve(requests, shutdown, |m| handler(ctx.clone(), m)).await;
    })
}

async fn get(ctx: Arc<Ctx>, m: async_nats::Message) -> Result<Assignment, ShoalError> {
    let req: AgentNameRequest = decode(&m.payload)?;
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
    let history = store.query(&req).await?;
    Ok(HistoryReply {
        count: history.len(),
        history,
    })
}

/// Subscribes the write endpoints (shared and direct subjects) until `stop`.
pub async fn serve_writes(
    ctx: Arc<Ctx>,
    commands: mpsc::Sender<LeaderCommand>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for endpoint in [
        Endpoint::CoordinatorAssign,
        Endpoint::CoordinatorUnassign,
        Endpoint::CoordinatorMove,
        Endpoint::CoordinatorLeaderPromote,
    ] {
        let subjects = [
            (endpoint.name(), ctx.subjects.endpoint(endpoint)),
            (
                format!("{}-direct", endpoint.name()),
                ctx.subjects.direct(endpoint, &ctx.me),
            ),
        ];
        for (name, subject) in subjects {
            match ctx
                .service
                .endpoint_builder()
                .name(name)
                .add(subject.clone())
                .await
            {
                Ok(requests) => tasks.push(tokio::spawn(serve_write(
                    requests,
                    endpoint,
                    ctx.clone(),
                    commands.clone(),
                    stop.clone(),
                ))),
                Err(e) => warn!(subject, error = %e, "cannot subscribe a write endpoint"),
            }
        }
    }
    tasks
}

async fn serve_write(
    mut requests: ServiceEndpoint,
    endpoint: Endpoint,
    ctx: Arc<Ctx>,
    commands: mpsc::Sender<LeaderCommand>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            request = requests.next() => match request {
                // Each request in its own task: the leader pipelines the writes.
                Some(request) => drop(tokio::spawn(write(request, endpoint, ctx.clone(), commands.clone()))),
                None => return,
            },
        }
    }
    let _ = requests.stop().await;
    // Requests delivered before the unsubscribe: refuse them so their clients retry.
    while let Ok(Some(request)) =
        tokio::time::timeout(Duration::from_millis(100), requests.next()).await
    {
        let refused: Result<Empty, ShoalError> = Err(not_leader());
        let _ = respond(&request, refused).await;
    }
}

async fn write(
    request: async_nats::service::Request,
    endpoint: Endpoint,
    ctx: Arc<Ctx>,
    commands: mpsc::Sender<LeaderCommand>,
) {
    let payload = request.message.payload.clone();
    let sent = match endpoint {
        Endpoint::CoordinatorAssign => respond(&request, assign(&payload, &commands).await).await,
        Endpoint::CoordinatorUnassign => {
            respond(&request, unassign(&payload, &commands).await).await
        }
        Endpoint::CoordinatorMove => respond(&request, move_agent(&payload, &commands).await).await,
        Endpoint::CoordinatorLeaderPromote => {
            respond(&request, promote(&ctx, &payload, &commands).await).await
        }
        other => {
            let unknown: Result<Empty, ShoalError> = Err(ShoalError::internal(format!(
                "{} is not a write endpoint",
                other.suffix()
            )));
            respond(&request, unknown).await
        }
    };
    if let Err(e) = sent {
        warn!(subject = %request.message.subject, error = %e, "reply not sent");
    }
}

async fn ask<T>(
    commands: &mpsc::Sender<LeaderCommand>,
    make: impl FnOnce(oneshot::Sender<Result<T, ShoalError>>) -> LeaderCommand,
) -> Result<T, ShoalError> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.map_err(|_| not_leader())?;
    rx.await.map_err(|_| not_leader())?
}

async fn assign(
    payload: &[u8],
    commands: &mpsc::Sender<LeaderCommand>,
) -> Result<Assignment, ShoalError> {
    let req: AssignRequest = decode(payload)?;
    ask(commands, |tx| LeaderCommand::Assign(req, tx)).await
}

async fn move_agent(
    payload: &[u8],
    commands: &mpsc::Sender<LeaderCommand>,
) -> Result<Assignment, ShoalError> {
    let req: MoveRequest = decode(payload)?;
    ask(commands, |tx| LeaderCommand::Move(req, tx)).await
}

async fn unassign(
    payload: &[u8],
    commands: &mpsc::Sender<LeaderCommand>,
) -> Result<UnassignReply, ShoalError> {
    let req: AgentNameRequest = decode(payload)?;
    ask(commands, |tx| LeaderCommand::Unassign(req.agent_name, tx)).await
}

async fn promote(
    ctx: &Ctx,
    payload: &[u8],
    commands: &mpsc::Sender<LeaderCommand>,
) -> Result<PromoteReply, ShoalError> {
    let req: PromoteRequest = decode(payload)?;
    let target = req.coordinator_id;
    ask(commands, |tx| LeaderCommand::Promote(target.clone(), tx)).await?;
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
