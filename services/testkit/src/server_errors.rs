//! The server errors (`-ERR`, permission violations among them) a NATS connection is
//! told of. async-nats reports them only to the connection's event callback, as
//! `Event::ServerError`; a test that expects the server to refuse something keeps
//! them here and waits for the one it expects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use async_nats::{ConnectOptions, Event};

use crate::wait_for;

#[derive(Clone, Default)]
pub struct ServerErrors(Arc<Mutex<Vec<String>>>);

impl ServerErrors {
    /// `options` with an event callback that keeps the connection's server errors here.
    pub fn collect(&self, options: ConnectOptions) -> ConnectOptions {
        let sink = self.clone();
        options.event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let Event::ServerError(e) = event {
                    sink.0.lock().unwrap().push(e.to_string());
                }
            }
        })
    }

    /// Every server error so far, oldest first.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (10 s at most) for a server error containing `needle`; returns it.
    pub async fn wait_for(&self, needle: &str) -> Result<String> {
        wait_for(
            &format!("a server error containing {needle:?}"),
            Duration::from_secs(10),
            || {
                let found = self.all().into_iter().find(|e| e.contains(needle));
                async move { found }
            },
        )
        .await
    }
}
