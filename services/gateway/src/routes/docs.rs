//! `/api/openapi.json`: the OpenAPI 3.1 document of every route.

use axum::Json;
use axum::http::Method;
use serde_json::Value;

use super::spec::Route;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/api/openapi.json",
            document,
            "openapi",
            "This API's OpenAPI 3.1 document",
        )
        .reply::<Value>(),
    ]
}

async fn document() -> Json<&'static Value> {
    Json(crate::openapi::document())
}
