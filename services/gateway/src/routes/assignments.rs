//! `/api/cluster/assignments` and `/api/cluster/history`: the coordinator's
//! placements of agents, changing them, and the record of every change.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use shoal_protocol::{
    AssignRequest, Assignment, AssignmentList, HistoryReply, HistoryRequest,
    ListAssignmentsRequest, MoveRequest, UnassignReply,
};

use super::spec::Route;
use crate::extract::{Body, OptionalBody, PathId, Query};
use crate::types::{HistoryQuery, MoveBody, Placement};
use crate::{ApiError, AppState};

/// How long an assign waits for the history to record why the balancer chose.
const WHY_WAIT: Duration = Duration::from_secs(2);

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/api/cluster/assignments",
            list,
            "listAssignments",
            "List assignments, by node, status or group",
        )
        .describe(
            "A page of assignments sorted by agent name; when more match, `next` is \
             set: pass it as `after` for the next page.",
        )
        .query::<ListAssignmentsRequest>()
        .reply::<AssignmentList>(),
        Route::new(
            Method::POST,
            "/api/cluster/assignments",
            assign,
            "assignAgent",
            "Assign an agent to a node (the balancer's pick, or a pinned node)",
        )
        .describe(
            "Answers the placement and why that node (`candidates`). A request_id makes \
             retries safe; without one the gateway sets one for its own retries. A \
             `group` with `spread_by` (a node label key) spreads its agents evenly over \
             that label's values; with `anti_affinity` no two share a node; every later \
             move of the agent follows the same rules. 409: no node can take it (the \
             message says which rule left none), or the agent is placed elsewhere (move \
             it instead).",
        )
        .body::<AssignRequest>()
        .reply::<Placement>()
        .errors(&[StatusCode::NOT_FOUND, StatusCode::CONFLICT]),
        Route::new(
            Method::GET,
            "/api/cluster/assignments/{agent}",
            get,
            "getAssignment",
            "One agent's assignment",
        )
        .reply::<Assignment>(),
        Route::new(
            Method::DELETE,
            "/api/cluster/assignments/{agent}",
            unassign,
            "unassignAgent",
            "Remove an agent's assignment",
        )
        .reply::<UnassignReply>(),
        Route::new(
            Method::POST,
            "/api/cluster/assignments/{agent}/move",
            move_agent,
            "moveAgent",
            "Move a placed agent to a named node, or to the balancer's pick",
        )
        .optional_body::<MoveBody>()
        .reply::<Assignment>()
        .errors(&[StatusCode::CONFLICT]),
        Route::new(
            Method::GET,
            "/api/cluster/history",
            history,
            "history",
            "Assignment history, newest first, with why each node was chosen",
        )
        .query::<HistoryQuery>()
        .reply::<HistoryReply>(),
    ]
}

async fn list(
    State(state): State<AppState>,
    Query(filter): Query<ListAssignmentsRequest>,
) -> Result<Json<AssignmentList>, ApiError> {
    Ok(Json(state.client.list_assignments(&filter).await?))
}

async fn assign(
    State(state): State<AppState>,
    Body(request): Body<AssignRequest>,
) -> Result<Json<Placement>, ApiError> {
    let assignment = state.client.assign(&request).await?;
    let candidates = match request.node_id {
        // Pinned: the balancer did not choose.
        Some(_) => None,
        None => {
            state
                .client
                .placement_candidates(&assignment, WHY_WAIT)
                .await
        }
    };
    Ok(Json(Placement {
        assignment,
        candidates,
    }))
}

async fn get(
    State(state): State<AppState>,
    PathId(agent): PathId,
) -> Result<Json<Assignment>, ApiError> {
    Ok(Json(state.client.get_assignment(&agent).await?))
}

async fn unassign(
    State(state): State<AppState>,
    PathId(agent): PathId,
) -> Result<Json<UnassignReply>, ApiError> {
    Ok(Json(state.client.unassign(&agent).await?))
}

async fn move_agent(
    State(state): State<AppState>,
    PathId(agent): PathId,
    OptionalBody(body): OptionalBody<MoveBody>,
) -> Result<Json<Assignment>, ApiError> {
    let MoveBody {
        node_id,
        request_id,
    } = body.unwrap_or_default();
    let request = MoveRequest {
        agent_name: agent,
        node_id,
        request_id,
    };
    Ok(Json(state.client.move_agent(&request).await?))
}

async fn history(
    State(state): State<AppState>,
    Query(filter): Query<HistoryQuery>,
) -> Result<Json<HistoryReply>, ApiError> {
    Ok(Json(
        state.client.history(&HistoryRequest::from(filter)).await?,
    ))
}
