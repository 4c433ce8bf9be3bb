//! `/api/cluster/stats`, `/api/cluster/leader` and `/api/cluster/balance`: the
//! cluster's statistics, its coordinator leader and its balancing strategy.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use shoal_protocol::{ClusterStats, PromoteRequest, ShoalError, StrategyMessage};

use super::spec::Route;
use crate::extract::{OptionalBody, Query};
use crate::types::{Leader, LeaderState, Promoted, StrategyChanged};
use crate::{ApiError, AppState};

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/api/cluster/stats",
            stats,
            "clusterStats",
            "Cluster statistics: assignments, the registry's and the balancer's",
        )
        .reply::<ClusterStats>(),
        Route::new(
            Method::GET,
            "/api/cluster/leader",
            leader,
            "getLeader",
            "The coordinator holding the leader lease",
        )
        .describe("503 (not_leader) while no coordinator holds the lease.")
        .reply::<LeaderState>(),
        Route::new(
            Method::POST,
            "/api/cluster/leader",
            promote,
            "promoteLeader",
            "Hand leadership to a named coordinator",
        )
        .describe(
            "With `{\"coordinator_id\": …}`, the current leader hands the lease to that \
             coordinator. Without a body, the current leader stays and is answered.",
        )
        .optional_body::<PromoteRequest>()
        .reply::<Promoted>()
        .errors(&[StatusCode::NOT_FOUND, StatusCode::CONFLICT]),
        Route::new(
            Method::GET,
            "/api/cluster/balance",
            strategy,
            "getStrategy",
            "The cluster's balancing strategy",
        )
        .reply::<StrategyMessage>(),
        Route::new(
            Method::POST,
            "/api/cluster/balance",
            set_strategy,
            "setStrategy",
            "Switch the balancing strategy (every balancer follows)",
        )
        .describe("`?strategy=` one of round_robin, least_loaded, least_agents, random, weighted.")
        .query::<StrategyMessage>()
        .reply::<StrategyChanged>(),
    ]
}

async fn stats(State(state): State<AppState>) -> Result<Json<ClusterStats>, ApiError> {
    Ok(Json(state.client.cluster_stats().await?))
}

async fn current_leader(state: &AppState) -> Result<Leader, ApiError> {
    let reply = state.client.leader().await?;
    let leader = reply.leader.ok_or_else(|| {
        ShoalError::not_leader("no coordinator holds the leader lease yet: retry shortly")
    })?;
    Ok(Leader::from(leader))
}

async fn leader(State(state): State<AppState>) -> Result<Json<LeaderState>, ApiError> {
    Ok(Json(LeaderState {
        leader: current_leader(&state).await?,
    }))
}

async fn promote(
    State(state): State<AppState>,
    OptionalBody(request): OptionalBody<PromoteRequest>,
) -> Result<Json<Promoted>, ApiError> {
    let (success, wanted, leader) = match request {
        Some(request) => {
            let reply = state.client.promote(&request.coordinator_id).await?;
            (
                reply.success,
                request.coordinator_id,
                Leader::from(reply.leader),
            )
        }
        None => {
            let leader = current_leader(&state).await?;
            (true, leader.coordinator_id.clone(), leader)
        }
    };
    Ok(Json(Promoted {
        success,
        is_leader: leader.coordinator_id == wanted,
        leader,
    }))
}

async fn strategy(State(state): State<AppState>) -> Result<Json<StrategyMessage>, ApiError> {
    Ok(Json(state.client.get_strategy().await?))
}

async fn set_strategy(
    State(state): State<AppState>,
    Query(request): Query<StrategyMessage>,
) -> Result<Json<StrategyChanged>, ApiError> {
    let reply = state.client.set_strategy(request.strategy).await?;
    Ok(Json(StrategyChanged {
        success: true,
        strategy: reply.strategy,
    }))
}
