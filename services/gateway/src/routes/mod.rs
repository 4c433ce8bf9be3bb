//! The route table: `/api/cluster/...`.

mod nodes;

use axum::Router;
use axum::routing::get;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/cluster/nodes", get(nodes::list))
}
