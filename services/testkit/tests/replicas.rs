//! The replica helpers against a real nats-server, with three responder tasks
//! standing in for three replicas of a service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use serde_json::{Value, json};
use shoal_testkit::{NatsServer, request_all, request_json, request_random, wait_all_agree};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A replica answering `{"replica": i, "version": <shared version>, "echo": body}`,
/// except that replica 2 answers one version behind for its next `lagging`
/// answers.
async fn replica(
    client: async_nats::Client,
    i: usize,
    version: Arc<AtomicU64>,
    lagging: Arc<AtomicU64>,
) -> Result<()> {
    let mut sub = client.subscribe(format!("svc.{i}.get")).await?;
    client.flush().await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let body: Value = serde_json::from_slice(&msg.payload).unwrap_or(Value::Null);
            let mut v = version.load(Ordering::SeqCst);
            if i == 2
                && lagging
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                v -= 1;
            }
            let reply = if body["fail"] == json!(true) {
                json!({"error": {"code": "boom", "message": "asked to fail"}})
            } else {
                json!({"replica": i, "version": v, "echo": body})
            };
            if let Some(to) = msg.reply {
                let _ = client
                    .publish(to, serde_json::to_vec(&reply).unwrap().into())
                    .await;
            }
        }
    });
    Ok(())
}

#[tokio::test]
async fn replicas_are_asked_and_agreement_is_awaited() -> Result<()> {
    let server = NatsServer::start().await?;
    let version = Arc::new(AtomicU64::new(5));
    let lagging = Arc::new(AtomicU64::new(u64::MAX));
    for i in 0..3 {
        replica(server.client().await?, i, version.clone(), lagging.clone()).await?;
    }
    let client = server.client().await?;
    let subjects: Vec<String> = (0..3).map(|i| format!("svc.{i}.get")).collect();
    let body = json!({"q": 1});

    lagging.store(0, Ordering::SeqCst);
    let one = request_json(&client, &subjects[1], &body, TIMEOUT).await?;
    assert_eq!(one, json!({"replica": 1, "version": 5, "echo": {"q": 1}}));
    let (i, any) = request_random(&client, &subjects, &body, TIMEOUT).await?;
    assert_eq!(any["replica"], json!(i));
    let all = request_all(&client, &subjects, &body, TIMEOUT).await?;
    assert_eq!(
        all.iter()
            .map(|r| r["replica"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(
        request_json(&client, "svc.nobody", &body, TIMEOUT)
            .await
            .is_err()
    );

    lagging.store(u64::MAX, Ordering::SeqCst);
    let without_replica = |v: &Value| json!({"version": v["version"], "echo": v["echo"]});

    // Replica 2 lags for good: no agreement, and the error shows each replica's answer.
    let err = wait_all_agree(
        "replicas to agree",
        &client,
        &subjects,
        &body,
        Duration::from_millis(300),
        without_replica,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("replicas to agree")
            && err.contains("svc.2.get: {\"echo\":{\"q\":1},\"version\":4}"),
        "{err}"
    );

    // Error envelopes never count as agreement, even when all replicas send one.
    let failing = json!({"fail": true});
    let err = wait_all_agree(
        "errors",
        &client,
        &subjects,
        &failing,
        Duration::from_millis(200),
        |v: &Value| v.clone(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("error envelope"), "{err}");

    // Replica 2 catches up after three more answers: the wait keeps asking.
    lagging.store(3, Ordering::SeqCst);
    let agreed = wait_all_agree(
        "replicas to agree",
        &client,
        &subjects,
        &body,
        TIMEOUT,
        without_replica,
    )
    .await?;
    assert_eq!(agreed, json!({"version": 5, "echo": {"q": 1}}));
    assert_eq!(
        lagging.load(Ordering::SeqCst),
        0,
        "agreement came only after the lag was used up"
    );
    Ok(())
}
