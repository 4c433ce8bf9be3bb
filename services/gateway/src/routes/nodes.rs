//! `/api/cluster/nodes`: the registry's membership, registration by hand, and
//! heartbeats over HTTP.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use chrono::Utc;
use shoal_protocol::{
    Heartbeat, ListNodesRequest, Node, NodeChangeReply, NodeList, RegisterNodeRequest, ShoalError,
};

use super::spec::Route;
use crate::extract::{Body, PathId, Query};
use crate::types::{HeartbeatBody, Success};
use crate::{ApiError, AppState};

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/api/cluster/nodes",
            list,
            "listNodes",
            "List nodes, filtered by role, status, service or label",
        )
        .describe(
            "A page of nodes sorted by id; when more match, `next` is set: pass it as \
             `after` for the next page.",
        )
        .query::<ListNodesRequest>()
        .reply::<NodeList>(),
        Route::new(
            Method::POST,
            "/api/cluster/nodes",
            register,
            "registerNode",
            "Register a node by hand",
        )
        .describe(
            "Registers (or re-registers) a node that runs no announcer. It is judged \
             by its heartbeats (`POST /api/cluster/nodes/{id}`) once it sends them.",
        )
        .body::<RegisterNodeRequest>()
        .reply::<NodeChangeReply>(),
        Route::new(
            Method::GET,
            "/api/cluster/nodes/{id}",
            get,
            "getNode",
            "One node",
        )
        .reply::<Node>(),
        Route::new(
            Method::POST,
            "/api/cluster/nodes/{id}",
            heartbeat,
            "nodeHeartbeat",
            "Send a node's heartbeat",
        )
        .describe(
            "Publishes a heartbeat on the node's heartbeat subject, as its announcer \
             would. The node must be registered.",
        )
        .body::<HeartbeatBody>()
        .reply::<Success>(),
        Route::new(
            Method::DELETE,
            "/api/cluster/nodes/{id}",
            unregister,
            "unregisterNode",
            "Unregister a node",
        )
        .reply::<NodeChangeReply>(),
        Route::new(
            Method::POST,
            "/api/cluster/nodes/{id}/drain",
            drain,
            "drainNode",
            "Drain a node: its agents move off and it takes no new ones",
        )
        .reply::<Node>(),
        Route::new(
            Method::POST,
            "/api/cluster/nodes/{id}/undrain",
            undrain,
            "undrainNode",
            "Let a drained node take agents again",
        )
        .reply::<Node>(),
    ]
}

async fn list(
    State(state): State<AppState>,
    Query(filter): Query<ListNodesRequest>,
) -> Result<Json<NodeList>, ApiError> {
    Ok(Json(state.client.list_nodes(&filter).await?))
}

async fn register(
    State(state): State<AppState>,
    Body(request): Body<RegisterNodeRequest>,
) -> Result<Json<NodeChangeReply>, ApiError> {
    Ok(Json(state.client.register_node(&request).await?))
}

async fn get(State(state): State<AppState>, PathId(id): PathId) -> Result<Json<Node>, ApiError> {
    Ok(Json(state.client.get_node(&id).await?))
}

/// Fills what an HTTP heartbeat leaves out from the registry's record: the agents
/// it counts, and the time since the node registered as its uptime.
async fn heartbeat(
    State(state): State<AppState>,
    PathId(id): PathId,
    Body(body): Body<HeartbeatBody>,
) -> Result<Json<Success>, ApiError> {
    let node = state.client.get_node(&id).await?;
    let now = Utc::now();
    let uptime = (now - node.started_at).num_seconds().max(0).unsigned_abs();
    let heartbeat = Heartbeat {
        id,
        seq: state.heartbeat_seq.fetch_add(1, Ordering::Relaxed) + 1,
        cpu_usage: body.cpu_usage,
        memory_usage: body.memory_usage,
        disk_usage: body.disk_usage,
        load_average: body.load_average,
        active_agents: body.active_agents.unwrap_or(node.active_agents),
        uptime_s: body.uptime_s.unwrap_or(uptime),
        sent_at: now,
        agents_digest: None,
    };
    let nats = state.client.nats();
    shoal_announcer::wire::heartbeat(nats, state.client.subjects(), &heartbeat)
        .await
        .map_err(|e| ShoalError::unavailable(format!("the heartbeat was not sent: {e}")))?;
    nats.flush()
        .await
        .map_err(|e| ShoalError::unavailable(format!("the heartbeat was not sent: {e}")))?;
    Ok(Json(Success { success: true }))
}

async fn unregister(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<NodeChangeReply>, ApiError> {
    Ok(Json(state.client.unregister_node(&id).await?))
}

async fn drain(State(state): State<AppState>, PathId(id): PathId) -> Result<Json<Node>, ApiError> {
    Ok(Json(state.client.drain_node(&id).await?))
}

async fn undrain(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<Node>, ApiError> {
    Ok(Json(state.client.undrain_node(&id).await?))
}
