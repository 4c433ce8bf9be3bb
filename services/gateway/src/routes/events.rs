//! `/api/cluster/events`: Server-Sent Events from the control plane's event
//! subjects — `registry` (node events), `coordinator` (assignment events) and
//! `leader` (leader changes) — each `data:` the event's JSON as published on NATS.
//! The NATS subscriptions are made before the response starts, and dropped with
//! the stream when the client goes; the stream ends when the gateway stops.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::Method;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use shoal_protocol::ShoalError;

use super::spec::Route;
use crate::{ApiError, AppState};

/// A comment line this often keeps proxies and clients from timing the stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/api/cluster/events",
            events,
            "events",
            "Live control-plane events (Server-Sent Events)",
        )
        .text(
            "text/event-stream",
            "Server-Sent Events. `event:` is `registry` (a NodeEvent: a node joined, \
             changed status, left or was pruned), `coordinator` (an AssignmentEvent: an \
             agent was assigned, unassigned, orphaned, reassigned or migrated) or \
             `leader` (a LeaderChanged); `data:` is the event's JSON as published on \
             NATS. A comment line every 15 s keeps the stream alive.",
        ),
    ]
}

async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let subjects = state.client.subjects();
    let feeds = [
        ("registry", subjects.registry_events_all()),
        ("coordinator", subjects.coordinator_events_all()),
        ("leader", subjects.coordinator_leader_changed()),
    ];
    let nats = state.client.nats();
    let mut streams = Vec::with_capacity(feeds.len());
    for (kind, subject) in feeds {
        let subscriber = nats
            .subscribe(subject.clone())
            .await
            .map_err(|e| ShoalError::unavailable(format!("cannot subscribe to {subject}: {e}")))?;
        streams.push(subscriber.map(move |message| {
            let data = String::from_utf8_lossy(&message.payload).into_owned();
            Ok(Event::default().event(kind).data(data))
        }));
    }
    // The subscriptions reach the server before the client hears the stream has
    // begun: an event published after that is not missed.
    nats.flush()
        .await
        .map_err(|e| ShoalError::unavailable(format!("cannot subscribe to events: {e}")))?;
    let until_shutdown = state.shutdown.clone().cancelled_owned();
    Ok(
        Sse::new(futures::stream::select_all(streams).take_until(until_shutdown))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    )
}
