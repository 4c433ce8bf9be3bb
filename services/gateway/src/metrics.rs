//! `GET /metrics`: the whole control plane's Prometheus metrics in one scrape.
//! Every registry, balancer and coordinator instance found through `$SRV.PING` is
//! asked for its own, and the answers are merged with `instance` and `service`
//! labels (`shoal_runtime::metrics::gather`); an instance found but not answering
//! shows as `shoal_up 0`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_protocol::ShoalError;
use shoal_runtime::metrics::{CONTENT_TYPE, GatherOptions, gather};

use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let client = &state.client;
    let gathered = gather(client.nats(), client.subjects(), &GatherOptions::default())
        .await
        .map_err(|e| ShoalError::unavailable(format!("gathering metrics: {e}")))?;
    let mut response = gathered.text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}
