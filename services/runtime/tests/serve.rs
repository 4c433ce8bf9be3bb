//! The request loop over a real nats-server: replies are encoded once, errors reach
//! the client as the envelope with the NATS service error headers set, every
//! endpoint answers on both its shared and its per-instance subject, and an endpoint
//! served until stopped answers concurrently, then drains: every request the server
//! delivered gets a reply. A subscription is at the server once `round_trip` returns.

use std::time::Duration;

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use futures::StreamExt;
use serde_json::json;
use shoal_protocol::{
    ClientError, Endpoint, ErrorCode, NodeIdRequest, ServiceKind, ShoalClient, ShoalError,
    Subjects, decode,
};
use shoal_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

/// A registry-shaped service whose `nodes.get` knows one node, "n1".
/// Dropping the returned service unregisters it.
async fn start_test_service(
    client: &async_nats::Client,
    instance: &str,
) -> (async_nats::service::Service, CancellationToken) {
    let subjects = Subjects::default();
    let service = shoal_runtime::start_service(client, ServiceKind::Registry, instance)
        .await
        .unwrap();
    let requests =
        shoal_runtime::add_endpoint(&service, &subjects, Endpoint::RegistryNodesGet, instance)
            .await
            .unwrap();
    let shutdown = CancellationToken::new();
    let instance = instance.to_string();
    tokio::spawn(shoal_runtime::serve(
        requests,
        shutdown.clone(),
        move |message| {
            let instance = instance.clone();
            async move {
                let request: NodeIdRequest = decode(&message.payload)?;
                match request.id.as_str() {
                    "n1" => Ok(serde_json::json!({ "id": "n1", "answered_by": instance })),
                    other => Err(ShoalError::no_node(other)),
                }
            }
        },
    ));
    (service, shutdown)
}

#[tokio::test]
async fn error_envelope_reaches_the_client_with_service_error_headers() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let _shutdown = start_test_service(&client, "r1").await;
    let subject = Subjects::default().endpoint(Endpoint::RegistryNodesGet);

    // Malformed JSON: raw NATS view of the reply.
    let reply = client
        .request(subject.clone(), "{\"id\": ".into())
        .await
        .unwrap();
    let headers = reply.headers.clone().expect("error replies carry headers");
    assert_eq!(
        headers.get(NATS_SERVICE_ERROR_CODE).unwrap().as_str(),
        "400"
    );
    assert!(
        headers
            .get(NATS_SERVICE_ERROR)
            .unwrap()
            .as_str()
            .starts_with("malformed JSON")
    );
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );

    // Wrong type, through the shared client helper.
    let shoal = ShoalClient::new(client.clone(), Subjects::default());
    let err = shoal
        .call::<_, serde_json::Value>(Endpoint::RegistryNodesGet, &serde_json::json!({ "id": 7 }))
        .await
        .unwrap_err();
    match err {
        ClientError::Service(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("`id`"), "{}", e.message);
        }
        other => panic!("expected a service error, got {other:?}"),
    }

    // Not found is its own code; a good request gets the value.
    let err = shoal.get_node("n2").await.unwrap_err();
    assert_eq!(err.service_code(), Some(ErrorCode::NotFound));
    let ok: serde_json::Value = shoal
        .call(
            Endpoint::RegistryNodesGet,
            &serde_json::json!({ "id": "n1" }),
        )
        .await
        .unwrap();
    assert_eq!(ok["id"], "n1");
}

#[tokio::test]
async fn each_replica_answers_its_direct_subject() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let _a = start_test_service(&client, "ra").await;
    let _b = start_test_service(&client, "rb").await;
    let shoal = ShoalClient::new(client.clone(), Subjects::default());
    for instance in ["ra", "rb"] {
        let reply: serde_json::Value = shoal
            .call_direct(
                Endpoint::RegistryNodesGet,
                instance,
                &NodeIdRequest { id: "n1".into() },
            )
            .await
            .unwrap();
        assert_eq!(reply["answered_by"], instance);
    }
}

#[tokio::test]
async fn client_reports_no_responders_after_retrying() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let shoal =
        ShoalClient::new(client, Subjects::default()).with_retry_for(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = shoal.registry_stats().await.unwrap_err();
    assert!(matches!(err, ClientError::NoResponders { .. }), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "it retried before giving up"
    );
}

/// Serves `assign` for instance "c1" with `handler` until `stop`, on the returned
/// tracker's tasks.
async fn serve_assign_until<H, Fut>(
    client: &async_nats::Client,
    stop: &CancellationToken,
    handler: H,
) -> tokio_util::task::TaskTracker
where
    H: Fn(async_nats::Message) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<serde_json::Value, ShoalError>> + Send + 'static,
{
    let tasks = tokio_util::task::TaskTracker::new();
    shoal_runtime::DrainableEndpoints::new(client, &Subjects::default(), "c1", &tasks)
        .serve_until(
            Endpoint::CoordinatorAssign,
            stop,
            || ShoalError::not_leader("stopped"),
            handler,
        )
        .await
        .unwrap();
    tasks
}

