//! Following a KV bucket over a real nats-server: the current values, then `Loaded`,
//! then changes; an empty bucket is loaded at once; after a server restart the watch
//! resumes after the last revision handed over, with nothing repeated or skipped.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use shoal_runtime::kv::{BucketEvent, follow_bucket, open_or_create};
use shoal_testkit::NatsServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the callback saw: `(key, put?, revision)`, or `None` for `Loaded`.
type Seen = Option<(String, bool, u64)>;

fn follow(store: kv::Store, shutdown: CancellationToken) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        follow_bucket(&store, &shutdown, |event| {
            let seen = match event {
                BucketEvent::Entry(e) => {
                    Some((e.key.clone(), e.operation == kv::Operation::Put, e.revision))
                }
                BucketEvent::Loaded => None,
            };
            let _ = tx.send(seen);
        })
        .await;
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("the follower is running")
}

#[tokio::test]
async fn a_bucket_is_loaded_then_followed_across_a_server_restart() {
    let mut nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = jetstream::new(client.clone());
    let shutdown = CancellationToken::new();

    let empty = open_or_create(&js, "follow_empty", 1).await.unwrap();
    let mut rx = follow(empty, shutdown.clone());
    assert_eq!(
        next(&mut rx).await,
        None,
        "an empty bucket is loaded at once"
    );

    let store = open_or_create(&js, "follow_test", 1).await.unwrap();
    store.put("a", "1".into()).await.unwrap();
    store.put("b", "2".into()).await.unwrap();
    store.delete("a").await.unwrap();
    let mut rx = follow(store.clone(), shutdown.clone());
    // The last value of each key, in revision order, then Loaded.
    assert_eq!(next(&mut rx).await, Some(("b".into(), true, 2)));
    assert_eq!(next(&mut rx).await, Some(("a".into(), false, 3)));
    assert_eq!(next(&mut rx).await, None);
    store.put("c", "3".into()).await.unwrap();
    assert_eq!(next(&mut rx).await, Some(("c".into(), true, 4)));

    nats.restart().await.unwrap();
    let mut put = None;
    for _ in 0..100 {
        match store.put("d", "4".into()).await {
            Ok(revision) => {
                put = Some(revision);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let revision = put.expect("a put after the restart");
    assert_eq!(next(&mut rx).await, Some(("d".into(), true, revision)));
    shutdown.cancel();
    // Nothing was handed over twice.
    assert!(rx.try_recv().is_err());
}
