//! The physical limit of this machine in this run: raw NATS request/reply against an
//! echo responder, and JetStream publishes acknowledged by the server, at the same
//! load as the scenario. Every scenario figure is reported as a ratio to these.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use futures::StreamExt;

use crate::measure::{Limit, Load, Measurement, run};

/// Request/reply against a responder that echoes the payload, on its own connection.
pub async fn request_reply(
    nats_url: &str,
    load: Load,
    limit: Limit,
    payload: usize,
) -> anyhow::Result<Measurement> {
    let responder = crate::stack::connect(nats_url)
        .await
        .context("connecting the echo responder")?;
    let subject = format!("loadtest.echo.{}", uuid::Uuid::new_v4().simple());
    let mut sub = responder.subscribe(subject.clone()).await?;
    let echo = responder.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = echo.publish(reply, msg.payload).await;
            }
        }
    });
    responder.flush().await?;
    let client = crate::stack::connect(nats_url)
        .await
        .context("connecting the baseline client")?;
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let m = run("baseline: nats request/reply", load, limit, move |_| {
        let (client, subject, body) = (client.clone(), subject.clone(), body.clone());
        async move {
            client
                .request(subject, body)
                .await
                .map(|_| ())
                .map_err(|e| format!("{:?}", e.kind()).to_lowercase())
        }
    })
    .await;
    task.abort();
    Ok(m)
}

/// JetStream publishes to a file-backed stream, each awaited for its ack.
pub async fn jetstream_publish(
    nats_url: &str,
    load: Load,
    limit: Limit,
    payload: usize,
) -> anyhow::Result<Measurement> {
    let client = crate::stack::connect(nats_url)
        .await
        .context("connecting the baseline client")?;
    let js = jetstream::new(client);
    let name = format!("LOADTEST_{}", uuid::Uuid::new_v4().simple());
    let subject = format!("loadtest.js.{name}");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: jetstream::stream::StorageType::File,
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .context("creating the baseline stream")?;
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let publisher = js.clone();
    let m = run("baseline: jetstream publish", load, limit, move |_| {
        let (js, subject, body) = (publisher.clone(), subject.clone(), body.clone());
        async move {
            let ack = js
                .publish(subject, body)
                .await
                .map_err(|e| format!("publish: {e}"))?;
            ack.await.map(|_| ()).map_err(|e| format!("ack: {e}"))
        }
    })
    .await;
    let _ = js.delete_stream(&name).await;
    Ok(m)
}