async fn ends_once_stopped(tasks: tokio_util::task::TaskTracker) {
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the endpoint's task ends once stopped");
}

#[tokio::test]
async fn endpoints_served_until_stopped_answer_concurrently_then_unsubscribe() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let stop = CancellationToken::new();
    // Each request waits for another to arrive: served one at a time, neither would
    // ever be answered.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let tasks = serve_assign_until(&client, &stop, move |_| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            Ok(json!({ "ok": true }))
        }
    })
    .await;
    let shoal =
        ShoalClient::new(client.clone(), Subjects::default()).with_retry_for(Duration::ZERO);
    let empty = json!({});
    let ask = || shoal.call::<_, serde_json::Value>(Endpoint::CoordinatorAssign, &empty);
    let (a, b) = tokio::join!(ask(), ask());
    assert_eq!(a.unwrap()["ok"], true);
    assert_eq!(b.unwrap()["ok"], true);

    stop.cancel();
    ends_once_stopped(tasks).await;
    let err = ask().await.unwrap_err();
    assert!(matches!(err, ClientError::NoResponders { .. }), "{err:?}");
}

/// How the coordinator hands its write subjects over: the successor subscribes
/// first, then the old server stops. async-nats forgets a drained subscription
/// without waiting for the server, so a request routed to it in that instant is
/// answered only because the successor has it too.
#[tokio::test]
async fn stopping_under_load_with_a_successor_subscribed_leaves_no_request_unanswered() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let successor = nats.client().await.unwrap();
    let stop = CancellationToken::new();
    // The 300th request brings the successor up and then stops this endpoint: the
    // rest are on their way by then.
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stopper = stop.clone();
    let tasks = serve_assign_until(&client, &stop, move |_| {
        let last = handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 299;
        let (successor, stopper) = (successor.clone(), stopper.clone());
        async move {
            if last {
                take_over(&successor).await;
                stopper.cancel();
            }
            Ok(json!({ "by": "c1" }))
        }
    })
    .await;
    // Another connection sends, so requests are in flight on the server's side of
    // the serving connection when it stops.
    let shoal = ShoalClient::new(nats.client().await.unwrap(), Subjects::default())
        .with_retry_for(Duration::ZERO)
        .with_timeout(Duration::from_secs(3));
    // 64 clients asking back to back keep requests on the wire at every moment.
    let asks: Vec<_> = (0..64)
        .map(|_| {
            let shoal = shoal.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..20 {
                    outcomes.push(
                        shoal
                            .call::<_, serde_json::Value>(Endpoint::CoordinatorAssign, &json!({}))
                            .await,
                    );
                }
                outcomes
            })
        })
        .collect();
    let (mut served, mut by_successor, mut refused, mut unanswered) = (0, 0, 0, 0);
    for ask in asks {
        for outcome in ask.await.unwrap() {
            match outcome {
                Ok(reply) if reply["by"] == "c1" => served += 1,
                Ok(_) => by_successor += 1,
                Err(e) if e.service_code() == Some(ErrorCode::NotLeader) => refused += 1,
                Err(e) => {
                    eprintln!("{e}");
                    unanswered += 1
                }
            }
        }
    }
    println!(
        "{served} served, {refused} refused, {by_successor} by the successor, {unanswered} unanswered"
    );
    assert!(
        served >= 300 && by_successor > 0,
        "the stop came mid-stream"
    );
    assert_eq!(unanswered, 0, "requests went unanswered in the handover");
    ends_once_stopped(tasks).await;
}

/// Subscribes `client` to the assign subject, answering every request, and returns
/// once the server has the subscription.
async fn take_over(client: &async_nats::Client) {
    let mut requests = client
        .subscribe(Subjects::default().endpoint(Endpoint::CoordinatorAssign))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let answering = client.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let body = serde_json::to_vec(&json!({ "by": "successor" })).unwrap();
                let _ = answering.publish(reply, body.into()).await;
            }
        }
    });
}

/// A subscription is at the server once `round_trip` returns: another client's
/// request right after it finds the subscriber, every time (after `flush` alone,
/// some of these requests find no responders).
#[tokio::test]
async fn after_a_round_trip_other_clients_find_the_new_subscription() {
    let nats = NatsServer::start().await.unwrap();
    let server_side = nats.client().await.unwrap();
    let asker = nats.client().await.unwrap();
    for i in 0..300 {
        let subject = format!("round-trip.{i}");
        let mut sub = server_side.subscribe(subject.clone()).await.unwrap();
        let answering = server_side.clone();
        tokio::spawn(async move {
            if let Some(m) = sub.next().await
                && let Some(reply) = m.reply
            {
                let _ = answering.publish(reply, "here".into()).await;
            }
        });
        let nobody = "round-trip.nobody".to_string();
        assert!(shoal_runtime::round_trip(&server_side, nobody, Duration::from_secs(5)).await);
        let answer = asker.request(subject, "".into()).await;
        assert!(
            answer.is_ok(),
            "request {i} found no subscriber: {answer:?}"
        );
    }
}
