//! `/api/cluster/health`: 200 while the control plane can serve, 503 when a service
//! has no live replica, there is no leader, or JetStream does not answer; the body
//! says which in `problems` either way.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};

use super::spec::Route;
use crate::AppState;
use crate::health::report::{Health, HealthStatus};

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/api/cluster/health",
            health,
            "health",
            "Health of the control plane",
        )
        .describe(
            "Every service's replicas (a replica seen before that stops answering is \
             `down`), the coordinator leader, JetStream and the history's lag. 503 when \
             a service has no live replica, there is no leader, or JetStream does not \
             answer; `problems` lists what is wrong.",
        )
        .reply::<Health>()
        .also::<Health>(StatusCode::SERVICE_UNAVAILABLE),
    ]
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = state.health.check().await;
    let status = match health.status {
        HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        HealthStatus::Healthy | HealthStatus::Degraded => StatusCode::OK,
    };
    (status, Json(health))
}
