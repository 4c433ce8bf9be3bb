//! The route table: every route the gateway serves, by area, each with its
//! documentation. [`router`] serves it and [`crate::openapi`] documents it.

mod assignments;
mod cluster;
mod docs;
mod events;
mod health;
mod nodes;
pub mod spec;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::AppState;
use crate::error::{method_not_allowed, unknown_route};
use spec::Route;

/// Every route, in the order the document lists them, with its area's tag.
pub fn table() -> Vec<Route> {
    let areas: [(&str, Vec<Route>); 6] = [
        ("nodes", nodes::routes()),
        ("assignments", assignments::routes()),
        ("cluster", cluster::routes()),
        ("health", health::routes()),
        ("events", events::routes()),
        ("meta", docs::routes()),
    ];
    areas
        .into_iter()
        .flat_map(|(tag, routes)| routes.into_iter().map(move |r| r.tag(tag)))
        .collect()
}

/// The table served, a body over [`shoal_protocol::MAX_PAYLOAD_BYTES`] answered
/// with a 413 envelope.
pub fn router() -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, route| {
            let path = route.path;
            router.route(path, route.into_handler())
        })
        .layer(DefaultBodyLimit::max(shoal_protocol::MAX_PAYLOAD_BYTES))
}

/// `router` (with whatever was merged into it: the dashboard, metrics) answering a path no route serves
/// with a 404 envelope and a method a path does not take with a 405 envelope.
pub fn with_fallbacks(router: Router<AppState>) -> Router<AppState> {
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
}
