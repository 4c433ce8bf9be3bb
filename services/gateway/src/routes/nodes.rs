//! `/api/cluster/nodes`: the registry's membership.

use axum::Json;
use axum::extract::State;
use shoal_protocol::{ListNodesRequest, NodeList};

use crate::{ApiError, AppState};

/// `GET /api/cluster/nodes` → `{nodes, count}`.
pub async fn list(State(state): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    Ok(Json(
        state
            .client
            .list_nodes(&ListNodesRequest::default())
            .await?,
    ))
}
